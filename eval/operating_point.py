"""The evaluator's operating point: which threshold and temperature a run uses, fitting both
on the validation split, and writing them into the model's card.

- threshold: --threshold, else the (first) model's card, else 0.5; it sets
  `study_level.at_operating_point` (every other call stays at 0.5).
- temperature: each model's card temperature is applied to that model's outputs before
  anything is computed (in-process and Beam alike); a --predictions file is taken as written
  (bonify-eval writes probabilities after the temperature).
- --fit_operating_point (validation only): `bonify.study_metrics.fit_operating_point` on the
  model's outputs before any temperature (an ensemble: on its averaged probabilities) ->
  `operating_point.fitted`; --update_model_card writes it into the card.

TensorFlow-free.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from bonify.cli import BonifyError
from bonify.model_card import (
    DEFAULT_TEMPERATURE,
    DEFAULT_THRESHOLD,
    load_card,
    set_operating_point,
)
from bonify.vocabulary import SPLIT_SOURCE_FOLDER
from eval.config import EvalConfig
from eval.errors import EvalError

if TYPE_CHECKING:  # the flag checks run before numpy/sklearn are imported
    from eval.predictions import Predictions

#: Who fitted an operating point written by the evaluator (the card's operating_point.source).
FITTED_BY = "bonify-eval --fit_operating_point"
#: An image of MURA's valid/ folder: bonify's test split, never to be fitted on.
_TEST_IMAGE = re.compile(rf"(^|/){SPLIT_SOURCE_FOLDER['test']}/XR_[A-Z]+/")


def check_fit_flags(config: EvalConfig) -> None:
    """EvalError (one line) for --fit_operating_point / --update_model_card used where they
    would fit on test data or have no card to write. TensorFlow-free; local paths only."""
    if config.fit_operating_point and config.model is not None and config.split != "validation":
        raise EvalError(
            f"--fit_operating_point fits the threshold and temperature on --split validation "
            f"(patient-disjoint from train); fitting on --split {config.split} would tune them "
            "to the data they are judged on"
        )
    if not config.update_model_card:
        return
    if not config.fit_operating_point:
        raise EvalError("--update_model_card writes what --fit_operating_point fits: give both")
    if config.model is None:
        raise EvalError(
            "--update_model_card writes into a model's card; with --predictions there is no "
            "model (evaluate the model with --model ... --split validation)"
        )
    if config.other_members:
        raise EvalError(
            "--update_model_card with several --model: an ensemble's operating point belongs "
            "to no single model's card (fit it without --update_model_card)"
        )


def check_card_to_update(model_file: str) -> None:
    """EvalError naming the model when --update_model_card has no card to write into."""
    try:
        card = load_card(model_file)
    except BonifyError as error:
        raise EvalError(f"--update_model_card: {error}") from None
    if card is None:
        raise EvalError(
            f"--update_model_card: {model_file} has no model_card.json beside it (a model "
            "from an older bonify): there is no card to write the operating point into"
        )


def check_not_test_images(predictions: Predictions, source: str) -> None:
    """EvalError when predictions to fit on hold an image of MURA's valid/ (test) folder."""
    for path in predictions.image_paths:
        if _TEST_IMAGE.search(path.replace("\\", "/")):
            raise EvalError(
                f"--fit_operating_point: {source} holds {path}, an image of MURA's "
                f"{SPLIT_SOURCE_FOLDER['test']}/ folder (bonify's test split); fit on the "
                "validation split's predictions"
            )


def resolve_operating_point(config: EvalConfig) -> dict:
    """metrics.json's `operating_point` (without `fitted`): threshold and its source
    ("--threshold", "model_card" or "default"), temperature and its source, and per member
    temperature of an ensemble. config.model and other_members are .keras files."""
    models = [config.model, *config.other_members] if config.model is not None else []
    cards = [load_card(model) for model in models]
    first = cards[0] if cards else None
    if config.threshold is not None:
        threshold, source = config.threshold, "--threshold"
    elif first is not None:
        threshold, source = first.threshold, "model_card"
    else:
        threshold, source = DEFAULT_THRESHOLD, "default"
    temperatures = [card.temperature if card else DEFAULT_TEMPERATURE for card in cards]
    result = {
        "threshold": threshold,
        "source": source,
        "temperature": temperatures[0] if temperatures else DEFAULT_TEMPERATURE,
        "temperature_source": (
            "predictions file as written"
            if not models
            else ("model_card" if first is not None else "default")
        ),
    }
    if source == "model_card":
        result["card_threshold_source"] = first.raw.get("threshold_source")
        result["model_card"] = first.path
    if len(models) > 1:
        result["member_temperatures"] = temperatures
    return result


def member_temperatures(operating_point: dict, count: int) -> list[float]:
    """The temperature of each of `count` members, in config.members order (predictions
    files are taken as written: all 1)."""
    return operating_point.get("member_temperatures", [operating_point["temperature"]] * count)


def with_temperature(predictions: Predictions, temperature: float) -> Predictions:
    """The same rows with probabilities softmax(log(probs) / temperature)."""
    from bonify.study_metrics import apply_temperature

    if temperature == DEFAULT_TEMPERATURE:
        return predictions
    return dataclasses.replace(predictions, probs=apply_temperature(predictions.probs, temperature))


def fit(raw: Predictions, config: EvalConfig) -> dict:
    """`operating_point.fitted`: the operating point fitted on `raw` (model outputs before
    any temperature), with `source` and `fitted_on`. EvalError when it cannot be fitted."""
    from bonify.study_metrics import fit_operating_point

    if config.predictions is not None:
        check_not_test_images(raw, f"--predictions {config.predictions}")
    try:
        fitted = fit_operating_point(raw.probs, raw.true_labels, raw.study_ids)
    except ValueError as error:
        raise EvalError(f"--fit_operating_point: {error}") from None
    on = {"split": config.split, "data_dir": config.data_dir} if config.model else {}
    if config.predictions is not None:
        on = {"predictions": config.predictions}
    on |= {"n_studies": fitted["n_studies"], "n_images": fitted["n_images"]}
    return {**fitted, "source": FITTED_BY, "fitted_on": on}


def update_model_card(model_file: str, fitted: dict) -> str:
    """Write `fitted` into the card of `model_file`; its path. EvalError when it cannot."""
    try:
        return set_operating_point(model_file, fitted)
    except BonifyError as error:
        raise EvalError(f"--update_model_card: {error}") from None


def _kappa(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summary_lines(metrics: dict) -> list[str]:
    """The operating point's lines of the printed summary (ASCII): study kappa at 0.5 and at
    the run's threshold, and what was fitted."""
    point = metrics.get("operating_point")
    if not point:
        return []
    study = metrics["study_level"]
    at_point = study["at_operating_point"]
    lines = [
        f"operating point: threshold {point['threshold']:g} ({point['source']}"
        + (f", {point['card_threshold_source']}" if point.get("card_threshold_source") else "")
        + f"), temperature {point['temperature']:g} ({point['temperature_source']})",
        f"study kappa: {_kappa(study['kappa'])} at threshold 0.5, "
        f"{_kappa(at_point['kappa'])} at the operating point {point['threshold']:g}",
    ]
    fitted = point.get("fitted")
    if fitted:
        lines.append(
            f"fitted on this split: threshold {fitted['threshold']:.4f} (study kappa "
            f"{_kappa(fitted['kappa_at_default_threshold'])} at 0.5 -> "
            f"{_kappa(fitted['kappa_at_threshold'])}), Youden threshold "
            f"{fitted['youden_threshold']:.4f}, temperature {fitted['temperature']:.4f} "
            f"(top-1 ECE {fitted['ece_before']:.4f} -> {fitted['ece_after']:.4f})"
        )
    if point.get("model_card_updated"):
        lines.append(f"model card updated: {point['model_card_updated']}")
    return lines
