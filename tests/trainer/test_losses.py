"""Focal loss against a hand-computed value; balanced class weights from a manifest."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bonify.vocabulary import CLASS_NAMES
from trainer.losses import balanced_class_weights, focal_loss_per_example


def test_focal_loss_matches_hand_computed_value():
    probabilities = np.full((2, 14), 0.02, dtype=np.float32)
    probabilities[0, 3] = 0.74  # 13 * 0.02 + 0.74 = 1
    probabilities[1, 0] = 0.74
    labels = np.zeros((2, 14), dtype=np.float32)
    labels[0, 3] = 1.0  # confident and right
    labels[1, 5] = 1.0  # wrong: true class has p = 0.02
    loss = focal_loss_per_example(labels, probabilities, gamma=2.0, alpha=0.25).numpy()
    expected_right = 0.25 * (1 - 0.74) ** 2 * -math.log(0.74)
    expected_wrong = 0.25 * (1 - 0.02) ** 2 * -math.log(0.02)
    assert loss.shape == (2,)
    assert loss[0] == pytest.approx(expected_right, rel=1e-5)
    assert loss[1] == pytest.approx(expected_wrong, rel=1e-5)


def test_focal_loss_with_gamma_zero_is_alpha_times_cross_entropy():
    probabilities = np.full((1, 14), 1 / 14, dtype=np.float32)
    labels = np.eye(14, dtype=np.float32)[[7]]
    loss = focal_loss_per_example(labels, probabilities, gamma=0.0, alpha=1.0).numpy()
    assert loss[0] == pytest.approx(math.log(14), rel=1e-5)


def test_balanced_class_weights_follow_sklearn_formula():
    from sklearn.utils.class_weight import compute_class_weight

    rng = np.random.default_rng(0)
    counts = {name: int(rng.integers(5, 50)) for name in CLASS_NAMES}
    weights = balanced_class_weights(counts)
    labels = np.concatenate([np.full(counts[n], i) for i, n in enumerate(CLASS_NAMES)])
    expected = compute_class_weight("balanced", classes=np.arange(14), y=labels)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_class_missing_from_train_split_gets_weight_zero():
    counts = {name: 10 for name in CLASS_NAMES}
    counts["HUMERUS_Abnormal"] = 0
    weights = balanced_class_weights(counts)
    assert weights[CLASS_NAMES.index("HUMERUS_Abnormal")] == 0.0
    # 130 images over 13 present classes of 10 each: weight 1
    np.testing.assert_allclose(np.delete(weights, CLASS_NAMES.index("HUMERUS_Abnormal")), 1.0)
