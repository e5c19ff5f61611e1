"""`bonify-predict`: a trained model's answer on new radiographs (PNG, JPEG, DICOM).

Flow: check every flag and path (no TensorFlow yet) -> list the images -> decode them in a
thread pool, through `bonify.images.to_model_input` (the Beam job's own image path, so the
model sees the pixels it was trained on) while the model runs on the previous batch ->
average the models (and the horizontal mirror with --tta flip) -> write the predictions CSV
(the evaluator's format), the study verdicts and Grad-CAM overlays -> print a table.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bonify.cli import OneLineArgumentParser, run_command
from bonify.model_card import DEFAULT_THRESHOLD, RESIZE_MODES, InputSpec
from bonify.tta import TTA_MODES
from serve.core import (
    add_model_argument,
    check_model_paths,
    load_models,
    model_temperatures,
    predict_probabilities,
)
from serve.inputs import InputImage, PredictError, collect_images, overlay_file_name

PROG = "bonify-predict"

DESCRIPTION = """\
Run a trained bonify model on radiographs and say, per image and per study, which body region
it shows and whether it looks normal or abnormal.

Each PATH is an image file (PNG, JPEG or DICOM), a folder (read recursively), a MURA study
folder, or a MURA *_image_paths.csv. The model's image size and resize mode come from its
model card (JOB/model/model_card.json); a model without a card needs --image_size and
--resize. Unreadable files are listed with their reason and skipped.
Research use only; not a medical device."""

EXAMPLES = """\
# one folder of studies, the predictions in the evaluator's format and one row per study
bonify-predict --model demo_output/job --output preds.csv --study_output studies.csv scans/
# a DICOM file, with a Grad-CAM overlay written to heatmaps/
bonify-predict --model job/model/final.keras --output preds.csv --gradcam_dir heatmaps/ a.dcm
# an ensemble of two models with flip test-time augmentation on MURA's test list
bonify-predict --model run1 --model run2 --tta flip --output preds.csv \\
    /data/mura/MURA-v1.1/valid_image_paths.csv
# then score it (labels come from the MURA folder names)
bonify-eval --predictions preds.csv --output_dir eval/"""


#: Rows of the console table before it points to the CSV instead.
TABLE_ROWS = 40

#: Images decoded ahead of the model, in batches (bounds memory on huge runs).
BATCHES_AHEAD = 3


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """A checked command line; model_files are resolved .keras paths."""

    model_files: tuple[str, ...]
    spec: InputSpec
    threshold: float
    output: str
    study_output: str | None
    gradcam_dir: str | None
    tta: str
    batch_size: int
    images: tuple[InputImage, ...]
    temperatures: tuple[float, ...] = ()  # each model's card temperature (empty: all 1.0)


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description=DESCRIPTION, examples=EXAMPLES)
    add_model_argument(
        parser, " (probabilities averaged; their model cards must agree on the input)"
    )
    parser.add_argument(
        "--output", required=True, help="predictions CSV, one row per image (bonify-eval format)"
    )
    parser.add_argument("--study_output", help="CSV with one row per study")
    parser.add_argument(
        "--gradcam_dir", help="write a Grad-CAM overlay PNG per image here (mirrors the inputs)"
    )
    parser.add_argument(
        "--tta", choices=TTA_MODES, default="none", help="flip: average with the mirror image"
    )
    parser.add_argument("--batch_size", type=int, default=32, help="images per model call")
    parser.add_argument(
        "--image_size", type=int, help="only for a model without a card: its input size"
    )
    parser.add_argument(
        "--resize", choices=RESIZE_MODES, help="only for a model without a card: pad|stretch"
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="images, folders or a CSV")
    return parser


def _check_output_file(flag: str, path: str) -> None:
    if os.path.isdir(path):
        raise PredictError(f"{flag} {path}: is a folder; give a CSV file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise PredictError(f"{flag} {path}: folder {parent} does not exist")


def check_arguments(argv: Sequence[str] | None) -> PredictOptions:
    """Parse and check the command line; every error a user can make is a one-line
    BonifyError here, before TensorFlow is imported."""
    arguments = build_parser().parse_args(argv)
    if arguments.batch_size < 1:
        raise PredictError(f"--batch_size must be at least 1, got {arguments.batch_size}")
    _check_output_file("--output", arguments.output)
    if arguments.study_output:
        _check_output_file("--study_output", arguments.study_output)
    gradcam_dir = arguments.gradcam_dir
    if gradcam_dir and os.path.exists(gradcam_dir) and not os.path.isdir(gradcam_dir):
        raise PredictError(f"--gradcam_dir {gradcam_dir}: exists and is not a folder")
    model_files, spec, card = check_model_paths(
        arguments.model, arguments.image_size, arguments.resize
    )
    images = collect_images(arguments.paths)
    if not images:
        raise PredictError(
            f"no images under {', '.join(arguments.paths)} (looked for "
            "PNG/JPEG/DICOM files and MURA *_image_paths.csv)"
        )
    return PredictOptions(
        model_files=model_files,
        spec=spec,
        threshold=card.threshold if card else DEFAULT_THRESHOLD,
        output=arguments.output,
        study_output=arguments.study_output,
        gradcam_dir=arguments.gradcam_dir,
        tta=arguments.tta,
        batch_size=arguments.batch_size,
        images=tuple(images),
        temperatures=model_temperatures(model_files),
    )


# ---- decoding (worker threads) ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Decoded:
    """One readable image: model input uint8 [S, S], its source-size gray (for Grad-CAM,
    else None) and the DICOM study/patient when it is a DICOM."""

    image: InputImage
    model_input: np.ndarray
    original: np.ndarray | None
    dicom_ids: dict | None


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """An input skipped with a rejection code (bonify.images reasons, or missing/unreadable)."""

    image: InputImage
    reason: str
    detail: str


def decode_image(image: InputImage, spec: InputSpec, keep_original: bool) -> Decoded | Unreadable:
    """Read and decode one input the way the Beam job does; never raises for a bad file."""
    from bonify.images import ImageRejected, decode_to_gray, dicom_identifiers, to_model_input

    try:
        with open(image.file, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return Unreadable(image, "missing_file", f"{image.file} does not exist")
    except OSError as error:
        return Unreadable(image, "unreadable_file", error.strerror or type(error).__name__)
    name = os.path.basename(image.file)
    try:
        model_input = to_model_input(data, spec.image_size, spec.resize, filename=name)
        original = decode_to_gray(data, filename=name) if keep_original else None
    except ImageRejected as rejected:
        return Unreadable(image, rejected.reason, rejected.detail)
    return Decoded(image, model_input, original, dicom_identifiers(data, filename=name))


def decode_in_order(
    images: Sequence[InputImage], decode: Callable, look_ahead: int, workers: int
) -> Iterator:
    """decode(image) for every image, in input order, computed by `workers` threads at most
    `look_ahead` images ahead of the consumer (Pillow and pydicom release the GIL while
    decoding, so this overlaps with the model)."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        iterator = iter(images)
        pending = collections.deque(
            pool.submit(decode, image) for image in itertools.islice(iterator, look_ahead)
        )
        while pending:
            result = pending.popleft().result()
            following = next(iterator, None)
            if following is not None:
                pending.append(pool.submit(decode, following))
            yield result


def batched(results: Iterable, batch_size: int, unreadable: list) -> Iterator[list[Decoded]]:
    """Decoded results in lists of batch_size; Unreadable ones go to `unreadable`."""
    batch: list[Decoded] = []
    for result in results:
        if isinstance(result, Unreadable):
            unreadable.append(result)
            continue
        batch.append(result)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---- the model ------------------------------------------------------------------------------


# load_models and predict_probabilities live in serve.core (shared with the API and the
# app); imported above so callers of serve.predict keep working.


# ---- progress ----------------------------------------------------------------------------


class Progress:
    """A live bar on a TTY; otherwise a plain line about every 10 % (logs stay readable)."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()
        self._next_line = max(1, total // 10)

    def update(self, done: int) -> None:
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.live:
            width = 30
            filled = int(width * done / self.total)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {done}/{self.total} images, {rate:.1f}/s")
            self.stream.flush()
        elif done >= self._next_line or done == self.total:
            self.stream.write(f"{done}/{self.total} images read ({rate:.1f}/s)\n")
            self.stream.flush()
            self._next_line = done + max(1, self.total // 10)

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


# ---- the run -----------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    """What a run produced, in input order (unreadable inputs left out of the arrays)."""

    decoded_paths: list[str]
    studies: list[tuple[str, str]]
    probs: np.ndarray
    unreadable: list[Unreadable]


def run_predictions(options: PredictOptions, models: Sequence, gradcam_model=None) -> RunResult:
    """Decode, predict and (with --gradcam_dir) write overlays for every image."""
    from serve.studies import study_of

    keep_original = options.gradcam_dir is not None
    unreadable: list[Unreadable] = []
    paths: list[str] = []
    studies: list[tuple[str, str]] = []
    probabilities: list[np.ndarray] = []
    progress = Progress(len(options.images)) if len(options.images) > options.batch_size else None
    results = decode_in_order(
        options.images,
        lambda image: decode_image(image, options.spec, keep_original),
        look_ahead=options.batch_size * BATCHES_AHEAD,
        workers=max(1, min(8, os.cpu_count() or 1)),
    )
    for batch in batched(results, options.batch_size, unreadable):
        images = np.stack([item.model_input for item in batch])[..., np.newaxis]
        probs = predict_probabilities(
            models, images, options.tta, options.batch_size, options.temperatures or None
        )
        if keep_original:
            write_overlays(options, gradcam_model or models[0], batch, images, probs)
        for item in batch:
            paths.append(item.image.path)
            studies.append(study_of(item.image.path, item.dicom_ids))
        probabilities.append(probs)
        if progress:
            progress.update(len(paths) + len(unreadable))
    if progress:
        progress.close()
    return RunResult(
        decoded_paths=paths,
        studies=studies,
        probs=np.concatenate(probabilities) if probabilities else np.zeros((0, 14)),
        unreadable=unreadable,
    )


def write_overlays(options: PredictOptions, model, batch, images: np.ndarray, probs) -> None:
    """One Grad-CAM overlay PNG per image, for the class the (ensemble's) prediction chose,
    at the original image's size, under --gradcam_dir mirroring the input's relative path."""
    from bonify.images import square_placement
    from serve.gradcam import gradcam, overlay_png

    heatmaps, _ = gradcam(model, images, class_index=np.asarray(probs).argmax(axis=1))
    for item, heatmap in zip(batch, heatmaps, strict=True):
        height, width = item.original.shape
        placement = square_placement(height, width, options.spec.image_size, options.spec.resize)
        target = os.path.join(options.gradcam_dir, overlay_file_name(item.image.relative))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(overlay_png(item.original, heatmap, placement))


def _format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def console_table(verdicts, study_rows: list[dict] | None) -> str:
    """The table printed at the end: per study when studies were asked for, else per image."""
    if study_rows is not None:
        header = ("study", "images", "region", "status", "P(abnormal)")
        rows = [
            (row["study"], str(row["images"]), row["region"], row["verdict"],
             f"{row['p_abnormal']:.3f}")
            for row in study_rows
        ]  # fmt: skip
        noun, output = "studies", "--study_output"
    else:
        header = ("image", "region", "status", "confidence", "top-3")
        rows = [
            (verdict.path, verdict.region, verdict.status, f"{verdict.confidence:.3f}",
             ", ".join(f"{name} {p:.2f}" for name, p in verdict.top3))
            for verdict in verdicts
        ]  # fmt: skip
        noun, output = "images", "--output"
    text = _format_table(header, rows[:TABLE_ROWS])
    if len(rows) > TABLE_ROWS:
        text += f"\n... {len(rows) - TABLE_ROWS} more {noun} in {output}"
    return text


def write_outputs(options: PredictOptions, result: RunResult, study_rows: list[dict] | None):
    """The predictions CSV and, when asked, the studies CSV (each written whole, then renamed)."""
    import pandas as pd

    from bonify.predictions import unscored_predictions_table
    from serve.studies import STUDY_COLUMNS

    _write_csv(options.output, unscored_predictions_table(result.decoded_paths, result.probs))
    if options.study_output:
        _write_csv(options.study_output, pd.DataFrame(study_rows, columns=list(STUDY_COLUMNS)))


def _write_csv(path: str, table) -> None:
    temp = f"{path}.tmp"
    table.to_csv(temp, index=False)
    os.replace(temp, path)


def report_unreadable(unreadable: Sequence[Unreadable], total: int) -> None:
    if not unreadable:
        return
    print(
        f"{PROG}: warning: {len(unreadable)} of {total} input(s) could not be read and were "
        "skipped:",
        file=sys.stderr,
    )
    for item in unreadable:
        print(f"  {item.image.path}: {item.reason} ({item.detail})", file=sys.stderr)


def _run(argv: Sequence[str] | None) -> int:
    from serve.studies import image_verdicts, study_rows

    options = check_arguments(argv)  # every user error before TensorFlow is imported
    models = load_models(options.model_files, options.spec)
    result = run_predictions(options, models)
    total = len(options.images)
    report_unreadable(result.unreadable, total)
    if not result.decoded_paths:
        raise PredictError(f"none of the {total} input image(s) could be read (reasons above)")
    studies = (
        study_rows(result.decoded_paths, result.studies, result.probs, options.threshold)
        if options.study_output
        else None
    )
    write_outputs(options, result, studies)
    verdicts = image_verdicts(result.decoded_paths, result.probs, options.threshold)
    print(console_table(verdicts, studies))
    abnormal = sum(verdict.status == "abnormal" for verdict in verdicts)
    summary = (
        f"\n{len(verdicts)} image(s) predicted ({abnormal} abnormal at threshold "
        f"{options.threshold:g}), {len(result.unreadable)} skipped; "
        f"{len(options.model_files)} model(s), tta {options.tta}"
    )
    if studies is not None:
        summary += f"; {len(studies)} studies"
    print(summary)
    written = [options.output, *filter(None, [options.study_output, options.gradcam_dir])]
    print(f"wrote {', '.join(written)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run bonify-predict with `argv` (default: sys.argv[1:]); returns the exit code."""
    return run_command(PROG, _run, argv)


def console_main() -> None:
    """Entry point of the `bonify-predict` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
