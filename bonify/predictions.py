"""The predictions file: the contract between every stage that runs a model and the evaluator.

One row per image. `bonify-eval` writes it (from shards) and reads it (`--predictions`);
`bonify-predict` writes it for new radiographs. Required columns: `image_path`, `true_label`
(0-13) and `prob_<CLASS_NAME>` for each of the 14 classes in vocabulary order. A file can be
scored only when every `image_path` contains `XR_<REGION>/patient<ID>/study<N>_<suffix>/` and
every `true_label` is filled; `bonify-predict` leaves `true_label` (and the columns derived from
it) empty for images outside the MURA layout. `region`, `patient_id` and `study_id` are taken
from the file when present, else derived from the path. Written files add the derived and
predicted columns (see `WRITTEN_COLUMNS`).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bonify.cli import BonifyError
from bonify.vocabulary import CLASS_NAMES, NUM_CLASSES, REGIONS, label_of, parse_study_path

PROB_COLUMNS: tuple[str, ...] = tuple(f"prob_{name}" for name in CLASS_NAMES)
REQUIRED_COLUMNS: tuple[str, ...] = ("image_path", "true_label", *PROB_COLUMNS)
OPTIONAL_COLUMNS: tuple[str, ...] = ("region", "patient_id", "study_id")
WRITTEN_COLUMNS: tuple[str, ...] = (
    "image_path",
    "region",
    "patient_id",
    "study_id",
    "true_label",
    "true_class",
    "pred_label",
    "pred_class",
    "confidence",
    "correct",
    *PROB_COLUMNS,
)

#: Probabilities of one row must sum to 1 within this tolerance (float32 softmax is ~1e-6 off).
PROBABILITY_SUM_TOLERANCE = 1e-3


class PredictionsError(BonifyError):
    """A predictions file or table that breaks the contract; the message names row and column."""


@dataclasses.dataclass(frozen=True)
class Predictions:
    """One model's class probabilities for a set of images (N rows, same order everywhere).

    image_paths, regions, patient_ids, study_ids: N strings each (region is a name of REGIONS,
    study_id as `StudyKey.study_id`). true_labels: int64 [N] in 0..13.
    probs: float64 [N, 14] in CLASS_NAMES order, each row summing to 1.
    """

    image_paths: np.ndarray
    true_labels: np.ndarray
    probs: np.ndarray
    regions: np.ndarray
    patient_ids: np.ndarray
    study_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.true_labels)

    @property
    def pred_labels(self) -> np.ndarray:
        """int64 [N]: the arg-max class of each row."""
        return self.probs.argmax(axis=1).astype(np.int64)

    @property
    def confidences(self) -> np.ndarray:
        """float64 [N]: the probability of the predicted class."""
        return self.probs.max(axis=1)

    def sorted_by_path(self) -> Predictions:
        """The same rows ordered by image_path, so both inference modes write identical files."""
        order = np.argsort(self.image_paths, kind="stable")
        return Predictions(
            **{f.name: getattr(self, f.name)[order] for f in dataclasses.fields(self)}
        )


def check_probabilities(probs: np.ndarray, count: int, source: str) -> np.ndarray:
    """float64 [count, 14] probabilities, each row in [0, 1] summing to 1; else PredictionsError."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (count, NUM_CLASSES):
        raise PredictionsError(
            f"{source}: probabilities have shape {probs.shape}, expected ({count}, 14)"
        )
    bad_rows, bad_columns = np.nonzero(~np.isfinite(probs) | (probs < 0) | (probs > 1))
    if len(bad_rows):
        row, column = bad_rows[0], bad_columns[0]
        raise PredictionsError(
            f"{source}: row {row + 1}, column {PROB_COLUMNS[column]}: "
            f"{probs[row, column]!r} is not a probability in [0, 1]"
        )
    sums = probs.sum(axis=1)
    off = np.nonzero(np.abs(sums - 1.0) > PROBABILITY_SUM_TOLERANCE)[0]
    if len(off):
        raise PredictionsError(
            f"{source}: row {off[0] + 1}, columns prob_*: probabilities sum to {sums[off[0]]:.6f}, "
            "not 1 (expected softmax outputs)"
        )
    return probs


def _check_unique_paths(image_paths: np.ndarray, source: str) -> None:
    first_row: dict[str, int] = {}
    for row, path in enumerate(image_paths):
        # A repeated image would count twice in every metric.
        if path in first_row:
            raise PredictionsError(
                f"{source}: row {row + 1}, column image_path: {path!r} repeats row {first_row[path] + 1}"
            )
        first_row[path] = row


def make_predictions(
    image_paths, true_labels, probs, patient_ids=None, study_ids=None, regions=None, source="input"
) -> Predictions:
    """Build validated `Predictions`; region, patient and study come from the paths when None.

    Raises PredictionsError naming `source`, the 1-based data row and the column of the first
    problem.
    """
    image_paths = np.asarray([str(path) for path in image_paths], dtype=object)
    true_labels = np.asarray(true_labels)
    count = len(image_paths)
    if count == 0:
        raise PredictionsError(f"{source}: no predictions (zero rows)")
    if np.asarray(probs).shape != (count, NUM_CLASSES):
        raise PredictionsError(
            f"{source}: probabilities have shape {np.asarray(probs).shape}, expected ({count}, 14)"
        )
    _check_unique_paths(image_paths, source)
    keys = []
    for row, path in enumerate(image_paths):
        try:
            keys.append(parse_study_path(path))
        except ValueError as error:
            raise PredictionsError(f"{source}: row {row + 1}, column image_path: {error}") from None
    for row, label in enumerate(true_labels):
        if not (np.issubdtype(type(label), np.integer) or float(label).is_integer()):
            raise PredictionsError(
                f"{source}: row {row + 1}, column true_label: {label!r} is not 0..13"
            )
        if not 0 <= int(label) < NUM_CLASSES:
            raise PredictionsError(
                f"{source}: row {row + 1}, column true_label: {label!r} is not 0..13"
            )
    true_labels = true_labels.astype(np.int64)
    probs = check_probabilities(probs, count, source)
    if regions is None:
        regions = [key.region for key in keys]
    regions = np.asarray([str(region) for region in regions], dtype=object)
    for row, region in enumerate(regions):
        if region not in REGIONS:
            raise PredictionsError(
                f"{source}: row {row + 1}, column region: {region!r} is not one of {', '.join(REGIONS)}"
            )
    for row, (key, label) in enumerate(zip(keys, true_labels, strict=True)):
        # The study folder is MURA's ground truth; a disagreeing label usually means shifted columns.
        if label != label_of(REGIONS.index(key.region), key.abnormal_from_folder):
            raise PredictionsError(
                f"{source}: row {row + 1}, column true_label: {label} ({CLASS_NAMES[label]}) "
                f"disagrees with the study folder of image_path {image_paths[row]!r}"
            )
    if patient_ids is None:
        patient_ids = [key.patient_id for key in keys]
    if study_ids is None:
        study_ids = [key.study_id for key in keys]
    return Predictions(
        image_paths=image_paths,
        true_labels=true_labels,
        probs=probs,
        regions=regions,
        patient_ids=np.asarray([str(value) for value in patient_ids], dtype=object),
        study_ids=np.asarray([str(value) for value in study_ids], dtype=object),
    )


def read_predictions(path: str) -> Predictions:
    """Read and validate a predictions CSV (local or gs://); raises PredictionsError naming row
    and column, and refuses a file without ground truth (an empty `true_label`)."""
    import tensorflow as tf  # only for tf.io.gfile (gs:// support)

    if not tf.io.gfile.exists(path):
        raise PredictionsError(f"--predictions {path}: file not found")
    try:
        with tf.io.gfile.GFile(path, "r") as handle:
            table = pd.read_csv(handle, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PredictionsError(f"{path}: not a readable CSV: {message}") from None
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise PredictionsError(
            f"{path}: missing column(s) {', '.join(missing)} (required: image_path, true_label, "
            "prob_<CLASS_NAME> for each of the 14 classes)"
        )
    if table.empty:
        raise PredictionsError(f"{path}: no predictions (zero rows)")
    unlabelled = np.nonzero((table["true_label"].str.strip() == "").to_numpy())[0]
    if len(unlabelled):
        raise PredictionsError(
            f"{path}: {len(unlabelled)} of {len(table)} row(s) have no true_label (first: row "
            f"{unlabelled[0] + 1}, {table['image_path'].iloc[unlabelled[0]]!r}); only images in the "
            "MURA layout (XR_<REGION>/patient<ID>/study<N>_<positive|negative>/) carry a label, "
            "so there is nothing to score"
        )
    labels = _numeric_column(table, "true_label", path)
    probs = np.stack([_numeric_column(table, column, path) for column in PROB_COLUMNS], axis=1)
    optional = {
        column: table[column].tolist()
        for column in OPTIONAL_COLUMNS
        if column in table.columns and (table[column] != "").all()
    }
    return make_predictions(
        table["image_path"].tolist(),
        labels,
        probs,
        patient_ids=optional.get("patient_id"),
        study_ids=optional.get("study_id"),
        regions=optional.get("region"),
        source=path,
    )


def _numeric_column(table: pd.DataFrame, column: str, path: str) -> np.ndarray:
    values = pd.to_numeric(table[column].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.nonzero(np.isnan(values))[0]
    if len(bad):
        row = bad[0]
        raise PredictionsError(
            f"{path}: row {row + 1}, column {column}: {table[column].iloc[row]!r} is not a number"
        )
    return values


def predictions_table(predictions: Predictions) -> pd.DataFrame:
    """The written form of `predictions`: WRITTEN_COLUMNS, one row per image."""
    pred_labels = predictions.pred_labels
    table = pd.DataFrame(
        {
            "image_path": predictions.image_paths,
            "region": predictions.regions,
            "patient_id": predictions.patient_ids,
            "study_id": predictions.study_ids,
            "true_label": predictions.true_labels,
            "true_class": [CLASS_NAMES[label] for label in predictions.true_labels],
            "pred_label": pred_labels,
            "pred_class": [CLASS_NAMES[label] for label in pred_labels],
            "confidence": predictions.confidences,
            "correct": (pred_labels == predictions.true_labels).astype(np.int64),
        }
    )
    for index, column in enumerate(PROB_COLUMNS):
        table[column] = predictions.probs[:, index]
    return table[list(WRITTEN_COLUMNS)]


def predictions_csv_text(predictions: Predictions) -> str:
    """The CSV text of `predictions_table` (full float precision, so it reads back exactly)."""
    buffer = io.StringIO()
    predictions_table(predictions).to_csv(buffer, index=False)
    return buffer.getvalue()


def unscored_predictions_table(image_paths: Sequence[str], probs) -> pd.DataFrame:
    """WRITTEN_COLUMNS for images a model has seen, labelled only where the path says so.

    A path in the MURA layout gets its region, patient, study and true label (from the study
    folder, as the Beam job derives it); any other path gets those columns, and `true_class`
    and `correct`, empty. probs: [N, 14] softmax rows in CLASS_NAMES order.
    """
    image_paths = [str(path) for path in image_paths]
    probs = check_probabilities(probs, len(image_paths), "predictions")
    _check_unique_paths(np.asarray(image_paths, dtype=object), "predictions")
    pred_labels = probs.argmax(axis=1)
    rows = []
    for path, pred_label, row_probs in zip(image_paths, pred_labels, probs, strict=True):
        try:
            key = parse_study_path(path)
        except ValueError:
            key = None
        true_label = label_of(REGIONS.index(key.region), key.abnormal_from_folder) if key else None
        rows.append(
            {
                "image_path": path,
                "region": key.region if key else "",
                "patient_id": key.patient_id if key else "",
                "study_id": key.study_id if key else "",
                "true_label": "" if true_label is None else true_label,
                "true_class": "" if true_label is None else CLASS_NAMES[true_label],
                "pred_label": int(pred_label),
                "pred_class": CLASS_NAMES[pred_label],
                "confidence": float(row_probs[pred_label]),
                "correct": "" if true_label is None else int(pred_label == true_label),
                **{column: float(row_probs[index]) for index, column in enumerate(PROB_COLUMNS)},
            }
        )
    return pd.DataFrame(rows, columns=list(WRITTEN_COLUMNS))
