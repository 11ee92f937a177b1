"""atom_tf.cpu: oneDNN turned on (when applied) where TensorFlow leaves it off (AVX2 without
AVX-512), a value the user set always kept, nothing changed once TensorFlow is imported; and
in a fresh process set before TensorFlow loads (a user's value kept); the numbers with and
without oneDNN agree within the stated tolerance."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from atom_tf import cpu
from tests.conftest import REPO

AVX2 = {"avx2": True, "avx512f": False, "amx_tile": False}
AVX512 = {"avx2": True, "avx512f": True, "amx_tile": False}


def test_features_come_from_the_cpuinfo_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n"
                    "flags\t\t: fpu sse2 avx avx2 fma\n")  # fmt: skip
    assert cpu.cpu_features(str(path)) == AVX2
    path.write_text("flags : avx2 avx512f amx_tile\n")
    assert cpu.describe_features(cpu.cpu_features(str(path))) == "AVX-512 and AMX"
    assert cpu.cpu_features(str(tmp_path / "missing")) is None


def test_avx2_without_avx512_turns_onednn_on_when_applied_and_says_so():
    environ: dict = {}
    told = cpu.choose_onednn(environ, AVX2, tensorflow_imported=False, machine="x86_64")
    assert (
        environ == {} and told.enabled is False and "TF_ENABLE_ONEDNN_OPTS=1 gives" in told.reason
    )
    choice = cpu.choose_onednn(environ, AVX2, tensorflow_imported=False, machine="x86_64",
                               apply=True)  # fmt: skip
    assert environ[cpu.VARIABLE] == "1" and choice.enabled
    assert "set by atom_tf" in choice.describe() and choice.describe().startswith("oneDNN on")
    # a subprocess inherits the variable with atom_tf's mark: still atom_tf's choice
    again = cpu.choose_onednn(dict(environ), AVX2, tensorflow_imported=False, machine="x86_64",
                              apply=True)  # fmt: skip
    assert again == choice


@pytest.mark.parametrize("value,enabled", [("0", False), ("1", True), ("false", False)])
def test_a_value_the_user_set_always_wins(value, enabled):
    environ = {cpu.VARIABLE: value}
    choice = cpu.choose_onednn(environ, AVX2, tensorflow_imported=False, machine="x86_64")
    assert environ == {cpu.VARIABLE: value} and choice.enabled is enabled
    assert f"{cpu.VARIABLE}={value} set by you" in choice.describe()


def test_nothing_changes_where_tensorflow_decides_or_already_decided():
    for features, machine, imported in ((AVX512, "x86_64", False), (AVX2, "aarch64", False),
                                        (None, "x86_64", False), (AVX2, "x86_64", True)):  # fmt: skip
        environ: dict = {}
        choice = cpu.choose_onednn(environ, features, tensorflow_imported=imported, machine=machine,
                                   apply=True)  # fmt: skip
        assert environ == {}, (features, machine, imported)
    assert "import atom_tf first" in choice.reason and choice.enabled is False


def probe(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in (cpu.VARIABLE, cpu.MARK)}
    if env_value is not None:
        env[cpu.VARIABLE] = env_value
    code = ("import os, atom_tf, atom_tf.cpu as c; "
            "print(os.environ.get(c.VARIABLE), c.onednn_state(), '|', c.numerics())")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_a_fresh_process_gets_the_choice_before_tensorflow_loads():
    features = cpu.cpu_features()
    fast_path_applies = (features is not None and features["avx2"] and not features["avx512f"]
                         and cpu.platform.machine().lower() in ("x86_64", "amd64"))  # fmt: skip
    chosen = probe(None)
    if fast_path_applies:  # set before TensorFlow loaded, and TensorFlow runs with it
        assert chosen.startswith("1 ") and f"oneDNN on ({cpu.AUTO_REASON})" in chosen
        assert chosen.endswith(f", CPU, oneDNN on (AVX2); atom_tf kernels {cpu.KERNELS}")
    else:
        assert chosen.startswith("None ")
    refused = probe("0")
    assert refused.startswith("0 ") and refused.endswith(
        f", oneDNN off; atom_tf kernels {cpu.KERNELS}"
    )
    assert "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0 set by you)" in refused


def numbers_with_onednn(run_dir: str, value: str) -> dict:
    env = {**{k: v for k, v in os.environ.items() if k not in (cpu.VARIABLE, cpu.MARK)},
           cpu.VARIABLE: value}  # fmt: skip
    result = subprocess.run([sys.executable, os.path.join(REPO, "tests", "numerics_job.py"), run_dir],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_train_step_and_an_attack_agree_with_and_without_onednn(tmp_path):
    """The stated tolerance (README, CPU speed): from the same weights and seeds, one ATOM step's
    loss within 1e-5 relative and its weights within 1e-4; scores within 1e-5 clean and 1e-4
    after PGD-10 (whose sign steps may turn where a gradient is near zero)."""
    from atom_tf.training.trainer import TrainConfig, train

    run_dir = str(tmp_path / "run")
    train(TrainConfig(method="ntom", dataset="digits", model="small_cnn", epochs=1,
                      num_candidates=512, num_selected=256, jit_compile=False, seed=3),
          run_dir, verbose=0)  # fmt: skip
    off, on = numbers_with_onednn(run_dir, "0"), numbers_with_onednn(run_dir, "1")
    assert ", oneDNN off;" in off["numerics"] and ", oneDNN on (" in on["numerics"]
    assert on["loss"] == pytest.approx(off["loss"], rel=1e-5)
    np.testing.assert_allclose(on["weights"], off["weights"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(on["clean_scores"], off["clean_scores"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(on["attacked_scores"], off["attacked_scores"], rtol=0, atol=1e-4)


def test_onednn_vector_width_follows_the_cpu_and_oneDNN_isa_cap(monkeypatch):
    """16 floats with AVX-512, 8 with AVX2 or where ONEDNN_MAX_CPU_ISA (or the older
    DNNL_MAX_CPU_ISA) caps oneDNN below AVX-512; the start line names the cap."""
    assert cpu.onednn_vector_floats(AVX512, {}) == 16
    assert cpu.onednn_vector_floats(AVX2, {}) == 8
    assert cpu.onednn_vector_floats(None, {}) == 8
    assert cpu.onednn_vector_floats(AVX512, {"ONEDNN_MAX_CPU_ISA": "avx2"}) == 8
    assert cpu.onednn_vector_floats(AVX512, {"DNNL_MAX_CPU_ISA": "AVX2_VNNI"}) == 8
    assert cpu.onednn_vector_floats(AVX512, {"ONEDNN_MAX_CPU_ISA": "ALL"}) == 16
    assert cpu.onednn_vector_floats(AVX512, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}) == 16
    assert cpu.onednn_isa_cap({"DNNL_MAX_CPU_ISA": "avx2"}) == ("DNNL_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert cpu.onednn_state().endswith(", ISA capped at AVX2 by ONEDNN_MAX_CPU_ISA")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert "capped" not in cpu.onednn_state()


def test_numerics_name_the_onednn_kernels_that_round_differently():
    """A cache made with AVX-512 kernels is not one made with AVX2 kernels (or under a cap or a
    bfloat16 math mode): the numerics key names them."""
    assert cpu.onednn_kernels(AVX512, {}) == "AVX-512"
    assert cpu.onednn_kernels(AVX2, {}) == "AVX2"
    assert cpu.onednn_kernels(AVX512, {"ONEDNN_MAX_CPU_ISA": "avx2"}) == "AVX2"
    assert cpu.onednn_kernels(AVX2, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}) == "AVX2"  # not there
    assert (
        cpu.onednn_kernels(AVX512, {"ONEDNN_DEFAULT_FPMATH_MODE": "bf16"}) == "AVX-512, fpmath BF16"
    )
    assert cpu.onednn_kernels(AVX512, {"ONEDNN_DEFAULT_FPMATH_MODE": "strict"}) == "AVX-512"
    assert cpu.onednn_kernels(None, {}) == "ISA unknown"
