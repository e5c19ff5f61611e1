"""Test-time augmentation: the one definition of which views of an image a model is averaged
over, shared by the evaluator (in-process tf.function and Beam RunInference) and serving.

`flip` averages each image with its horizontal mirror (radiographs of the left and right
limb are mirror images of each other, so the mirror is an image the model could have been
shown). Works on numpy arrays and TensorFlow tensors alike (plain slicing and arithmetic),
so the same code runs eagerly, inside a compiled tf.function and on Beam workers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: --tta values: "none" (the image as stored) or "flip" (image and horizontal mirror).
TTA_MODES = ("none", "flip")


def tta_views(images, tta: str) -> list:
    """The views of a batch images [B, H, W, C] (numpy or tf tensor) to average over:
    [images] for "none", [images, images mirrored left-right] for "flip"."""
    if tta not in TTA_MODES:
        raise ValueError(f"unknown tta mode {tta!r}; choose one of {', '.join(TTA_MODES)}")
    if tta == "flip":
        return [images, images[:, :, ::-1, :]]
    return [images]


def mean_over_views(predict: Callable, images, tta: str):
    """The mean of predict(view) over `tta_views(images, tta)`: [B, ...] in predict's type.

    predict: a batch [B, H, W, C] -> an array or tensor [B, ...] (e.g. a model's softmax).
    """
    outputs = [predict(view) for view in tta_views(images, tta)]
    total = outputs[0]
    for output in outputs[1:]:
        total = total + output
    return total / len(outputs)


def predict_on_batch(model, images: np.ndarray, tta: str) -> np.ndarray:
    """float64 [B, 14]: a Keras model's probabilities for uint8 images [B, S, S, 1] (numpy),
    averaged over the TTA views; one `model.predict_on_batch` call per view (the serving
    core and the evaluator's Beam workers call models this way)."""
    return mean_over_views(
        lambda view: np.asarray(model.predict_on_batch(np.ascontiguousarray(view)), np.float64),
        images,
        tta,
    )
