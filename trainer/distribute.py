"""Strategy factory (a string -> tf.distribute strategy), CPU split, precision and XLA.

Call `split_cpu` and `make_strategy` before any other TF op: logical devices and the
multi-worker runtime can only be configured on a fresh runtime.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from trainer.errors import TrainerError


def split_cpu(logical_cpus: int) -> None:
    """Split the first CPU into N logical devices so MirroredStrategy has N replicas."""
    if logical_cpus <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * logical_cpus
    )


def parse_tf_config(raw: str) -> dict:
    """TF_CONFIG's text as a dict ({} when unset); one-line error when it is malformed."""
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        raise TrainerError("TF_CONFIG is not valid JSON") from None
    cluster = parsed.get("cluster", {}) if isinstance(parsed, dict) else None
    if not isinstance(cluster, dict) or not all(isinstance(t, list) for t in cluster.values()):
        raise TrainerError('TF_CONFIG must be {"cluster": {"worker": [...], ...}, "task": {...}}')
    return parsed


def count_cluster_tasks(tf_config: dict) -> int:
    """Tasks named by a parsed TF_CONFIG, over every task type (0 for {})."""
    return sum(len(tasks) for tasks in tf_config.get("cluster", {}).values())


def cluster_task_count() -> int:
    """Tasks named by this process's TF_CONFIG (0 when unset)."""
    return count_cluster_tasks(parse_tf_config(os.environ.get("TF_CONFIG", "")))


def strategy_for(requested: str, tf_config: dict, gpu_count: int) -> str:
    """The strategy name `requested` stands for on this cluster and host.

    auto: multi_worker when TF_CONFIG names more than one task, else mirrored when the host
    has more than one GPU, else default (one device). Any other name is returned as is.
    """
    if requested != "auto":
        return requested
    if count_cluster_tasks(tf_config) > 1:
        return "multi_worker"
    if gpu_count > 1:
        return "mirrored"
    return "default"


def choose_strategy_name(requested: str) -> str:
    """`strategy_for` with what this process sees: TF_CONFIG and the physical GPUs."""
    if requested != "auto":
        return requested
    tf_config = parse_tf_config(os.environ.get("TF_CONFIG", ""))
    return strategy_for(requested, tf_config, len(tf.config.list_physical_devices("GPU")))


def make_strategy(requested: str) -> tf.distribute.Strategy:
    """Build the strategy; on a CPU-only host, mirrored spans the logical CPUs."""
    name = choose_strategy_name(requested)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        cpus = tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in cpus])
    if name == "multi_worker":
        if cluster_task_count() < 1:
            raise TrainerError("--strategy multi_worker needs TF_CONFIG (or --tf_config_from_k8s)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainerError(f"--strategy {requested}: unknown strategy")


def _is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The task that writes checkpoints, state and TensorBoard logs."""
    if not _is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_id(strategy: tf.distribute.Strategy) -> int:
    """This task's index (0 outside multi-worker)."""
    if not _is_multi_worker(strategy):
        return 0
    return int(strategy.cluster_resolver.task_id or 0)


def precision_for(requested: str, gpu_details: list[dict]) -> str:
    """The precision `requested` stands for on a host whose GPUs have these details.

    gpu_details: one dict per physical GPU as `tf.config.experimental.get_device_details`
    returns it (`compute_capability` is a (major, minor) tuple; absent on some builds).
    auto: float16 when any GPU has compute capability >= 7.0 (Volta and later have tensor
    cores for float16), else off; bfloat16 is never chosen automatically. Any other value
    is returned as is.
    """
    if requested != "auto":
        return requested
    for details in gpu_details:
        if tuple(details.get("compute_capability", (0, 0))) >= (7, 0):
            return "float16"
    return "off"


def resolve_precision(requested: str) -> str:
    """`precision_for` with this host's physical GPUs."""
    if requested != "auto":
        return requested
    gpus = tf.config.list_physical_devices("GPU")
    return precision_for(requested, [tf.config.experimental.get_device_details(g) for g in gpus])


def set_precision(precision: str) -> None:
    """Set the Keras global dtype policy (before building the model)."""
    import keras

    policy = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16", "off": "float32"}
    keras.mixed_precision.set_global_policy(policy[precision])


def any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """True when `flag` is set on any worker: a tiny all-reduce under multi-worker, so every
    worker gets the same answer at the same point (and waits there for the others)."""
    if not _is_multi_worker(strategy):
        return flag
    per_replica = strategy.run(lambda: tf.constant(1.0 if flag else 0.0))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy() > 0)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Block until every worker gets here (a no-op off multi-worker).

    Used after the chief writes a file that the other workers read next: without it a
    worker can reach the read before the chief has finished the write.
    """
    any_worker(strategy, False)
