"""The model card: what a trained model takes, what it was trained on, how well it did, and
what it is (not) for. The trainer writes it beside `final.keras`; everything that uses a
model (evaluator, predict, the export) reads the image size and resize mode from it, so no
flag can make a model see other pixels than it was trained on.

`JOB/model/model_card.json` (read by programs) and `model_card.md` (the same, for people):

- `input_spec`: dtype uint8, channels 1 (gray), image_size, resize ("pad" | "stretch"),
  class_names in output order, the record schema_version.
- `bonify_version`, `created_utc`.
- `config`: the resolved config and `sha256`, the hash of the UTF-8 bytes of the text the
  trainer wrote to `JOB/config.yaml` (so `sha256sum JOB/config.yaml` gives the same value).
- `training_data`: the Beam job's manifest.json (path, its sha256 over the file's bytes,
  settings, per-split counts).
- `validation`: per phase, the best validation accuracy / loss and their epoch (the rows of
  `JOB/training_state.json`).
- `threshold`: the operating point for the abnormal call (P(abnormal) >= threshold),
  DEFAULT_THRESHOLD until an operating point is fitted (`threshold_source` says which).
- `temperature`: the model's probabilities are softmax(log(output) / temperature) (1.0, the
  outputs as they are, until fitted); whoever reports probabilities applies it
  (`bonify.study_metrics.apply_temperature`).
- `operating_point`: how the threshold and temperature were fitted (split, data, kappa at the
  threshold, Youden's threshold, ECE before/after), or null; `set_operating_point` writes it.
- `intended_use`, `limitations`.

This module is TensorFlow-free (JSON and Markdown); gs:// paths go through tf.io.gfile,
imported only for them.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math

import bonify
from bonify import files
from bonify.cli import BonifyError
from bonify.images import RESIZE_MODES
from bonify.vocabulary import CLASS_NAMES, NUM_REGIONS, SCHEMA_VERSION

CARD_FILE = "model_card.json"
CARD_MARKDOWN_FILE = "model_card.md"
#: P(abnormal) at or above which a study or image is called abnormal, until calibrated.
DEFAULT_THRESHOLD = 0.5
#: The model's outputs are its probabilities until a temperature is fitted.
DEFAULT_TEMPERATURE = 1.0
#: Version of the card's own layout (bumped when a key changes meaning).
CARD_VERSION = 1
#: The trainer's final model inside JOB/model/.
MODEL_FILE = "final.keras"
MODEL_DIR = "model"

INTENDED_USE = (
    "Research on musculoskeletal radiograph classification; not a medical device and not "
    "for clinical decisions."
)


class ModelCardError(BonifyError):
    """A model path without a model, a card that cannot be read, or a card that disagrees
    with explicit flags or data (the message names both sides)."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a model takes: uint8 [batch, image_size, image_size, channels] gray images made
    from source images with `resize` ("pad" keeps the aspect ratio, "stretch" does not);
    its outputs are probabilities over `class_names`, in that order."""

    image_size: int
    resize: str
    class_names: tuple[str, ...]
    schema_version: int
    dtype: str = "uint8"
    channels: int = 1


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """A card read from `path`: its input spec, threshold and temperature, typed; `raw` is the
    whole JSON."""

    input_spec: InputSpec
    threshold: float
    raw: dict
    path: str
    temperature: float = DEFAULT_TEMPERATURE


def resolve_model(path: str) -> str:
    """The .keras file meant by `path`: a .keras file itself, a JOB/model folder (its
    final.keras) or a JOB folder (JOB/model/final.keras). ModelCardError naming `path` when
    there is none."""
    if path.endswith(".keras"):
        if files.isfile(path):
            return path
        raise ModelCardError(f"{path}: file not found")
    if not files.isdir(path):
        raise ModelCardError(f"{path}: no such file or folder")
    for candidate in (
        files.join(path, MODEL_FILE),
        files.join(files.join(path, MODEL_DIR), MODEL_FILE),
    ):
        if files.isfile(candidate):
            return candidate
    raise ModelCardError(
        f"{path}: a folder without {MODEL_FILE} or {MODEL_DIR}/{MODEL_FILE} "
        "(give a .keras file, a job folder or its model folder; has the training finished?)"
    )


def card_path(model_file: str) -> str:
    """Where the card of `model_file` lives: model_card.json in the same folder."""
    return files.join(files.dirname(model_file), CARD_FILE)


def card_from_json(raw: object, path: str) -> ModelCard:
    """A typed ModelCard from a card's parsed JSON; ModelCardError naming `path` and the key."""

    def invalid(key: str, problem: str) -> ModelCardError:
        return ModelCardError(f"{path}: not a valid model card: key '{key}' {problem}")

    if not isinstance(raw, dict):
        raise ModelCardError(f"{path}: not a valid model card (not a JSON object)")
    spec = raw.get("input_spec")
    if not isinstance(spec, dict):
        raise invalid("input_spec", "is missing or not a JSON object")
    image_size = spec.get("image_size")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise invalid("input_spec.image_size", f"must be a positive integer, got {image_size!r}")
    resize = spec.get("resize")
    if resize not in RESIZE_MODES:
        raise invalid(
            "input_spec.resize", f"must be one of {', '.join(RESIZE_MODES)}, got {resize!r}"
        )
    class_names = spec.get("class_names")
    if not isinstance(class_names, list) or not all(isinstance(n, str) for n in class_names):
        raise invalid("input_spec.class_names", "must be a list of class names")
    threshold = raw.get("threshold", DEFAULT_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise invalid("threshold", f"must be a number, got {threshold!r}")
    if not 0.0 <= threshold <= 1.0:
        raise invalid("threshold", f"must be between 0 and 1, got {threshold!r}")
    temperature = raw.get("temperature", DEFAULT_TEMPERATURE)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise invalid("temperature", f"must be a positive number, got {temperature!r}")
    operating_point = raw.get("operating_point")
    if operating_point is not None and not isinstance(operating_point, dict):
        raise invalid("operating_point", "must be a JSON object or null")
    input_spec = InputSpec(
        image_size=image_size,
        resize=resize,
        class_names=tuple(class_names),
        schema_version=int(spec.get("schema_version", SCHEMA_VERSION)),
        dtype=str(spec.get("dtype", "uint8")),
        channels=int(spec.get("channels", 1)),
    )
    return ModelCard(
        input_spec=input_spec,
        threshold=float(threshold),
        raw=raw,
        path=path,
        temperature=float(temperature),
    )


def load_card(model_file: str) -> ModelCard | None:
    """The card beside `model_file` (a .keras path), or None when it has none (a model from
    an older bonify). ModelCardError when the card exists but cannot be read."""
    path = card_path(model_file)
    if not files.isfile(path):
        return None
    try:
        raw = json.loads(files.read_text(path))
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelCardError(f"{path}: not a valid model card (not JSON: {error})") from None
    return card_from_json(raw, path)


def input_spec_for(
    model_file: str, image_size: int | None = None, resize: str | None = None
) -> InputSpec:
    """The input spec a consumer must use for `model_file`.

    With a card: the card's spec; an explicit image_size or resize that disagrees with it is
    a ModelCardError naming both. Without a card: only explicit image_size AND resize work
    (the class names are then this bonify's); otherwise a ModelCardError saying so.
    """
    if resize is not None and resize not in RESIZE_MODES:
        raise ModelCardError(f"--resize {resize}: must be one of {', '.join(RESIZE_MODES)}")
    if image_size is not None and image_size <= 0:
        raise ModelCardError(f"--image_size must be positive, got {image_size}")
    card = load_card(model_file)
    if card is None:
        if image_size is None or resize is None:
            raise ModelCardError(
                f"{model_file} has no {CARD_FILE} beside it (a model from an older bonify): "
                "give its input with --image_size and --resize"
            )
        return InputSpec(image_size, resize, tuple(CLASS_NAMES), SCHEMA_VERSION)
    spec = card.input_spec
    for flag, value, carded in (
        ("--image_size", image_size, spec.image_size),
        ("--resize", resize, spec.resize),
    ):
        if value is not None and value != carded:
            raise ModelCardError(
                f"{flag} {value} disagrees with {card.path} ({flag.lstrip('-')} {carded}): "
                f"drop {flag}, the card says how the model was trained"
            )
    return spec


def spec_mismatch(spec: InputSpec, image_size: int, resize: str) -> str | None:
    """None when data of `image_size`/`resize` fits `spec`, else what differs
    ("image_size 128 vs 64"), for a one-line error naming both sides."""
    differences = [
        f"{name} {ours} vs {theirs}"
        for name, ours, theirs in (
            ("image_size", spec.image_size, image_size),
            ("resize", spec.resize, resize),
        )
        if ours != theirs
    ]
    return ", ".join(differences) or None


# ---- building and writing a card (the trainer) ---------------------------------------------


def text_sha256(text: str) -> str:
    """Hex sha256 of `text` encoded as UTF-8 (the bytes of a file written with that text)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def limitations(manifest_raw: dict) -> list[str]:
    """The known limitations of a model trained on the data `manifest_raw` describes."""
    regions = manifest_raw.get("regions") or []
    count = len(regions) or NUM_REGIONS
    listed = f" ({', '.join(r.lower() for r in regions)})" if regions else ""
    return [
        "Trained on data in the MURA v1.1 layout; if that data was generated by "
        "bonify-sample (synthetic radiographs), the model says nothing about real X-rays.",
        f"Only the {count} upper-limb regions of MURA{listed}; other body parts, views or "
        "modalities get a confident but meaningless answer.",
        "Not validated clinically; no prospective or external-site evaluation.",
        "Performance figures here are validation-split figures (the split used to pick the "
        "best epoch, so they are optimistic); test-split figures come from bonify-eval.",
        "The abnormal call uses one threshold for every region; it is not calibrated unless "
        "the card says so.",
    ]


def build_card(
    *,
    config: dict,
    config_text: str,
    manifest,
    phase_rows: list[dict],
    threshold: float = DEFAULT_THRESHOLD,
    created_utc: str | None = None,
) -> dict:
    """The card's JSON content for a finished training run.

    config: the resolved config; config_text: the exact text written to JOB/config.yaml
    (its UTF-8 sha256 is the config hash); manifest: the bonify.dataset.Manifest trained
    on (`.raw`, `.sha256`, `.path`); phase_rows: training_state.json's `phases` rows.
    """
    created_utc = created_utc or datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    raw = manifest.raw
    return {
        "card_version": CARD_VERSION,
        "created_utc": created_utc,
        "bonify_version": bonify.__version__,
        "model_file": MODEL_FILE,
        "input_spec": {
            "dtype": "uint8",
            "channels": 1,
            "color": "gray",
            "image_size": int(manifest.image_size),
            "resize": manifest.resize,
            "class_names": list(CLASS_NAMES),
            "schema_version": int(manifest.schema_version),
        },
        "output": "float32 softmax probabilities over input_spec.class_names",
        "threshold": float(threshold),
        "threshold_source": "default" if threshold == DEFAULT_THRESHOLD else "calibration",
        "temperature": DEFAULT_TEMPERATURE,
        "operating_point": None,
        "config": {"file": "config.yaml", "sha256": text_sha256(config_text), "values": config},
        "training_data": {
            "manifest": manifest.path,
            "manifest_sha256": manifest.sha256,
            "input_dir": raw.get("input_dir"),
            "settings": {
                key: raw.get(key)
                for key in ("image_size", "resize", "encoding", "split_seed", "val_fraction")
            },
            "splits": {
                split: {
                    "images": info.images,
                    "studies": info.studies,
                    "patients": info.patients,
                    "class_counts": dict(info.class_counts),
                }
                for split, info in manifest.splits.items()
            },
            "rejected": raw.get("rejected"),
            "preprocessed_with_bonify": raw.get("bonify_version"),
        },
        "validation": [
            {
                "phase": number,
                "name": row["name"],
                "epochs_completed": row["epochs_completed"],
                "best_val_accuracy": row["best_val_accuracy"],
                "best_val_loss": row.get("best_val_loss"),
                "best_val_study_kappa": row.get("best_val_study_kappa"),
                "best_epoch": row["best_epoch"],
            }
            for number, row in enumerate(phase_rows, start=1)
        ],
        "intended_use": INTENDED_USE,
        "limitations": limitations(raw),
    }


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _operating_point_lines(fitted: dict | None) -> list[str]:
    if not fitted:
        return []
    on = fitted.get("fitted_on") or {}
    where = ", ".join(
        f"{key} {on[key]}" for key in ("split", "data_dir", "n_studies", "n_images") if key in on
    )
    return [
        f"- operating point fitted by {fitted.get('source', 'n/a')} on {where or 'n/a'}: "
        f"study kappa {_number(fitted.get('kappa_at_threshold'))} at the threshold, Youden's J "
        f"threshold {_number(fitted.get('youden_threshold'))}, top-1 ECE "
        f"{_number(fitted.get('ece_before'))} -> {_number(fitted.get('ece_after'))} with the "
        "temperature"
    ]


def card_markdown(card: dict) -> str:
    """The readable `model_card.md` of a card's JSON content. A section whose key the card
    lacks (a hand-written card with only `input_spec`) is left out; a missing value is n/a."""
    spec = {"dtype": "uint8", "channels": 1, "schema_version": SCHEMA_VERSION,
            "class_names": list(CLASS_NAMES), **card["input_spec"]}  # fmt: skip
    lines = [
        "# Model card",
        "",
        f"Created {card.get('created_utc', 'n/a')} by bonify {card.get('bonify_version', 'n/a')}. "
        f"Model file: `{card.get('model_file', MODEL_FILE)}`.",
        "",
    ]
    if "intended_use" in card:
        lines += ["## Intended use", "", card["intended_use"], ""]
    lines += [
        "## Input",
        "",
        f"- {spec['dtype']} gray images, {spec['image_size']} x {spec['image_size']} x "
        f"{spec['channels']}, made from the source image with resize `{spec['resize']}`",
        f"- record schema version {spec['schema_version']}",
        f"- output: {card.get('output', 'softmax probabilities')}: "
        f"{', '.join(spec['class_names'])}",
        f"- abnormal call: P(abnormal) >= {card.get('threshold', DEFAULT_THRESHOLD)} "
        f"({card.get('threshold_source', 'default')})",
        f"- probabilities: softmax(log(output) / {card.get('temperature', DEFAULT_TEMPERATURE)})"
        " (temperature 1: the outputs as they are)",
        *_operating_point_lines(card.get("operating_point")),
        "",
    ]
    if "validation" in card:
        lines += [
            "## Validation (best epoch per phase)",
            "",
            "| phase | name | epochs | best val accuracy | best val loss | best val study kappa "
            "| best epoch |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in card["validation"]:
            lines.append(
                f"| {row['phase']} | {row['name']} | {row['epochs_completed']} | "
                f"{_number(row['best_val_accuracy'])} | {_number(row['best_val_loss'])} | "
                f"{_number(row.get('best_val_study_kappa'))} | {row['best_epoch']} |"
            )
        lines.append("")
    if "training_data" in card:
        data = card["training_data"]
        lines += [
            "## Training data",
            "",
            f"- manifest: `{data['manifest']}` (sha256 `{data['manifest_sha256']}`)",
            f"- source: `{data['input_dir']}`; settings: "
            + ", ".join(f"{key} {value}" for key, value in data["settings"].items()),
            "",
            "| split | images | studies | patients |",
            "|---|---|---|---|",
        ]
        for split, info in data["splits"].items():
            lines.append(f"| {split} | {info['images']} | {info['studies']} | {info['patients']} |")
        lines.append("")
    if "config" in card:
        lines += [
            "## Configuration",
            "",
            f"`{card['config']['file']}` sha256 `{card['config']['sha256']}` (the resolved "
            "config is in model_card.json under `config.values`).",
            "",
        ]
    if "limitations" in card:
        lines += ["## Known limitations", "", *(f"- {item}" for item in card["limitations"]), ""]
    return "\n".join(lines)


def write_card(model_dir: str, card: dict) -> None:
    """Write `model_card.json` and `model_card.md` into `model_dir` (local or gs://), each
    atomically; the JSON last, so a present JSON always has its Markdown beside it."""
    card_from_json(card, files.join(model_dir, CARD_FILE))  # never write a card no one can read
    files.write_text_atomically(files.join(model_dir, CARD_MARKDOWN_FILE), card_markdown(card))
    files.write_text_atomically(
        files.join(model_dir, CARD_FILE), json.dumps(card, indent=2, allow_nan=False) + "\n"
    )


def set_operating_point(model_file: str, fitted: dict) -> str:
    """Write a fitted operating point into the card beside `model_file` (a .keras path).

    fitted: `bonify.study_metrics.fit_operating_point`'s dict plus `source` (who fitted it,
    e.g. "bonify-eval" or "trainer") and `fitted_on` {"split", "data_dir", "n_studies",
    "n_images"}; its `threshold` and `temperature` become the card's, `threshold_source`
    becomes "fitted", and the whole dict its `operating_point`. Rewrites model_card.json and
    model_card.md atomically and returns the card's path. ModelCardError when the model has
    no card (nothing is created) or the threshold/temperature are invalid.
    """
    card = load_card(model_file)
    if card is None:
        raise ModelCardError(
            f"{model_file} has no {CARD_FILE} beside it (a model from an older bonify): "
            "there is no card to write the operating point into"
        )
    raw = dict(card.raw)
    raw["threshold"] = fitted.get("threshold")
    raw["threshold_source"] = "fitted"
    raw["temperature"] = fitted.get("temperature")
    raw["operating_point"] = dict(fitted)
    try:
        write_card(files.dirname(card.path), raw)
    except ModelCardError as error:
        raise ModelCardError(f"operating point not written: {error}") from None
    return card.path
