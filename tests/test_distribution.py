"""tf.distribute from the command line: two replicas (logical CPUs) and two local workers
(TF_CONFIG on 127.0.0.1) train and evaluate as one device does; a job whose worker is killed
resumes and finishes as if uninterrupted; bad cluster settings fail in one line.

Every job is a subprocess (tests/distributed_job.py): devices must be set before TensorFlow
starts. "The same" means: the same mined windows every epoch (their digests) and final
weights within 1e-4 relative (‖Δw‖ / ‖w‖ over all weights; one device and N replicas sum
batch statistics and gradients in different orders, so bit equality is not expected). The
runs average their weights and re-estimate the average's batch-norm statistics, so those
steps are compared too.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from tests.conftest import REPO

JOB = [sys.executable, os.path.join(REPO, "tests", "distributed_job.py")]
TRAIN = ["--dataset=digits", "--model=strided_tiny", "--method=atom", "--epochs=3",
         "--lr_decay_epochs=2", "--learning_rate=0.01", "--in_batch=256", "--out_batch=64",
         "--num_candidates=1024", "--num_selected=512", "--jit_compile=false", "--deterministic",
         "--verbose=0", "--seed=3", "--ema_momentum=0.9", "--reestimate_bn_batches=2"]  # fmt: skip

pytestmark = pytest.mark.slow


def job(entry, cpus, args, env=None, **kw):
    return subprocess.Popen([*JOB, entry, str(cpus), *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # fmt: skip


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def weights(run_dir):
    values = {}

    def keep(name, item):  # returns None: visititems stops at the first other value
        if hasattr(item, "shape"):
            values[name] = np.asarray(item)

    with h5py.File(os.path.join(run_dir, "network.weights.h5")) as f:
        f.visititems(keep)
    return values


def windows(run_dir):
    """Each epoch's window digest, from history.jsonl (one line per completed epoch, across
    resumptions)."""
    with open(os.path.join(run_dir, "history.jsonl")) as f:
        return [json.loads(line)["mining/window_digest"] for line in f]


def relative_difference(a, b) -> float:
    """‖Δw‖ / ‖w‖ over all final weights of two run folders."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    flat_a = np.concatenate([wa[k].ravel() for k in sorted(wa)])
    flat_b = np.concatenate([wb[k].ravel() for k in sorted(wa)])
    return float(np.linalg.norm(flat_a - flat_b) / np.linalg.norm(flat_a))


def assert_same_training(a, b, tolerance=1e-4):
    assert windows(a) == windows(b) and len(windows(a)) == 3
    relative = relative_difference(a, b)
    assert relative < tolerance, relative


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def worker_envs(count):
    addresses = [f"127.0.0.1:{p}" for p in free_ports(count)]
    envs = []
    for index in range(count):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        )
        envs.append(env)
    return envs


def start_workers(run_dir, extra=()):
    args = [*TRAIN, "--distribution=multi_worker", f"--output_dir={run_dir}", *extra]
    return [job("train", 1, args, env=env) for env in worker_envs(2)]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("one_device") / "run")
    finish(job("train", 1, [*TRAIN, "--distribution=one_device", f"--output_dir={run_dir}"]))
    return run_dir


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("two_workers") / "run")
    for proc in start_workers(run_dir):
        finish(proc)
    return run_dir


def test_two_replicas_train_like_one_device(one_device, tmp_path):
    run_dir = str(tmp_path / "mirrored")
    out = finish(job("train", 2, [*TRAIN, "--distribution=mirrored", f"--output_dir={run_dir}",
                                  "--verbose=2"]))  # fmt: skip
    assert "MirroredStrategy, 2 replica(s)" in out and "in 256 (128 per replica)" in out
    assert_same_training(one_device, run_dir)


def test_two_replicas_interpolate_a_fine_tune_with_its_start_like_one_device(one_device, tmp_path):
    """--init_share on mirrored variables: a fine-tune of the one-device run, interpolated with
    it, ends on the network one device gives."""
    tune = [*TRAIN, "--epochs=1", f"--init_from={one_device}", "--init_share=0.3"]
    runs = {}
    for name, cpus in (("one_device", 1), ("mirrored", 2)):
        runs[name] = str(tmp_path / name)
        finish(job("train", cpus, [*tune, f"--distribution={name}", f"--output_dir={runs[name]}"]))
    assert relative_difference(runs["one_device"], runs["mirrored"]) < 1e-4
    assert relative_difference(one_device, runs["one_device"]) > 1e-3  # it was fine-tuned


def test_two_workers_train_like_one_device_and_only_the_chief_writes(one_device, two_workers):
    assert_same_training(one_device, two_workers)
    written = set(os.listdir(two_workers))
    assert {"checkpoints", "logs", "summary.json", "network.weights.h5"} <= written


def test_a_killed_worker_resumes_from_the_last_epoch_and_matches(two_workers, tmp_path):
    run_dir = str(tmp_path / "killed")
    chief, worker = start_workers(run_dir)
    latest = os.path.join(run_dir, "checkpoints", "latest")
    deadline = time.time() + 300
    while not os.path.exists(latest) and time.time() < deadline and chief.poll() is None:
        time.sleep(0.05)
    assert chief.poll() is None, "the job ended before a worker could be killed"
    worker.send_signal(signal.SIGKILL)  # mid-epoch 2: its mining or its steps
    worker.wait()
    chief.kill()  # the job has failed; a cluster manager restarts all of its tasks
    chief.communicate()
    with open(latest) as f:
        assert json.load(f)["epoch"] == 0
    assert not os.path.exists(os.path.join(run_dir, "network.weights.h5"))
    for proc in start_workers(run_dir):
        finish(proc)
    with open(os.path.join(run_dir, "summary.json")) as f:
        assert json.load(f)["resumed_from_epoch"] >= 1
    assert_same_training(two_workers, run_dir, tolerance=1e-6)


def test_two_replicas_evaluate_like_one_device(one_device, tmp_path):
    # the paper's PGD on linf, the ensemble (PGD, APGD on both objectives, Square) on the
    # end-to-end threats, in-distribution images attacked too
    args = [f"--checkpoint={one_device}", "--ood_sets=gaussian_noise,textures",
            "--max_ood_images=80", "--threats=natural,linf,linf_in,linf_both", "--attack_steps=5",
            "--end_to_end_attack=ensemble", "--square_queries=20", "--max_in_images=48",
            "--batch_size=32", "--plots=false"]  # fmt: skip
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    finish(job("evaluate", 1, [*args, "--distribution=one_device", f"--results_dir={one}"]))
    finish(job("evaluate", 2, [*args, "--distribution=mirrored", f"--results_dir={two}"]))
    names = sorted(os.listdir(os.path.join(one, "scores")))
    # in-distribution clean and attacked + 2 sets x 3 OOD sides (natural, linf, linf_out)
    assert len(names) == 8
    winners = 0
    for name in names:
        a, b = (dict(np.load(os.path.join(d, "scores", name))) for d in (one, two))
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5, err_msg=name)
        if "attack_winners" in a:  # the ensemble's members won the same images (a near tie
            winners += 1  # may fall either way under float differences of the split)
            assert np.mean(a["attack_winners"] == b["attack_winners"]) >= 0.95, name
    assert winners == 3  # the attacked in-distribution subset and linf_out of both sets


@pytest.mark.parametrize(
    "tf_config,extra,needle",
    [("{not json", ["--distribution=multi_worker"], "TF_CONFIG is not valid JSON"),
     (json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}),
      ["--distribution=multi_worker"], "task type 'chief' is not in the cluster"),
     ("UNREACHABLE", ["--distribution=multi_worker", "--cluster_wait=3"], "did not answer"),
     ("", ["--distribution=tpu"], "no TPU is attached")],
)  # fmt: skip
def test_bad_cluster_settings_fail_in_one_line_within_a_minute(tf_config, extra, needle, tmp_path):
    env = dict(os.environ)
    if tf_config == "UNREACHABLE":  # a second worker that never starts
        tf_config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]},
                                "task": {"type": "worker", "index": 0}})  # fmt: skip
    env["TF_CONFIG"] = tf_config
    start = time.time()
    proc = job("train", 1, [*TRAIN, f"--output_dir={tmp_path / 'run'}", *extra], env=env)
    _, err = proc.communicate(timeout=120)
    assert time.time() - start < 60
    assert proc.returncode == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], err[-2000:]
    assert "Traceback" not in err
