"""The report's gallery: per body region the model's most confident mistakes and its most
confident correct predictions, each shown as the image the model saw (decoded from the shard)
beside its Grad-CAM overlay for the predicted class.

Built only when a model was evaluated on shards (not from a predictions file), in process or
with Beam (on the launching machine, after the pipeline: the model is loaded once more and
only the chosen images are decoded and mapped, a few dozen at most). Grad-CAM is
`serve.gradcam`'s; the images come through `bonify.dataset.decode_example`, the evaluator's
decode path. With an ensemble the chosen rows and classes are the ensemble's and the map is
the first model's (as in serving). Thumbnails are small PNGs, inlined in report.html.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np

from bonify.vocabulary import CLASS_NAMES, REGIONS, RecordKeys
from eval.predictions import Predictions

#: Per region: the most confident mistakes and the most confident correct predictions shown.
MISTAKES_PER_REGION = 2
CORRECT_PER_REGION = 1
#: Side of a gallery thumbnail, pixels, and the colours its overlay PNG is reduced to: 21
#: pairs (MURA's 7 regions) add about half a megabyte to report.html.
THUMBNAIL_SIZE = 160
OVERLAY_COLOURS = 128


@dataclasses.dataclass(frozen=True)
class GalleryItem:
    """One shown image: what the model said about it, and its two PNG thumbnails."""

    image_path: str
    region: str
    true_class: str
    predicted_class: str
    confidence: float
    correct: bool
    image_png: bytes
    overlay_png: bytes


@dataclasses.dataclass(frozen=True)
class Gallery:
    """The items in report order (per region: mistakes, then correct), or a note saying why
    there are none."""

    items: tuple[GalleryItem, ...] = ()
    note: str | None = None


def select_rows(
    predictions: Predictions,
    mistakes: int = MISTAKES_PER_REGION,
    correct: int = CORRECT_PER_REGION,
) -> list[int]:
    """Row indices to show: per region (REGIONS order) the `mistakes` wrong rows of highest
    confidence, then the `correct` right rows of highest confidence (ties: by image path)."""
    right = predictions.pred_labels == predictions.true_labels
    confidence = predictions.confidences
    chosen = []
    for region in REGIONS:
        in_region = predictions.regions == region
        for wanted, count in ((~right, mistakes), (right, correct)):
            rows = np.flatnonzero(in_region & wanted)
            # lexsort: the last key is the primary one (confidence, descending), then the path.
            order = np.lexsort((predictions.image_paths[rows], -confidence[rows]))
            chosen += [int(row) for row in rows[order][:count]]
    return chosen


def decode_chosen(files: list[str], paths: set[str]) -> dict[str, np.ndarray]:
    """image path -> uint8 [S, S, 1] for the records of `files` whose path is in `paths`;
    only those records' images are decoded."""
    import tensorflow as tf

    from bonify.dataset import decode_example

    images = {}
    for serialized in tf.data.TFRecordDataset(files):
        raw = serialized.numpy()
        example = tf.train.Example.FromString(raw)
        path = example.features.feature[RecordKeys.PATH].bytes_list.value[0].decode("utf-8")
        if path in paths:
            images[path] = decode_example(raw)[RecordKeys.IMAGE]
            if len(images) == len(paths):
                break
    return images


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def compact_overlay(png: bytes) -> bytes:
    """An RGB overlay PNG re-encoded with an OVERLAY_COLOURS palette (about half the bytes;
    the blend of gray and one colour map loses nothing visible)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        palette = image.convert("RGB").quantize(OVERLAY_COLOURS, Image.Quantize.MEDIANCUT)
    return _png(palette)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """uint8 [S, S] -> uint8 [T, T], T = min(S, THUMBNAIL_SIZE) (bilinear, antialiased)."""
    from PIL import Image

    size = min(image.shape[0], THUMBNAIL_SIZE)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def build_gallery(
    model, files: list[str], predictions: Predictions, rows: list[int] | None = None
) -> Gallery:
    """The gallery of `predictions` (the shard records of `files`, the model's input) with
    Grad-CAM overlays of `model` (a loaded Keras model) for each row's predicted class. A
    model Grad-CAM cannot cut (no nested backbone) gives an empty gallery with a note."""
    from PIL import Image

    from bonify.images import square_placement
    from serve.gradcam import gradcam, overlay_png

    rows = select_rows(predictions) if rows is None else rows
    if not rows:
        return Gallery(note="no images to show")
    images = decode_chosen(files, {str(predictions.image_paths[row]) for row in rows})
    batch = np.stack([images[str(predictions.image_paths[row])] for row in rows])
    predicted = predictions.pred_labels[rows]
    try:
        heatmaps, _ = gradcam(model, batch, class_index=predicted)
    except ValueError as error:
        return Gallery(note=f"no gallery: Grad-CAM cannot map this model ({error})")
    size = batch.shape[1]
    # The thumbnail is the whole model input, so the map is placed over the whole square.
    whole = square_placement(size, size, size, "stretch")
    items = []
    for row, image, heatmap in zip(rows, batch, heatmaps, strict=True):
        small = thumbnail(image[..., 0])
        items.append(
            GalleryItem(
                image_path=str(predictions.image_paths[row]),
                region=str(predictions.regions[row]),
                true_class=CLASS_NAMES[predictions.true_labels[row]],
                predicted_class=CLASS_NAMES[predictions.pred_labels[row]],
                confidence=float(predictions.confidences[row]),
                correct=bool(predictions.pred_labels[row] == predictions.true_labels[row]),
                image_png=_png(Image.fromarray(small)),
                overlay_png=compact_overlay(overlay_png(small, heatmap, whole, image_size=size)),
            )
        )
    return Gallery(items=tuple(items))


def gallery_for_model(
    model_path: str, data_dir: str, split: str, predictions: Predictions
) -> Gallery:
    """`build_gallery` for the .keras file `model_path` evaluated on `split` of `data_dir`."""
    from bonify.dataset import read_manifest
    from eval.predict import load_model, split_shards

    files = split_shards(data_dir, split, read_manifest(data_dir))
    return build_gallery(load_model(model_path), files, predictions)
