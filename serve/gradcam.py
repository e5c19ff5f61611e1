"""Grad-CAM: where in the radiograph the model's evidence for a class lies.

`gradcam` computes, for each image, the Grad-CAM map (Selvaraju et al. 2017) of one class
over the backbone's last convolutional features: the feature maps weighted by the spatial
mean of the class logit's gradient, rectified and scaled to 0..1. `overlay_png` maps it back
onto the original radiograph (cropping the square's padding, resizing to the source size) and
blends it in colour.

The model is a `.keras` file as the trainer writes it (uint8 [B, S, S, 1] in -> in-model
preprocessing -> a nested backbone model -> dense head -> softmax), found by structure:
the one nested `keras.Model` among the layers is the backbone, the layers before it are the
preprocessing and the layers after it the head. Nothing of the trainer's code is imported:
serving reads model files.
"""

from __future__ import annotations

import io
import pathlib
import weakref
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

#: Largest share of colour in the overlay (where the map is 1); where the map is 0 the
#: radiograph shows unaltered, so the reader still sees the anatomy under the heat.
OVERLAY_MAX_ALPHA = 0.55
OVERLAY_COLORMAP = "jet"


class PlacementLike(Protocol):
    """Where the source image lies inside the model's S x S square (`bonify.images.Placement`)."""

    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class _GradCamParts:
    """The model cut at the backbone's last 4-D feature map, every part sharing its layers."""

    preprocessing: object  # uint8 [B, S, S, 1] -> the backbone's float input
    features: object  # backbone input -> last conv features [B, h, w, C]
    after_features: object  # features -> the backbone's pooled output
    head: object  # pooled output -> (class score tensor, probabilities)


# Cut once per loaded model (building the sub-models costs far more than one batch).
_PARTS_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _parts_of(model) -> _GradCamParts:
    cached = _PARTS_CACHE.get(model)
    if cached is None:
        cached = _cut_model(model)
        _PARTS_CACHE[model] = cached
    return cached


def _cut_model(model) -> _GradCamParts:
    import keras

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(
            f"Grad-CAM needs a model with exactly one nested backbone model, "
            f"found {len(nested)} in {model.name!r}"
        )
    backbone = nested[0]
    # `keras.Model(model.inputs, [inner_layer.output, ...])` is impossible: the backbone's
    # layers live in the backbone's own graph, not the outer one. So cut the outer graph
    # around the backbone's call and the backbone at its last feature map, then chain them.
    call = backbone._inbound_nodes[0]
    outer_backbone_input = call.input_tensors[0]
    outer_backbone_output = call.output_tensors[0]
    preprocessing = keras.Model(model.inputs, outer_backbone_input)

    # The last 4-D map that is not a pooling layer's output: a trailing max-pool would only
    # halve the map's resolution (small_cnn's last block ends with one; DenseNet's with relu).
    four_d = [
        layer
        for layer in backbone.layers
        if len(layer.output.shape) == 4 and "Pooling" not in type(layer).__name__
    ]
    if not four_d:
        raise ValueError(f"backbone {backbone.name!r} has no 4-D convolutional feature map")
    feature_tensor = four_d[-1].output
    features = keras.Model(backbone.inputs, feature_tensor)
    # Keras 3 accepts intermediate tensors as inputs (it clones the graph's entry points).
    after_features = keras.Model(feature_tensor, backbone.outputs[0])

    # Grad-CAM differentiates the class logit, not the softmax output (whose gradient
    # vanishes when the model is confident); the logits are the final softmax's input.
    final = model.layers[-1]
    is_softmax = (
        isinstance(final, keras.layers.Activation)
        and getattr(final.activation, "__name__", "") == "softmax"
    )
    score_tensor = final.input if is_softmax else model.outputs[0]
    head = keras.Model(outer_backbone_output, [score_tensor, model.outputs[0]])
    return _GradCamParts(preprocessing, features, after_features, head)


def gradcam(
    model, images_uint8: np.ndarray, class_index: int | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps and the model's probabilities for a batch.

    model: a loaded bonify `.keras` model (any backbone, any mixed-precision policy).
    images_uint8: uint8 [B, S, S, 1], the model's input.
    class_index: the class whose evidence to map: None for each image's predicted class,
        an int for the same class on every image, or an int array [B].
    Returns (heatmaps float32 [B, h, w] in 0..1 at the feature map's resolution, with the
    square's geometry: row 0 is the top of the S x S input; probabilities float32 [B, 14],
    equal to `model(images_uint8)`). A map with no positive evidence is all zeros, never NaN.
    """
    import tensorflow as tf

    parts = _parts_of(model)
    images = tf.convert_to_tensor(np.asarray(images_uint8, dtype=np.uint8))
    backbone_input = parts.preprocessing(images, training=False)
    with tf.GradientTape() as tape:
        features = parts.features(backbone_input, training=False)
        tape.watch(features)
        pooled = parts.after_features(features, training=False)
        scores, probabilities = parts.head(pooled, training=False)
        if class_index is None:
            chosen = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        else:
            chosen = tf.broadcast_to(
                tf.convert_to_tensor(class_index, dtype=tf.int32), [tf.shape(images)[0]]
            )
        # Each image's score depends on its own features only (inference mode), so the
        # gradient of the sum is every image's own gradient.
        chosen_scores = tf.gather(tf.cast(scores, tf.float32), chosen, batch_dims=1)
        total = tf.reduce_sum(chosen_scores)
    gradients = tape.gradient(total, features)
    # float16/bfloat16 models: features and gradients in float32 before they are combined.
    features32 = tf.cast(features, tf.float32).numpy()
    gradients32 = (
        np.zeros_like(features32) if gradients is None else tf.cast(gradients, tf.float32).numpy()
    )
    weights = gradients32.mean(axis=(1, 2), keepdims=True)  # [B, 1, 1, C]
    cams = np.maximum((weights * features32).sum(axis=-1), 0.0)  # [B, h, w]
    return normalize_maps(cams), np.asarray(tf.cast(probabilities, tf.float32).numpy())


def normalize_maps(cams: np.ndarray) -> np.ndarray:
    """Scale each map to 0..1 by its maximum; a map with no positive (or finite) maximum
    becomes all zeros instead of 0/0 = NaN."""
    cams = np.nan_to_num(np.asarray(cams, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peaks = cams.reshape(len(cams), -1).max(axis=1) if cams.size else np.zeros(len(cams))
    scale = np.where(peaks > 0, peaks, 1.0).astype(np.float32)
    maps = np.where(peaks[:, None, None] > 0, cams / scale[:, None, None], 0.0)
    return np.clip(maps, 0.0, 1.0).astype(np.float32)


def square_size_of(placement: PlacementLike) -> int:
    """The side S of the square a placement lies in.

    The image's long side fills the square (offset 0) and the short side is centred with
    floor((S - side) / 2) above/left, so S = max(side + 2 * offset) over both axes.
    """
    return max(
        placement.height + 2 * placement.top,
        placement.width + 2 * placement.left,
    )


def heatmap_in_source(
    heatmap: np.ndarray,
    placement: PlacementLike,
    source_shape: tuple[int, int],
    image_size: int | None = None,
) -> np.ndarray:
    """A square-geometry heatmap [h, w] -> float32 [H, W] over the source image.

    Upsampled bilinearly to the model's S x S square, cropped to where the source image lies
    in it (the padding dropped), resized to the source's (H, W). image_size: S, inferred
    from the placement when None.
    """
    size = image_size or square_size_of(placement)
    square = Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F").resize(
        (size, size), Image.Resampling.BILINEAR
    )
    cropped = square.crop(
        (
            placement.left,
            placement.top,
            placement.left + placement.width,
            placement.top + placement.height,
        )
    )
    height, width = source_shape
    resized = cropped.resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def overlay_png(
    original_gray: np.ndarray,
    heatmap: np.ndarray,
    placement: PlacementLike,
    image_size: int | None = None,
) -> bytes:
    """The Grad-CAM overlay of one image as PNG bytes (RGB, the original's size).

    original_gray: uint8 [H, W], the decoded source image. heatmap: [h, w] in 0..1 from
    `gradcam`. placement: where the source lies in the model's square
    (`bonify.images.square_placement`). Colour is blended in proportion to the map, so
    cold regions show the radiograph as it is.
    """
    from matplotlib import colormaps

    gray = np.asarray(original_gray, dtype=np.uint8)
    heat = heatmap_in_source(heatmap, placement, gray.shape, image_size)
    colours = colormaps[OVERLAY_COLORMAP](heat)[..., :3].astype(np.float32) * 255.0
    alpha = (OVERLAY_MAX_ALPHA * heat)[..., None]
    base = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    blended = np.clip(np.rint((1.0 - alpha) * base + alpha * colours), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(blended, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


# --- Faithfulness: the pointing game ------------------------------------------------------


def peak_in_source(
    heatmap: np.ndarray,
    placement: PlacementLike,
    source_shape: tuple[int, int],
    image_size: int | None = None,
) -> tuple[int, int]:
    """(row, column) in source pixels of the heatmap's maximum (the first one on ties)."""
    heat = heatmap_in_source(heatmap, placement, source_shape, image_size)
    row, column = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(row), int(column)


def expand_box(
    box: tuple[int, int, int, int], margin: int, source_shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """[top, left, bottom, right) grown by `margin` pixels on every side, clipped to the image."""
    top, left, bottom, right = box
    height, width = source_shape
    return (
        max(0, top - margin),
        max(0, left - margin),
        min(height, bottom + margin),
        min(width, right + margin),
    )


def point_in_box(point: tuple[int, int], box: tuple[int, int, int, int]) -> bool:
    """Whether (row, column) lies in [top, bottom) x [left, right)."""
    row, column = point
    top, left, bottom, right = box
    return top <= row < bottom and left <= column < right


def box_area_fraction(box: tuple[int, int, int, int], source_shape: tuple[int, int]) -> float:
    """The share of the image a box covers: the chance of a uniformly random point hitting it."""
    top, left, bottom, right = box
    return max(0, bottom - top) * max(0, right - left) / float(source_shape[0] * source_shape[1])


#: The pointing game's tolerance: a peak within this share of the image's long side of the
#: finding's box counts as a hit (the map is coarse: one feature cell spans 16-32 model px).
POINTING_MARGIN_FRACTION = 0.05


@dataclass(frozen=True)
class PointingGame:
    """Pointing-game score of a model on the abnormal images of one split.

    hits_true/hits_predicted: images whose map peak (of the true class / of the predicted
    class) lies in the finding's box grown by the margin. chance: mean share of the image
    that grown box covers (the hit rate of a uniformly random peak).
    """

    images: int
    hits_true: int
    hits_predicted: int
    chance: float
    margin_fraction: float

    @property
    def rate_true(self) -> float:
        return self.hits_true / self.images if self.images else 0.0

    @property
    def rate_predicted(self) -> float:
        return self.hits_predicted / self.images if self.images else 0.0

    def summary(self) -> str:
        return (
            f"pointing game on {self.images} abnormal images (margin "
            f"{self.margin_fraction:.0%} of the long side): true class "
            f"{self.rate_true:.3f}, predicted class {self.rate_predicted:.3f}, "
            f"chance {self.chance:.3f} ({self.rate_true / max(self.chance, 1e-9):.1f}x)"
        )


def pointing_game(
    model,
    data_dir: str,
    sample_dir: str,
    split: str = "test",
    margin_fraction: float = POINTING_MARGIN_FRACTION,
    batch_size: int = 32,
) -> PointingGame:
    """Score Grad-CAM's faithfulness on the abnormal images of `split` in the shards of
    `data_dir`, against the boxes `bonify-sample` recorded in `sample_dir`/findings.json
    (`sample_dir` is the folder holding MURA-v1.1/, the Beam job's input). The model reads
    the shards' stored uint8 images, exactly what it was evaluated on."""
    from bonify.dataset import iterate_records, read_manifest, split_files
    from bonify.images import square_placement
    from bonify.sample import read_findings
    from bonify.vocabulary import RecordKeys

    manifest = read_manifest(data_dir)
    findings = read_findings(sample_dir)
    chosen = [
        record
        for record in iterate_records(split_files(data_dir, split))
        if record[RecordKeys.ABNORMAL] == 1 and record[RecordKeys.PATH] in findings
    ]
    hits_true = hits_predicted = 0
    chance_total = 0.0
    for start in range(0, len(chosen), batch_size):
        batch = chosen[start : start + batch_size]
        images = np.stack([record[RecordKeys.IMAGE] for record in batch])
        labels = np.array([record[RecordKeys.LABEL] for record in batch], dtype=np.int32)
        true_maps, _ = gradcam(model, images, class_index=labels)
        predicted_maps, _ = gradcam(model, images)
        for record, true_map, predicted_map in zip(batch, true_maps, predicted_maps, strict=True):
            path = str(record[RecordKeys.PATH])
            with Image.open(pathlib.Path(sample_dir) / path) as source:
                width, height = source.size  # header only: no decode
            placement = square_placement(height, width, manifest.image_size, manifest.resize)
            margin = round(margin_fraction * max(height, width))
            box = expand_box(findings[path], margin, (height, width))
            chance_total += box_area_fraction(box, (height, width))

            true_peak, predicted_peak = (
                peak_in_source(heatmap, placement, (height, width), manifest.image_size)
                for heatmap in (true_map, predicted_map)
            )
            hits_true += point_in_box(true_peak, box)
            hits_predicted += point_in_box(predicted_peak, box)
    return PointingGame(
        images=len(chosen),
        hits_true=hits_true,
        hits_predicted=hits_predicted,
        chance=chance_total / len(chosen) if chosen else 0.0,
        margin_fraction=margin_fraction,
    )
