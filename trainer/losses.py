"""Categorical focal loss (per example) and balanced class weights from manifest.json."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bonify.vocabulary import CLASS_NAMES


def focal_loss_per_example(labels_one_hot, probabilities, gamma: float, alpha: float):
    """Categorical focal loss, summed over classes, one value per example.

    FL = -sum_c alpha * y_c * (1 - p_c)^gamma * log(p_c) (Lin et al.; the reference's form).
    Args:
      labels_one_hot: float [batch, classes].
      probabilities: softmax output [batch, classes] (any float dtype; computed in float32).
    Returns: float32 [batch].
    """
    import tensorflow as tf

    probabilities = tf.cast(probabilities, tf.float32)
    labels_one_hot = tf.cast(labels_one_hot, tf.float32)
    epsilon = 1e-7
    probabilities = tf.clip_by_value(probabilities, epsilon, 1.0 - epsilon)
    cross_entropy = -labels_one_hot * tf.math.log(probabilities)
    modulating = alpha * tf.pow(1.0 - probabilities, gamma)
    return tf.reduce_sum(modulating * cross_entropy, axis=-1)


def balanced_class_weights(class_counts: Mapping[str, int]) -> np.ndarray:
    """sklearn "balanced" weights n / (k * count_c), in CLASS_NAMES order, float32 [14].

    k is the number of classes that occur (as sklearn computes it from the labels seen);
    a class with no training images gets weight 0: it never appears in a training batch,
    so its weight has no effect, and 0 makes that visible in the logged weights.
    """
    counts = np.array([int(class_counts.get(name, 0)) for name in CLASS_NAMES], dtype=np.float64)
    present = counts > 0
    total, k = counts.sum(), int(present.sum())
    weights = np.zeros_like(counts)
    if k:
        weights[present] = total / (k * counts[present])
    return weights.astype(np.float32)
