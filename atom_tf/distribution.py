"""Choosing a `tf.distribute` strategy from the command line, and running work across it.

`make_strategy(kind)` gives one of TensorFlow's strategies (`auto`, `one_device`, `mirrored`,
`multi_worker` from `TF_CONFIG`, `tpu`), checking what can be checked first so that a bad
`TF_CONFIG`, a worker that never answers or a missing TPU fail in one line instead of hanging.
`across_replicas(strategy, fn)` runs a batched function with each replica (of every worker)
on a contiguous share of the batch and gathers the results in order: the same numbers as one
device, up to float rounding. `ReplicaLayout` says which replicas a worker feeds; only the
chief (`is_chief`) writes checkpoints, logs and results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import socket
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from atom_tf.errors import InvalidConfigError, describe_cause

DISTRIBUTIONS = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def parse_tf_config(text: str) -> tuple[dict[str, list[str]], str, int]:
    """(cluster, task type, task index) of a `TF_CONFIG` value, or one line saying what is
    wrong with it."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidConfigError(f"TF_CONFIG is not valid JSON ({err.msg} at {err.pos})") from err
    cluster, task = (config.get("cluster"), config.get("task")) if isinstance(config, dict) else (
        None, None)  # fmt: skip
    if not isinstance(cluster, dict) or not cluster:
        raise InvalidConfigError(
            'TF_CONFIG has no "cluster", e.g. {"cluster": {"worker": ["host1:port", '
            '"host2:port"]}, "task": {"type": "worker", "index": 0}}'
        )
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise InvalidConfigError('TF_CONFIG has no "task" with "type" and "index"')
    task_type, index = task["type"], task["index"]
    for name, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise InvalidConfigError(f'TF_CONFIG cluster "{name}" must be a list of host:port')
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit():
                raise InvalidConfigError(
                    f'TF_CONFIG cluster "{name}" has {address!r}, which is not host:port'
                )
    if task_type not in cluster:
        raise InvalidConfigError(
            f"TF_CONFIG task type {task_type!r} is not in the cluster ({', '.join(cluster)})"
        )
    if not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise InvalidConfigError(
            f"TF_CONFIG task index {index!r} is out of range for {len(cluster[task_type])} "
            f"{task_type}(s)"
        )
    return cluster, task_type, index


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def wait_for_cluster(
    cluster: dict[str, list[str]], task_type: str, index: int, wait_seconds: float
) -> None:
    """Waits until every other task of the cluster accepts connections, answering on this
    task's own port meanwhile (so peers that check first see it too); one line if a task is
    still unreachable after `wait_seconds` (TensorFlow itself would wait forever)."""
    own = cluster[task_type][index]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", _split_address(own)[1]))
    except OSError as err:
        listener.close()
        raise InvalidConfigError(
            f"this task's address {own} cannot be used ({err.strerror}); is another process "
            "using the port?"
        ) from err
    listener.listen(64)
    pending = [a for kind, addresses in cluster.items() for a in addresses if a != own]
    deadline = time.monotonic() + wait_seconds
    try:
        while pending:
            address = pending[0]
            try:
                with socket.create_connection(_split_address(address), timeout=2.0):
                    pending.pop(0)
                    continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise InvalidConfigError(
                    f"worker {address} of TF_CONFIG did not answer within {wait_seconds:g} s; "
                    "start every task of the cluster, check the address, or raise "
                    "--cluster_wait"
                )
            time.sleep(0.2)
    finally:
        listener.close()


def _tpu_strategy(address: str, wait_seconds: float) -> tf.distribute.Strategy:
    on_tpu_vm = os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")
    if not address and not on_tpu_vm and not os.environ.get("TPU_NAME"):
        raise InvalidConfigError(
            "no TPU is attached to this machine: pass --tpu=grpc://HOST:8470 (or the TPU's "
            "name), or run on a TPU VM"
        )
    if address.startswith("grpc://"):
        host, port = _split_address(address.removeprefix("grpc://"))
        try:
            socket.create_connection((host, port), timeout=min(wait_seconds, 20.0)).close()
        except OSError as err:
            raise InvalidConfigError(
                f"the TPU at {address} does not answer ({err.strerror or err}); check --tpu"
            ) from err
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address or "local")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise InvalidConfigError(
            f"cannot reach the TPU {address or 'local'!r} ({describe_cause(err)}); check --tpu"
        ) from err
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(kind: str = "auto", tpu: str = "", wait_seconds: float = 45.0):
    """The `tf.distribute` strategy for `--distribution=kind`.

    auto: a TPU when one is attached (`--tpu`, `TPU_NAME` or a TPU VM), multi_worker when
    `TF_CONFIG` names more than one task, all local GPUs mirrored when there are several, else
    TensorFlow's default strategy (one device, no distribution overhead).
    """
    if kind not in DISTRIBUTIONS:
        raise InvalidConfigError(
            f"unknown --distribution {kind!r}; choose one of {', '.join(DISTRIBUTIONS)}"
        )
    tf_config = os.environ.get("TF_CONFIG", "")
    if kind == "auto":
        if tpu or os.environ.get("TPU_NAME") or os.path.exists("/dev/accel0"):
            kind = "tpu"
        elif tf_config and sum(map(len, parse_tf_config(tf_config)[0].values())) > 1:
            kind = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            kind = "mirrored"
        else:  # TensorFlow's default placement on the one device (its GPU if it has one)
            return tf.distribute.get_strategy()
    if kind == "tpu":
        return _tpu_strategy(tpu, wait_seconds)
    if kind == "multi_worker":
        if not tf_config:
            raise InvalidConfigError(
                "--distribution=multi_worker needs TF_CONFIG (the cluster's host:port list and "
                "this task's type and index) in the environment"
            )
        cluster, task_type, index = parse_tf_config(tf_config)
        wait_for_cluster(cluster, task_type, index, wait_seconds)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        return tf.distribute.MirroredStrategy(gpus or None)
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


@dataclasses.dataclass(frozen=True)
class ReplicaLayout:
    """Replicas in sync over all workers, and the ones this worker runs."""

    num_replicas: int
    num_workers: int
    worker_index: int

    @property
    def local(self) -> range:
        per_worker = self.num_replicas // self.num_workers
        return range(self.worker_index * per_worker, (self.worker_index + 1) * per_worker)


def replica_layout(strategy: tf.distribute.Strategy) -> ReplicaLayout:
    resolver = getattr(strategy, "cluster_resolver", None)
    workers, index = 1, 0
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and resolver is not None:
        spec = resolver.cluster_spec().as_dict()
        workers = sum(len(v) for k, v in spec.items() if k in ("chief", "worker")) or 1
        chief = len(spec.get("chief", []))
        index = resolver.task_id + (chief if resolver.task_type == "worker" else 0)
    return ReplicaLayout(strategy.num_replicas_in_sync, workers, index)


def _writes(task_type: str, index: int, cluster: dict) -> bool:
    """The task that writes: the chief, or worker 0 of a cluster without one."""
    return task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in cluster)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this task writes checkpoints, logs and results under `strategy`."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    return _writes(resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict())


def is_chief_task() -> bool:
    """Whether this process writes, from `TF_CONFIG` alone (no strategy needed)."""
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        return True
    cluster, task_type, index = parse_tf_config(text)
    return _writes(task_type, index, cluster)


def describe_strategy(strategy: tf.distribute.Strategy, batches: dict[str, int]) -> str:
    """One line: strategy, replicas, this worker's devices and the per-replica batch sizes."""
    layout = replica_layout(strategy)
    try:
        devices = list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy: TensorFlow's own placement
        gpus = tf.config.list_logical_devices("GPU")
        devices = [gpus[0].name if gpus else "/device:CPU:0"]
    names = ", ".join(d.rsplit("/", 1)[-1].replace("device:", "") for d in devices)
    per_replica = ", ".join(
        f"{name} {size} ({size // layout.num_replicas} per replica)"
        for name, size in batches.items()
    )
    workers = f" on {layout.num_workers} workers" if layout.num_workers > 1 else ""
    name = type(strategy).__name__
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        name = "one device"
    return (
        f"distribution: {name}, {layout.num_replicas} replica(s){workers}; "
        f"this worker: {names}; global batches {per_replica}"
    )


def check_divisible(batches: dict[str, int], replicas: int) -> None:
    """Global batch sizes must split evenly over the replicas (static shapes for XLA)."""
    for name, size in batches.items():
        if size % replicas:
            raise InvalidConfigError(
                f"{name} {size} does not split over {replicas} replicas; use a multiple of "
                f"{replicas}"
            )


def across_replicas(
    strategy: tf.distribute.Strategy | None, fn: Callable[..., tf.Tensor]
) -> Callable[..., np.ndarray]:
    """`fn(*batches) -> tensor` (a tf.function over a leading batch axis) as a NumPy function
    whose batch is cut into one contiguous share per replica of every worker (zero-padded to
    equal shares); the shares' results are gathered in replica order, so the output is what
    one device computes."""
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return lambda *arrays: np.asarray(fn(*map(tf.constant, arrays)))
    replicas = strategy.num_replicas_in_sync

    def share_of(array: np.ndarray, share: int, context) -> tf.Tensor:
        first = context.replica_id_in_sync_group * share
        return tf.constant(array[first : first + share])

    def call(*arrays: np.ndarray) -> np.ndarray:
        count = len(arrays[0])
        share = max(1, -(-count // replicas))
        values = []
        for array in arrays:
            pad = share * replicas - len(array)
            if pad:
                array = np.concatenate([array, np.zeros((pad, *array.shape[1:]), array.dtype)])
            values.append(
                strategy.experimental_distribute_values_from_function(
                    functools.partial(share_of, array, share)
                )
            )
        result = strategy.run(fn, args=tuple(values))
        return np.asarray(strategy.gather(result, axis=0))[:count]

    return call


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InvalidConfigError(
            f"unknown --precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        )


@contextlib.contextmanager
def precision_policy(precision: str):
    """Layers built inside use Keras' `precision` dtype policy: float32, or mixed bfloat16 /
    float16 compute with float32 variables (the logits layer stays float32, so objectives,
    PGD and scorers work in float32). The global policy is restored on exit."""
    import keras

    check_precision(precision)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
