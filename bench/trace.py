"""Op self times out of a TensorFlow profiler trace (`.xplane.pb`), without TensorBoard's
profile plugin, and oneDNN's executed primitives out of its verbose output, with the
convolutions' FLOP and memory rates: bench/profile_step.py's tables."""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Iterable


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


# oneDNN's verbose mode (ONEDNN_VERBOSE=profile_exec) prints one line per executed primitive:
# onednn_verbose,[timestamp,]v1,primitive,exec,cpu,KIND,IMPL,PROPAGATION,MEMORY DESCRIPTORS,
# ATTRIBUTES,ALGORITHM,PROBLEM,MILLISECONDS. The problem of a convolution reads like
# "g48mb64_ic48oc48_ih32oh32kh1sh1dh0ph0_iw32ow32kw1sw1dw0pw0" (g only where grouped).
_ELEMENT_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s8": 1, "u8": 1, "s32": 4, "f64": 8}


@dataclasses.dataclass
class PrimitiveRow:
    """One class of oneDNN primitive executions: `kind` (convolution, batch_normalization,
    reorder, ...), `propagation` (forward_training, backward_data, ...), `shape` (for
    convolutions: the kernel, "dw" for depthwise, the minibatch and the output's size)."""

    kind: str
    propagation: str
    shape: str
    milliseconds: float = 0.0
    calls: int = 0
    flop: float = 0.0  # multiply-adds × 2 (convolutions only)
    activation_bytes: float = 0.0  # the activations read and written (convolutions only)

    @property
    def gflops(self) -> float | None:
        return self.flop / self.milliseconds / 1e6 if self.flop and self.milliseconds else None

    @property
    def gbytes_per_s(self) -> float | None:
        if not self.activation_bytes or not self.milliseconds:
            return None
        return self.activation_bytes / self.milliseconds / 1e6


def convolution_cost(problem: str, descriptors: str) -> tuple[str, float, float]:
    """(shape class, FLOP, activation bytes) of one convolution of oneDNN's verbose problem
    string: FLOP = 2 · mb · (ic / g) · oc · oh · ow · kh · kw, the same for the forward pass and
    both gradients; bytes = the input's and the output's elements (read once, written once)
    at the source's element size."""
    dims = {key: int(value) for key, value in re.findall(r"([a-z]+)(\d+)", problem)}
    groups = dims.get("g", 1)
    mb, ic, oc = dims["mb"], dims["ic"], dims["oc"]
    ih, oh, kh = dims["ih"], dims["oh"], dims["kh"]
    iw, ow, kw = dims.get("iw", ih), dims.get("ow", oh), dims.get("kw", kh)
    flop = 2.0 * mb * (ic // groups) * oc * oh * ow * kh * kw
    dtype = re.search(r"src:([a-z0-9]+)", descriptors)
    size = _ELEMENT_BYTES.get(dtype.group(1) if dtype else "f32", 4)
    moved = float(size * mb * (ic * ih * iw + oc * oh * ow))
    kernel = "depthwise" if groups > 1 and groups == ic == oc else f"{kh}x{kw}"
    return f"{kernel} mb{mb} {oh}x{ow}", flop, moved


def onednn_primitive_times(lines: Iterable[str]) -> list[PrimitiveRow]:
    """oneDNN's executed primitives of ONEDNN_VERBOSE=profile_exec output `lines`, summed by
    (kind, propagation, shape class), slowest first; other lines are skipped."""
    rows: dict[tuple[str, str, str], PrimitiveRow] = {}
    for line in lines:
        if not line.startswith("onednn_verbose"):
            continue
        fields = line.rstrip().split(",")
        try:
            at = fields.index("exec")
        except ValueError:
            continue
        if at + 4 >= len(fields) or fields[at - 1] != "primitive":
            continue
        kind, propagation = fields[at + 2], fields[at + 4]
        try:
            milliseconds = float(fields[-1])
        except ValueError:
            continue
        shape, flop, moved = "", 0.0, 0.0
        if kind == "convolution":
            shape, flop, moved = convolution_cost(fields[-2], fields[at + 5])
        row = rows.setdefault((kind, propagation, shape), PrimitiveRow(kind, propagation, shape))
        row.milliseconds += milliseconds
        row.calls += 1
        row.flop += flop
        row.activation_bytes += moved
    return sorted(rows.values(), key=lambda row: -row.milliseconds)
