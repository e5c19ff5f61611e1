"""The custom train / eval steps (strategy.run inside a tf.function, as Orbit does).

Keras 3 `fit` fails under MultiWorkerMirroredStrategy on this stack (keras#20585); this loop
runs unchanged under the default strategy, Mirrored and MultiWorkerMirrored.
Build one new step function per phase (after setting `trainable` and the new optimizer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf

from bonify.vocabulary import NUM_CLASSES
from trainer.losses import focal_loss_per_example


@dataclasses.dataclass(frozen=True)
class Metric:
    """A training and validation metric, defined once: every step returns its sum over the
    batch (example-weighted) and over replicas; the epoch's value is the sum over its steps
    divided by the summed example weights ("count"). History, the console, the progress bar
    and TensorBoard all derive from `METRICS`."""

    #: The name in history.json and TensorBoard; validation's is "val_" + name in history.
    name: str
    #: The key of the per-step sum in the step's outputs and the checkpointed epoch sums.
    sum_key: str
    #: The console's short label.
    label: str
    #: (probabilities [b, 14], labels int32 [b], per-example loss [b], weights [b]) -> the
    #: weighted sum over the batch (float32 scalar).
    batch_sum: Callable[..., tf.Tensor]


def _correct(probabilities, labels, per_example_loss, weights):
    predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32) * weights)


def _top3(probabilities, labels, per_example_loss, weights):
    hits = tf.math.in_top_k(labels, tf.cast(probabilities, tf.float32), k=3)
    return tf.reduce_sum(tf.cast(hits, tf.float32) * weights)


def _loss(probabilities, labels, per_example_loss, weights):
    return tf.reduce_sum(per_example_loss * weights)


METRICS: tuple[Metric, ...] = (
    Metric("loss", "loss_sum", "loss", _loss),
    Metric("accuracy", "correct", "acc", _correct),
    Metric("top3_accuracy", "top3", "top3", _top3),
)
#: The summed example weights of a step (the metrics' denominator).
COUNT = "count"
#: Per-step outputs, each summed over all replicas.
STEP_KEYS = (*(metric.sum_key for metric in METRICS), COUNT, "nonfinite", "stop")


def means(sums: dict[str, float], prefix: str = "") -> dict[str, float]:
    """{prefix + metric name: sum / count} from summed step outputs (missing sums are 0)."""
    count = max(sums.get(COUNT, 0.0), 1.0)
    return {prefix + metric.name: sums.get(metric.sum_key, 0.0) / count for metric in METRICS}


def make_optimizer(name: str, learning_rate: float, precision: str):
    """A Keras 3 optimizer (wrapped in LossScaleOptimizer for float16)."""
    optimizers = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
    }
    optimizer = optimizers[name](learning_rate=learning_rate)
    if precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def set_learning_rate(optimizer, learning_rate: float) -> None:
    """Assign the (inner) optimizer's learning rate variable."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    inner.learning_rate.assign(learning_rate)


def _batch_stats(probabilities, labels, weights, per_example_loss):
    stats = {
        metric.sum_key: metric.batch_sum(probabilities, labels, per_example_loss, weights)
        for metric in METRICS
    }
    stats[COUNT] = tf.reduce_sum(weights)
    return stats


def make_train_step(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer,
    class_weights,
    loss_config: dict,
    global_batch_size: int,
    xla: bool = False,
):
    """`train_step(iterator, stop_flag) -> dict of STEP_KEYS` (sums over replicas).

    class_weights: float32 [14] tensor (ones when the phase does not weight classes).
    stop_flag: float32 scalar, 1.0 when this host got SIGTERM; the returned "stop" is the
    sum over every replica of every worker, so all workers stop at the same step.
    Batches: {"image": uint8 [b, S, S, 1], "label": int32 [b], "weight": float32 [b]}.
    """
    from trainer.model import trainable_variables

    variables = trainable_variables(model)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    gamma, alpha = loss_config["focal_gamma"], loss_config["focal_alpha"]

    def forward_backward(images, labels, weights):
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            one_hot = tf.one_hot(labels, NUM_CLASSES)
            per_example = focal_loss_per_example(one_hot, probabilities, gamma, alpha)
            example_weights = tf.gather(class_weights, labels) * weights
            loss = tf.nn.compute_average_loss(
                per_example * example_weights, global_batch_size=global_batch_size
            )
            tape_loss = optimizer.scale_loss(loss) if scaled else loss
        gradients = tape.gradient(tape_loss, variables)
        return probabilities, per_example, gradients

    # XLA compiles the forward/backward pass only: the optimizer's cross-replica update
    # (merge_call) cannot live inside a jit-compiled function.
    compute = tf.function(forward_backward, jit_compile=True) if xla else forward_backward

    def step_fn(batch, stop_flag):
        images, labels, weights = batch["image"], batch["label"], batch["weight"]
        probabilities, per_example, gradients = compute(images, labels, weights)
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])
        local_bad = 1.0 - tf.cast(finite, tf.float32)
        if scaled:
            # Keras 3.15.1's LossScaleOptimizer checks replica 0's gradients only: agree on
            # a "non-finite anywhere" flag and poison every replica's gradients so all skip.
            # (Without loss scaling the summed flag returned below is enough: the host
            # restores the last checkpoint, so no extra collective per step.)
            context = tf.distribute.get_replica_context()
            any_bad = context.all_reduce(tf.distribute.ReduceOp.SUM, local_bad)
            poison = tf.where(any_bad > 0, float("nan"), 0.0)
            gradients = [g + tf.cast(poison, g.dtype) for g in gradients]
        optimizer.apply(gradients, variables)
        stats = _batch_stats(probabilities, labels, weights, per_example)
        stats["nonfinite"] = local_bad
        stats["stop"] = tf.identity(stop_flag)  # a per-replica value, so it can be reduced
        return stats

    @tf.function
    def train_step(iterator, stop_flag):
        per_replica = strategy.run(step_fn, args=(next(iterator), stop_flag))
        return {
            key: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for key, value in per_replica.items()
        }

    return train_step


#: The per-example outputs of an eval step, gathered from every replica of every worker.
EXAMPLE_KEYS = ("probabilities", "label", "weight", "study")


def make_eval_step(strategy: tf.distribute.Strategy, model: keras.Model, loss_config: dict):
    """`eval_step(iterator) -> (sums, examples)`: each metric's sum and the count, summed
    over replicas (focal loss without class weights; padding examples have weight 0), and
    the batch's EXAMPLE_KEYS per example, gathered from all replicas (every worker gets the
    whole global batch, so the study metrics it computes from them are the same everywhere).
    """
    gamma, alpha = loss_config["focal_gamma"], loss_config["focal_alpha"]

    def step_fn(batch):
        probabilities = model(batch["image"], training=False)
        one_hot = tf.one_hot(batch["label"], NUM_CLASSES)
        per_example = focal_loss_per_example(one_hot, probabilities, gamma, alpha)
        stats = _batch_stats(probabilities, batch["label"], batch["weight"], per_example)
        examples = {"probabilities": tf.cast(probabilities, tf.float32)}
        examples.update({key: batch[key] for key in EXAMPLE_KEYS[1:]})
        return stats, examples

    @tf.function
    def eval_step(iterator):
        per_replica, examples = strategy.run(step_fn, args=(next(iterator),))
        sums = {
            key: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for key, value in per_replica.items()
        }
        return sums, {key: strategy.gather(value, axis=0) for key, value in examples.items()}

    return eval_step
