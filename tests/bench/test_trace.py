"""bench/trace.py: op self times out of a profiler trace, and oneDNN's primitives out of its
verbose output, on hand-made ones."""

import pytest
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from bench.trace import onednn_primitive_times, op_self_times

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


def verbose(kind, impl, propagation, problem, ms, src="f32", timestamp=False):
    stamp = "1733000000.5," if timestamp else ""
    return (f"onednn_verbose,{stamp}v1,primitive,exec,cpu,{kind},{impl},{propagation},"
            f"src:{src}::blocked:acdb::f0 wei:f32:a:blocked:Acdb16a::f0 dst:{src}::blocked:acdb::f0,"
            f"attr-scratchpad:user,alg:convolution_direct,{problem},{ms}")  # fmt: skip


def test_onednn_primitives_sum_by_class_with_hand_computed_rates():
    conv3 = "mb64_ic48oc12_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1"
    depthwise = "g24mb64_ic24oc24_ih32oh32kh1sh1dh0ph0_iw32ow32kw1sw1dw0pw0"
    lines = [
        "onednn_verbose,v1,info,oneDNN v3.7.3 (commit N/A)",
        "onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,jit,forward_training,,,,"
        f"{conv3},0.5",
        verbose("convolution", "brg_conv_fwd:avx512_core", "forward_training", conv3, 6.0),
        verbose("convolution", "brg_conv_fwd:avx512_core", "forward_training", conv3, 4.0,
                timestamp=True),
        verbose("convolution", "brdgmm_dw:avx512_core", "forward_training", depthwise, 2.0),
        verbose("convolution", "brdgmm_dw:avx512_core", "forward_training", depthwise, 1.0,
                src="bf16"),
        verbose("reorder", "jit:uni", "undef", "12x48x3x3", 0.25),
        "@@atom_tf step end 12.5",
        "an unrelated line",
    ]  # fmt: skip
    rows = {(r.kind, r.propagation, r.shape): r for r in onednn_primitive_times(lines)}
    assert set(rows) == {
        ("convolution", "forward_training", "3x3 mb64 32x32"),
        ("convolution", "forward_training", "depthwise mb64 32x32"),
        ("reorder", "undef", ""),
    }
    conv = rows["convolution", "forward_training", "3x3 mb64 32x32"]
    assert conv.calls == 2 and conv.milliseconds == pytest.approx(10.0)
    # 2 · 64 · 48 · 12 · 32 · 32 · 9 = 679,477,248 FLOP per call, twice in 10 ms
    assert conv.gflops == pytest.approx(2 * 679_477_248 / 0.010 / 1e9)
    # 4 bytes · 64 · (48 + 12) · 32 · 32 = 15,728,640 bytes per call
    assert conv.gbytes_per_s == pytest.approx(2 * 15_728_640 / 0.010 / 1e9)
    dw = rows["convolution", "forward_training", "depthwise mb64 32x32"]
    # one multiply-add per element: 2 · 64 · 24 · 32 · 32 FLOP per call
    assert dw.gflops == pytest.approx(2 * 3_145_728 / 0.003 / 1e9)
    # 24 channels in and out, 4 bytes in float32 and 2 in bfloat16
    assert dw.gbytes_per_s == pytest.approx((12_582_912 + 6_291_456) / 0.003 / 1e9)
    reorder = rows["reorder", "undef", ""]
    assert reorder.calls == 1 and reorder.gflops is None and reorder.gbytes_per_s is None
    assert next(r.kind for r in onednn_primitive_times(lines)) == "convolution"  # slowest first
