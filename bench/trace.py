"""Op self times out of a TensorFlow profiler trace (`.xplane.pb`), without TensorBoard's
profile plugin: bench/profile_step.py's table."""

from __future__ import annotations

import collections


def op_self_times(space) -> tuple[collections.Counter, collections.Counter, float]:
    """(self seconds per op type, calls per op type, wall seconds spanned) of the executor's
    op events (named 'name:Type') on the host planes of an XSpace (or the path of an
    `.xplane.pb`). An event's self time is its duration less that of the events nested in it
    on the same thread."""
    if isinstance(space, str):
        from tensorflow.tsl.profiler.protobuf import xplane_pb2

        with open(space, "rb") as f:
            space = xplane_pb2.XSpace.FromString(f.read())
    seconds: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    first, last = float("inf"), 0.0
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            base = line.timestamp_ns * 1e-9
            events = sorted(
                ((e.offset_ps, e.duration_ps, names.get(e.metadata_id, "")) for e in line.events),
                key=lambda e: (e[0], -e[1]),
            )
            stack: list[list] = []  # [end_ps, name, nested_ps, duration_ps]
            for start, duration, name in events:
                while stack and stack[-1][0] <= start:
                    _close(stack.pop(), seconds, calls)
                if stack:
                    stack[-1][2] += duration
                stack.append([start + duration, name, 0, duration])
                first = min(first, base + start * 1e-12)
                last = max(last, base + (start + duration) * 1e-12)
            while stack:
                _close(stack.pop(), seconds, calls)
    return seconds, calls, max(last - first, 0.0)


def _close(entry: list, seconds: collections.Counter, calls: collections.Counter) -> None:
    _, name, child_ps, duration = entry
    if ":" not in name or "::" in name:  # executor bookkeeping, function calls: not ops
        return
    kind = name.rsplit(":", 1)[1]
    seconds[kind] += max(duration - child_ps, 0) * 1e-12
    calls[kind] += 1
