"""The fast CPU path: oneDNN where TensorFlow leaves it off.

TensorFlow turns its oneDNN kernels on by default only on x86 CPUs with AVX-512-class
features; on AVX2-only CPUs (most AMD and many cloud machines) it runs its slower default
kernels, which made the DenseNet-BC-100 ATOM step 2.4x slower on a 2-core AVX2 machine
(`bench/train_step.py`). `choose_onednn(apply=True)` sets `TF_ENABLE_ONEDNN_OPTS=1` on such
CPUs before TensorFlow is imported (atom_tf does so when it is imported); a value the user
set always wins, and once TensorFlow is imported nothing can change. This module never
imports TensorFlow at import time.

oneDNN's kernels round differently from TensorFlow's own (scores differ by about 1e-7
relative), so a 95 %-TPR threshold computed with one and applied to scores computed with the
other can lose the image at the threshold. `numerics()` names what the numbers were computed
with; every cached threshold, fitted constant and score is keyed by it.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
MARK = "ATOM_TF_SET_ONEDNN"  # says the variable is atom_tf's own (inherited by subprocesses)
AUTO_REASON = "set by atom_tf: AVX2 without AVX-512, where TensorFlow leaves it off"
FEATURES = ("avx2", "avx512f", "amx_tile")  # the /proc/cpuinfo flags that decide


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> dict[str, bool] | None:
    """Which of FEATURES the CPU has (from /proc/cpuinfo's flags), or None where that cannot
    be read (not Linux)."""
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return {name: name in flags for name in FEATURES}


def describe_features(features: dict[str, bool] | None) -> str:
    """'AVX2, no AVX-512' style, for start lines and benchmarks."""
    if features is None:
        return f"{platform.machine() or 'unknown'} (features not readable)"
    if features["avx512f"]:
        return "AVX-512" + (" and AMX" if features["amx_tile"] else "")
    return "AVX2, no AVX-512" if features["avx2"] else "no AVX2"


# oneDNN's own cap on the instructions it uses (its documented variable; DNNL_ is the older
# name): values below AVX-512 make it run 8-float AVX2 vectors on an AVX-512 CPU.
ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")


def onednn_isa_cap(environ: dict | None = None) -> tuple[str, str] | None:
    """(variable, ISA) of the cap set for oneDNN, e.g. ('ONEDNN_MAX_CPU_ISA', 'AVX2'), or None
    where none is set (ALL counts as none)."""
    environ = os.environ if environ is None else environ
    for name in ISA_VARIABLES:
        value = environ.get(name, "").strip().upper()
        if value and value != "ALL":
            return name, value
    return None


def onednn_isa(features: dict[str, bool] | str | None = "read", environ: dict | None = None) -> str:
    """The vector ISA oneDNN's kernels run here: 'AVX-512' or 'AVX2' from the CPU's features
    (read from /proc/cpuinfo unless given), or the cap set where it is below them; 'below AVX2'
    or 'ISA unknown' (features not readable)."""
    features = cpu_features() if features == "read" else features
    cap = onednn_isa_cap(environ)
    if features is None:
        return cap[1] if cap else "ISA unknown"
    if features["avx512f"]:
        return cap[1] if cap else "AVX-512"  # a cap below what the CPU has is what runs
    if features["avx2"]:
        return cap[1] if cap and cap[1] in _BELOW_AVX512 else "AVX2"
    return "below AVX2"


def onednn_vector_floats(
    features: dict[str, bool] | str | None = "read", environ: dict | None = None
) -> int:
    """The float32 lanes of the vectors oneDNN's kernels use here: 16 with AVX-512 (or above),
    else 8. Its blocked memory layouts hold this many channels per block."""
    isa = onednn_isa(features, environ)
    return 16 if isa == "AVX-512" or isa.startswith(("AVX512", "AVX10")) else 8


@dataclasses.dataclass(frozen=True)
class OneDnnChoice:
    enabled: bool | None  # None: TensorFlow's own default, not known here
    reason: str

    def describe(self) -> str:
        state = {True: "on", False: "off", None: "TensorFlow's default"}[self.enabled]
        return f"oneDNN {state} ({self.reason})"


def choose_onednn(
    environ: dict | None = None,
    features: dict[str, bool] | str | None = "read",
    tensorflow_imported: bool | None = None,
    machine: str | None = None,
    apply: bool = False,
) -> OneDnnChoice:
    """Sets TF_ENABLE_ONEDNN_OPTS=1 in `environ` (default os.environ) on an x86 CPU with AVX2
    and no AVX-512 (`features`: read from /proc/cpuinfo unless given; None: unknown), unless
    the variable is set already or TensorFlow is already imported, and only with `apply`
    (else it says how); returns what holds and why."""
    environ = os.environ if environ is None else environ
    if tensorflow_imported is None:
        tensorflow_imported = "tensorflow" in sys.modules
    given = environ.get(VARIABLE)
    if given is not None:
        enabled = given.strip().lower() not in ("0", "false", "off", "")
        mine = environ.get(MARK) == given
        return OneDnnChoice(enabled, AUTO_REASON if mine else f"{VARIABLE}={given} set by you")
    features = cpu_features() if features == "read" else features  # None: not readable
    machine = (machine or platform.machine()).lower()
    on_x86 = machine in ("x86_64", "amd64", "i386", "i686")
    if features is None or not on_x86:
        return OneDnnChoice(None, f"{machine}: left to TensorFlow")
    if features["avx512f"]:
        return OneDnnChoice(True, "TensorFlow's default on AVX-512")
    if not features["avx2"]:
        return OneDnnChoice(None, "no AVX2: left to TensorFlow")
    if tensorflow_imported:
        return OneDnnChoice(False, "TensorFlow was imported before atom_tf: import atom_tf "
                            f"first, or set {VARIABLE}=1, for the faster kernels")  # fmt: skip
    if not apply:
        return OneDnnChoice(False, "TensorFlow's default without AVX-512; "
                            f"{VARIABLE}=1 gives faster kernels")  # fmt: skip
    environ[VARIABLE] = environ[MARK] = "1"
    return OneDnnChoice(True, AUTO_REASON)


# Raised whenever atom_tf computes the same number with other kernels at the same settings, so
# that nothing cached by the earlier kernels is reused. 2: inference-mode batch norm as oneDNN's
# fused depthwise convolution, offset and ReLU (atom_tf/models/layers.py; the last bit of a
# score can differ from the plain multiply-add's). 3: the attacks' input gradients carry an
# inference batch norm's scale in the next convolution's kernel (`input_gradients_only`; an
# attack's sign step can differ where a gradient entry rounds across zero).
KERNELS = 3


def onednn_enabled() -> bool:
    """Whether the TensorFlow now loaded runs oneDNN's kernels. Imports TensorFlow."""
    from tensorflow.python.util import _pywrap_util_port

    return _pywrap_util_port.IsMklEnabled()


def numerics() -> str:
    """What a number computed now depends on beyond its inputs: the TensorFlow version, the
    device kind, whether oneDNN's kernels are on and which (`onednn_kernels`), and atom_tf's own
    kernel choices ('TensorFlow 2.21.0, CPU, oneDNN on (AVX-512); atom_tf kernels 2'). Imports
    TensorFlow."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names = sorted({tf.config.experimental.get_device_details(g).get("device_name", "GPU")
                    for g in gpus})  # fmt: skip
    device = ", ".join(names) if names else "CPU"
    onednn = f"on ({onednn_kernels()})" if onednn_enabled() else "off"
    return f"TensorFlow {tf.__version__}, {device}, oneDNN {onednn}; atom_tf kernels {KERNELS}"


FPMATH_VARIABLE = "ONEDNN_DEFAULT_FPMATH_MODE"  # e.g. BF16: float32 convolutions on bfloat16


def onednn_kernels(
    features: dict[str, bool] | str | None = "read", environ: dict | None = None
) -> str:
    """Which of oneDNN's kernels run, as far as they round differently: the vector ISA ('AVX-512',
    'AVX2', or the cap set by ONEDNN_MAX_CPU_ISA) and a math mode set by
    ONEDNN_DEFAULT_FPMATH_MODE ('AVX2, fpmath BF16'). The same weights scored on an AVX2 and an
    AVX-512 machine (a run folder on shared storage, or copied) differ in the last bits, so a
    threshold or scores cached on one are not reused on the other."""
    environ = os.environ if environ is None else environ
    isa = onednn_isa(features, environ)
    fpmath = environ.get(FPMATH_VARIABLE, "").strip().upper()
    return f"{isa}, fpmath {fpmath}" if fpmath and fpmath != "STRICT" else isa


CHOICE: OneDnnChoice | None = None  # what choose_onednn found when atom_tf was imported


def onednn_state() -> str:
    """The CPU and the oneDNN choice, for start lines."""
    choice = CHOICE or choose_onednn()
    cap = onednn_isa_cap()
    capped = f", ISA capped at {cap[1]} by {cap[0]}" if cap else ""
    return f"CPU {describe_features(cpu_features())}, {choice.describe()}{capped}"
