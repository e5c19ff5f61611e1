"""The serving core shared by `bonify-predict`, `bonify-serve` (HTTP API) and `bonify-app`.

A `Predictor` is one or several trained models (an ensemble: their cards must agree on the
input) loaded once, with the input spec and operating threshold of the first one's card.
It answers image file bytes the way `bonify-predict` does: decoded through
`bonify.images.to_model_input` (the Beam job's own image path), probabilities averaged over
the models (and the mirror image with tta="flip"), region/status/top-3 from
`serve.studies`, Grad-CAM overlays from `serve.gradcam`. Nothing here is a second
implementation of those: this module only wires them together for callers that hold bytes.

Model-free parts (decoding, the study block) import no TensorFlow; `Predictor.load` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import threading
from collections.abc import Sequence

import numpy as np

from bonify.model_card import (
    DEFAULT_TEMPERATURE,
    DEFAULT_THRESHOLD,
    InputSpec,
    ModelCard,
    input_spec_for,
    load_card,
    resolve_model,
)
from bonify.vocabulary import CLASS_NAMES
from serve.inputs import PredictError


class ServeError(PredictError):
    """A model that cannot be served (ensemble inputs disagree, file will not load...); a
    PredictError, so bonify-predict reports it exactly as before."""


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """One upload decoded: model input uint8 [S, S], the source-size gray image, DICOM ids."""

    name: str
    model_input: np.ndarray
    original: np.ndarray
    dicom_ids: dict | None


@dataclasses.dataclass(frozen=True)
class Rejection:
    """An upload that is not a usable image: `reason` is a bonify.images rejection code."""

    name: str
    reason: str
    detail: str

    def to_json(self) -> dict:
        return {"file": self.name, "reason": self.reason, "detail": self.detail}


@dataclasses.dataclass(frozen=True)
class ImageAnswer:
    """The model's answer for one image.

    probs: float64 [14] in CLASS_NAMES order; original: the decoded uint8 gray [H, W];
    overlay_png: the Grad-CAM overlay (PNG bytes, the original's size) when asked for.
    """

    name: str
    probs: np.ndarray
    region: str
    status: str
    p_abnormal: float
    confidence: float
    top3: tuple[tuple[str, float], ...]
    original: np.ndarray
    dicom_ids: dict | None = None
    overlay_png: bytes | None = None

    @property
    def probabilities(self) -> dict[str, float]:
        """The 14 probabilities by class name."""
        return {name: float(p) for name, p in zip(CLASS_NAMES, self.probs, strict=True)}

    def to_json(self) -> dict:
        """A JSON-ready dict (no image arrays; the overlay is the caller's to encode)."""
        return {
            "file": self.name,
            "region": self.region,
            "status": self.status,
            "p_abnormal": self.p_abnormal,
            "confidence": self.confidence,
            "top3": [{"class": name, "probability": p} for name, p in self.top3],
            "probabilities": self.probabilities,
        }


def decode_upload(data: bytes, name: str, spec: InputSpec) -> DecodedImage | Rejection:
    """Decode one upload the way the Beam job does; never raises for bad bytes."""
    from bonify.images import ImageRejected, decode_to_gray, dicom_identifiers, resize_square

    try:
        original = decode_to_gray(data, filename=name)
        model_input = resize_square(original, spec.image_size, spec.resize)
    except ImageRejected as rejected:
        return Rejection(name, rejected.reason, rejected.detail)
    return DecodedImage(name, model_input, original, dicom_identifiers(data, filename=name))


def study_block(answers: Sequence[ImageAnswer], threshold: float, left_out: int = 0) -> dict:
    """The study of several images: mean P(abnormal), the verdict at the threshold and the
    majority region (serve.studies.study_rows, all answers taken as one study); `left_out`
    counts the study's files that could not be read (not in the mean)."""
    from serve.studies import study_rows

    if not answers:
        raise ValueError("a study needs at least one answered image")
    probs = np.stack([answer.probs for answer in answers])
    paths = [answer.name for answer in answers]
    (row,) = study_rows(paths, [("study", "")] * len(answers), probs, threshold)
    return {
        "images": row["images"],
        "region": row["region"],
        "p_abnormal": row["p_abnormal"],
        "threshold": row["threshold"],
        "verdict": row["verdict"],
        "left_out": left_out,
    }


def add_model_argument(parser: argparse.ArgumentParser, help_more: str = "") -> None:
    """The repeatable --model flag of bonify-predict, bonify-serve and bonify-app."""
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="MODEL",
        help="a JOB folder, JOB/model, or a .keras file; repeat for an ensemble" + help_more,
    )


def check_model_paths(
    model_paths: Sequence[str], image_size: int | None = None, resize: str | None = None
) -> tuple[tuple[str, ...], InputSpec, ModelCard | None]:
    """Resolved .keras files, their common input spec and the first one's card; one-line
    BonifyErrors (no TensorFlow imported) for a missing model, a bad card or an ensemble
    whose inputs disagree."""
    if not model_paths:
        raise ServeError("give at least one --model")
    model_files = tuple(resolve_model(path) for path in model_paths)
    specs = [input_spec_for(file, image_size, resize) for file in model_files]
    for file, spec in zip(model_files[1:], specs[1:], strict=True):
        if spec != specs[0]:
            raise ServeError(
                f"--model {file} takes {describe_spec(spec)} but --model {model_files[0]} "
                f"takes {describe_spec(specs[0])}: an ensemble needs models with the same input"
            )
    return model_files, specs[0], load_card(model_files[0])


def describe_spec(spec: InputSpec) -> str:
    return f"{spec.image_size} px ({spec.resize}, {len(spec.class_names)} classes)"


def load_models(model_files: Sequence[str], spec: InputSpec, error=ServeError) -> list:
    """The Keras models, each checked to take uint8 [batch, S, S, 1] images of the spec."""
    import keras

    models = []
    for file in model_files:
        try:
            model = keras.saving.load_model(file)
        except (ValueError, OSError, TypeError) as problem:
            first_line = str(problem).strip().splitlines()[0] if str(problem).strip() else ""
            raise error(f"--model {file}: cannot load ({first_line})") from None
        shape = tuple(model.input_shape)
        expected = (spec.image_size, spec.image_size, 1)
        if len(shape) != 4 or tuple(shape[1:]) != expected:
            said_by = "its model card" if load_card(file) else "--image_size"
            raise error(
                f"--model {file}: model input is {list(shape[1:])} but {said_by} says "
                f"{list(expected)}"
            )
        models.append(model)
    return models


def model_temperatures(model_files: Sequence[str]) -> tuple[float, ...]:
    """Each model's calibration temperature from its card (1.0 for a model without one)."""
    temperatures = []
    for file in model_files:
        card = load_card(file)
        temperatures.append(card.temperature if card else DEFAULT_TEMPERATURE)
    return tuple(temperatures)


def predict_probabilities(
    models: Sequence,
    images: np.ndarray,
    tta: str,
    batch_size: int,
    temperatures: Sequence[float] | None = None,
):
    """float64 [B, 14]: the mean over models of each model's softmax, averaged over the TTA
    views (bonify.tta) and then calibrated by its card's temperature (softmax(log p / T),
    bonify.study_metrics.apply_temperature; T = 1 leaves it as is), in the evaluator's order.
    images: uint8 [B, S, S, 1], B <= batch_size."""
    from bonify.study_metrics import apply_temperature
    from bonify.tta import predict_on_batch

    count = len(images)
    if count < batch_size:
        # One shape for every call: a short last batch would trace the model again.
        padding = np.zeros((batch_size - count, *images.shape[1:]), dtype=images.dtype)
        images = np.concatenate([images, padding])
    if temperatures is None:
        temperatures = [DEFAULT_TEMPERATURE] * len(models)
    probs = sum(
        apply_temperature(predict_on_batch(model, images, tta), temperature)
        for model, temperature in zip(models, temperatures, strict=True)
    ) / len(models)
    return probs[:count]


def padded_size(count: int, batch_size: int) -> int:
    """The batch shape `count` images are padded to: the next power of two, at most
    batch_size (a handful of traced shapes instead of one per count, and a lone image is
    not padded to a whole batch)."""
    size = 1
    while size < count:
        size *= 2
    return max(count, min(size, batch_size))


class Predictor:
    """Models loaded once, answering image bytes. Thread-safe: model calls (predictions and
    Grad-CAM) take one lock, since Keras models are not made for concurrent calls and
    Streamlit runs each browser session in its own thread; decoding runs unlocked."""

    def __init__(
        self,
        models: Sequence,
        model_files: Sequence[str],
        spec: InputSpec,
        card: ModelCard | None,
        batch_size: int = 32,
        temperatures: Sequence[float] | None = None,
    ):
        self.models = list(models)
        self.model_files = tuple(model_files)
        self.spec = spec
        self.card = card
        self.threshold = card.threshold if card else DEFAULT_THRESHOLD
        self.batch_size = batch_size
        # Each model's card temperature, applied to its outputs: every caller (bonify-predict,
        # the API, the app) reports the calibrated probabilities the threshold was fitted on.
        self.temperatures = tuple(temperatures or [DEFAULT_TEMPERATURE] * len(self.models))
        self._model_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model_paths: Sequence[str],
        image_size: int | None = None,
        resize: str | None = None,
        batch_size: int = 32,
    ) -> Predictor:
        """Resolve (JOB folder, JOB/model or .keras), read the cards and load every model."""
        model_files, spec, card = check_model_paths(model_paths, image_size, resize)
        models = load_models(model_files, spec)
        return cls(models, model_files, spec, card, batch_size, model_temperatures(model_files))

    def predict_arrays(self, images: np.ndarray, tta: str = "none") -> np.ndarray:
        """float32 [B, 14] for uint8 [B, S, S, 1] model inputs, in batches of batch_size."""
        images = np.asarray(images, dtype=np.uint8)
        if images.ndim == 3:
            images = images[..., np.newaxis]
        outputs = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            size = padded_size(len(chunk), self.batch_size)
            with self._model_lock:
                outputs.append(
                    predict_probabilities(self.models, chunk, tta, size, self.temperatures)
                )
        if not outputs:
            return np.zeros((0, len(CLASS_NAMES)), np.float32)
        return np.concatenate(outputs).astype(np.float32)

    def decode(self, data: bytes, name: str) -> DecodedImage | Rejection:
        return decode_upload(data, name, self.spec)

    def answer_decoded(
        self,
        decoded: Sequence[DecodedImage],
        gradcam: bool = False,
        probs: np.ndarray | None = None,
        tta: str = "none",
    ) -> list[ImageAnswer]:
        """Answers for decoded images (probs: already predicted, e.g. by a micro-batch)."""
        from serve.studies import image_verdicts

        if not decoded:
            return []
        images = np.stack([item.model_input for item in decoded])[..., np.newaxis]
        if probs is None:
            probs = self.predict_arrays(images, tta)
        probs = np.asarray(probs, dtype=np.float64)
        overlays: list[bytes | None] = [None] * len(decoded)
        if gradcam:
            overlays = self.overlays(decoded, images, probs)
        verdicts = image_verdicts([item.name for item in decoded], probs, self.threshold)
        return [
            ImageAnswer(
                name=item.name,
                probs=row,
                region=verdict.region,
                status=verdict.status,
                p_abnormal=verdict.p_abnormal,
                confidence=verdict.confidence,
                top3=verdict.top3,
                original=item.original,
                dicom_ids=item.dicom_ids,
                overlay_png=overlay,
            )
            for item, row, verdict, overlay in zip(decoded, probs, verdicts, overlays, strict=True)
        ]

    def overlays(self, decoded: Sequence[DecodedImage], images: np.ndarray, probs) -> list[bytes]:
        """Grad-CAM overlay PNGs (first model) for the class the ensemble chose."""
        from bonify.images import square_placement
        from serve.gradcam import gradcam, overlay_png

        with self._model_lock:
            heatmaps, _ = gradcam(
                self.models[0], images, class_index=np.asarray(probs).argmax(axis=1)
            )
        result = []
        for item, heatmap in zip(decoded, heatmaps, strict=True):
            height, width = item.original.shape
            placement = square_placement(height, width, self.spec.image_size, self.spec.resize)
            result.append(overlay_png(item.original, heatmap, placement))
        return result

    def answer(
        self, data: bytes, name: str, gradcam: bool = False, tta: str = "none"
    ) -> ImageAnswer | Rejection:
        """One upload's answer, or its Rejection (never raises for bad bytes)."""
        decoded = self.decode(data, name)
        if isinstance(decoded, Rejection):
            return decoded
        return self.answer_decoded([decoded], gradcam=gradcam, tta=tta)[0]

    def answer_many(
        self, uploads: Sequence[tuple[str, bytes]], gradcam: bool = False, tta: str = "none"
    ) -> list[ImageAnswer | Rejection]:
        """Answers for (name, bytes) uploads in order, the readable ones in one model call."""
        decoded = [self.decode(data, name) for name, data in uploads]
        readable = [item for item in decoded if isinstance(item, DecodedImage)]
        answers = iter(self.answer_decoded(readable, gradcam=gradcam, tta=tta))
        return [item if isinstance(item, Rejection) else next(answers) for item in decoded]

    def study(self, answers: Sequence[ImageAnswer | Rejection]) -> dict:
        """The study block of the answered images; rejections are left out of it and
        counted in its "left_out"."""
        answered = [a for a in answers if isinstance(a, ImageAnswer)]
        return study_block(answered, self.threshold, left_out=len(answers) - len(answered))

    def card_json(self) -> dict:
        """The model card as served: the card's JSON, or what is known without one."""
        if self.card is not None:
            return self.card.raw
        return {
            "input_spec": {
                "image_size": self.spec.image_size,
                "resize": self.spec.resize,
                "class_names": list(self.spec.class_names),
            },
            "threshold": self.threshold,
            "note": "this model has no model card",
        }
