"""bench/trace.py: op self times out of a profiler trace, on a hand-made one."""

import pytest
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from bench.trace import op_self_times

PS = 10**12  # picoseconds per second


def space_of(planes: dict[str, list[list[tuple[str, float, float]]]]) -> xplane_pb2.XSpace:
    """{plane name: [thread: [(event name, start s, duration s)]]} as an XSpace."""
    space = xplane_pb2.XSpace()
    for plane_name, threads in planes.items():
        plane = space.planes.add(name=plane_name)
        ids: dict[str, int] = {}
        for thread in threads:
            line = plane.lines.add(timestamp_ns=1_000)
            for name, start, duration in thread:
                if name not in ids:
                    ids[name] = len(ids) + 1
                    plane.event_metadata[ids[name]].name = name
                line.events.add(metadata_id=ids[name], offset_ps=int(start * PS),
                                duration_ps=int(duration * PS))  # fmt: skip
    return space


def test_self_time_excludes_nested_events_and_counts_ops_only():
    host = [
        [("ExecutorState::Process", 0, 8), ("net/conv:Conv2D", 0, 4), ("net/relu:Relu", 1, 1),
         ("net/conv_1:Conv2D", 5, 2)],
        [("grad/relu:Relu", 0, 1.5), ("Run", 0, 6)],
    ]  # fmt: skip
    device = [[("gpu/conv:Conv2D", 0, 100)]]
    seconds, calls, wall = op_self_times(space_of({"/host:CPU": host, "/device:GPU:0": device}))
    assert seconds["Conv2D"] == pytest.approx(3 + 2) and calls["Conv2D"] == 2
    assert seconds["Relu"] == pytest.approx(1 + 1.5) and calls["Relu"] == 2
    assert set(seconds) == {"Conv2D", "Relu"}  # bookkeeping events and other planes left out
    assert wall == pytest.approx(8)


def test_a_trace_file_is_read(tmp_path):
    path = tmp_path / "host.xplane.pb"
    path.write_bytes(space_of({"/host:CPU": [[("a:AddV2", 0, 0.5)]]}).SerializeToString())
    seconds, calls, _ = op_self_times(str(path))
    assert seconds == {"AddV2": pytest.approx(0.5)} and calls == {"AddV2": 1}
