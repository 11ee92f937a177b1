#!/usr/bin/env python
"""Training-step and mining benchmark; every ratio is measured within this one run.

Prints: the CPU's features (AVX2 / AVX-512 / AMX) and whether oneDNN is on (atom_tf turns it
on where TensorFlow leaves it off, atom_tf/cpu.py); the machine's float32 matmul rate; the ATOM step (64 in-distribution + 128 outliers,
PGD-5 on 64 of them) for DenseNet-BC-100 with and without XLA, in seconds, images/s and the
achieved fraction of the matmul rate; the PyTorch recipe (bench/pytorch_step.py) between two
timings of atom_tf's faster setting, and their ratio; the same step in mixed bfloat16 (XLA
off); the NTOM step; the mining scoring rate; the evaluation's
L∞ attack rate (PGD-40, one restart); the training feed's time per batch (tf.data, read
alone: the most it takes from the step it runs beside); and the extra
peak memory of mining N = 400,000 candidates (in a fresh subprocess).

FLOP convention (analytical, F = 2 × forward multiply-adds of one image): a training image
costs 3F (forward + backward), a PGD step 2F (forward + input gradient), and the attack
evaluates the clean input and the final iterate (2F more): ATOM = 64·(5·2F + 2F) + 192·3F.
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import atom_tf  # noqa: F401  (chooses oneDNN before TensorFlow is imported)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from atom_tf.models import build_model
from atom_tf.models.flops import forward_macs
from bench.timing import (
    feed_seconds_per_batch,
    linf_attack_rate,
    matmul_gflops,
    scoring_rate,
    train_step_seconds,
)

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "densenet_bc_100", "Architecture to time.")
flags.DEFINE_integer("steps", 3, "Timed steps per configuration (after one warm-up step).")
flags.DEFINE_integer("mining_candidates", 400_000, "N for the mining memory measurement.")
flags.DEFINE_integer("score_images", 2048, "Images scored to measure the mining rate.")
flags.DEFINE_bool("pytorch", True, "Time the PyTorch recipe of the ATOM step right after "
                  "(bench/pytorch_step.py; needs torch: pip install -e '.[bench]').")  # fmt: skip
flags.DEFINE_bool("bfloat16", True, "Also time the ATOM step (XLA off) with "
                  "--precision=mixed_bfloat16 (oneDNN runs bfloat16 on AMX tiles where the CPU "
                  "has them).")  # fmt: skip


MEMORY_CHILD = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, psutil
sys.path.insert(0, sys.argv[3])
from atom_tf.data import load_pool
from atom_tf.training.mining import OutlierMiner, make_ood_scorer
from atom_tf.models import build_model
n_candidates, path = int(sys.argv[1]), sys.argv[2]
model = build_model("small_cnn", 11)
score = make_ood_scorer(model, jit_compile=False)
score(np.zeros((1024, 32, 32, 3), np.uint8))
pool = load_pool("tiny_images_300k", path)
miner = OutlierMiner(pool, n_candidates, n_candidates // 4, quantile=0.125, seed=1)
base = psutil.Process().memory_info().rss
result = miner.mine(0, score)
# VmHWM: this address space's peak RSS (ru_maxrss would carry the parent's peak over exec)
peak = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
print(f"{(peak - base) / 2**30:.3f} {result.seconds:.1f} {len(result.images)}")
"""


def mining_memory(n_candidates: int) -> tuple[float, float, int]:
    """Extra peak RSS (GiB) of mining N candidates from a 300K-image pool file, measured in a
    fresh process so earlier peaks do not hide it."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pool.npy")
        pool = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.uint8, shape=(300_000, 32, 32, 3)
        )
        rng = np.random.default_rng(0)
        for start in range(0, 300_000, 50_000):
            pool[start : start + 50_000] = rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8)
        pool.flush()
        del pool
        repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD, str(n_candidates), path, repo],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
    return float(out[0]), float(out[1]), int(out[2])


def pytorch_step_seconds(steps: int) -> tuple[float, str] | None:
    """bench/pytorch_step.py's median step time and its line, in a fresh process (its own
    threads, no TensorFlow beside it); None when torch is not installed."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pytorch_step.py")
    line = subprocess.run([sys.executable, script, f"--steps={steps}"], capture_output=True,
                          text=True, check=True).stdout.strip().splitlines()[-1]  # fmt: skip
    return float(line.split(": ")[1].split(" s ")[0]), line


def main(argv):
    del argv
    from atom_tf.cpu import onednn_state

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores; "
          f"{onednn_state()}")  # fmt: skip
    gflops = matmul_gflops()
    print(f"matmul (2048², float32): {gflops:.1f} GFLOP/s")
    network = build_model(FLAGS.model, 11)
    f = 2 * forward_macs(network) / 1e9
    atom_gflop = 64 * (5 * 2 * f + 2 * f) + 192 * 3 * f
    ntom_gflop = 192 * 3 * f
    print(f"{FLAGS.model}: {f / 2 * 1e3:.1f}M multiply-adds per image forward; ATOM step {atom_gflop:.0f} GFLOP, "
          f"NTOM step {ntom_gflop:.0f} GFLOP")  # fmt: skip
    rows = []
    for method, jit, gf in (
        ("atom", True, atom_gflop),
        ("atom", False, atom_gflop),
        ("ntom", False, ntom_gflop),
        ("ntom", True, ntom_gflop),
    ):
        seconds = train_step_seconds(FLAGS.model, method, jit, FLAGS.steps)
        rows.append((method, jit, seconds))
        print(f"{method.upper()} step, XLA {'on ' if jit else 'off'}: {seconds:.2f} s, {192 / seconds:.1f} images/s, "
              f"{gf / seconds:.1f} GFLOP/s = {gf / seconds / gflops:.1%} of matmul", flush=True)  # fmt: skip
    atom_xla, atom_eager = rows[0][2], rows[1][2]
    print(
        f"ATOM step: XLA off / XLA on time ratio = {atom_eager / atom_xla:.2f} (> 1 means XLA is faster)"
    )
    same_model = FLAGS.model == "densenet_bc_100"  # the recipe's architecture
    reference = pytorch_step_seconds(FLAGS.steps) if FLAGS.pytorch and same_model else None
    if reference is None:
        why = (
            "torch not installed: pip install -e '.[bench]'"
            if same_model
            else "DenseNet-BC-100 only"
        )
        print(f"PyTorch recipe: not run ({why})")
    else:
        torch_seconds, line = reference
        # atom_tf's faster setting timed again right after PyTorch: the machine drifts between
        # runs, so the ratio takes the mean of the figures before and after
        faster_jit = atom_xla < atom_eager
        again = train_step_seconds(FLAGS.model, "atom", faster_jit, FLAGS.steps)
        best = (min(atom_xla, atom_eager) + again) / 2
        print(f"{line}\nATOM step again (XLA {'on' if faster_jit else 'off'}): {again:.2f} s\n"
              f"ATOM step: PyTorch / atom_tf time ratio = {torch_seconds / best:.2f} (atom_tf's "
              f"faster XLA setting, mean of before and after PyTorch; goal >= 3, > 1 means "
              f"atom_tf is faster)", flush=True)  # fmt: skip
    if FLAGS.bfloat16:
        bf16 = train_step_seconds(FLAGS.model, "atom", False, FLAGS.steps, "mixed_bfloat16")
        versus = "" if reference is None else (
            f"; PyTorch (float32) / atom_tf bfloat16 = {reference[0] / bf16:.2f}")  # fmt: skip
        print(f"ATOM step, XLA off, mixed_bfloat16: {bf16:.2f} s, {192 / bf16:.1f} images/s; "
              f"float32 / bfloat16 time ratio = {atom_eager / bf16:.2f}{versus}", flush=True)  # fmt: skip
    rate = scoring_rate(FLAGS.model, FLAGS.score_images, jit=False)
    print(f"mining scoring rate ({FLAGS.model}, inference): {rate:.0f} images/s "
          f"(N = 400,000 would take {400_000 / rate / 60:.1f} min)")  # fmt: skip
    attack = linf_attack_rate(FLAGS.model, jit=False, batch_size=64, batches=1)
    print(f"L-inf attack rate ({FLAGS.model}, PGD-40, batch 64, XLA off): {attack:.2f} images/s")
    feed = feed_seconds_per_batch()
    print(f"training feed (tf.data: 64 + 128 images, crop + flip), read alone: {feed * 1e3:.1f} ms "
          f"per batch = {feed / min(atom_xla, atom_eager):.2%} of the ATOM step it runs beside")  # fmt: skip
    extra, seconds, kept = mining_memory(FLAGS.mining_candidates)
    print(f"mining N = {FLAGS.mining_candidates:,} (n = {kept:,}) from a 300K-image pool file, small_cnn scorer: "
          f"extra peak memory {extra:.2f} GiB (target < 2 GB), {seconds:.0f} s")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
