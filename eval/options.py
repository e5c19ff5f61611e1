"""Command-line flags of the evaluator, their validation, and Beam pass-through options.

Everything here runs before TensorFlow is imported (about 5 s), so a wrong flag or path
answers at once: flags, local paths (model, predictions, data folder and its manifest,
output folder) and the Dataflow options are checked here. gs:// paths are checked when
they are read.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from bonify.cli import BonifyError, OneLineArgumentParser
from bonify.dataset import read_manifest
from bonify.model_card import (
    RESIZE_MODES,
    InputSpec,
    input_spec_for,
    load_card,
    resolve_model,
    spec_mismatch,
)
from bonify.tta import TTA_MODES
from bonify.vocabulary import SPLITS
from eval.config import EvalConfig
from eval.errors import EvalError
from eval.operating_point import check_card_to_update, check_fit_flags

PROGRAM = "bonify-eval"

DESCRIPTION = """\
Measure how well a trained MURA model classifies X-rays.

Runs the model (--model: a job folder, its model folder or a .keras file) over one split
of the shards that bonify-preprocess wrote (--data_dir, --split), or scores a saved
predictions CSV of any model (--predictions). The model's image size and resize mode come
from its model card (model_card.json beside the .keras file) and must match the shards';
a model without a card (an older job) needs --image_size and --resize. Writes to --output_dir: metrics.json (accuracy, Cohen's kappa, F1,
study-level kappa and AUROC per body region, bootstrap confidence intervals), CSV tables,
PNG figures and one self-contained report.html to open in a browser.

With --runner, inference runs as an Apache Beam RunInference pipeline on that runner
(FnApiRunner locally, DataflowRunner on Google Cloud); further flags then go to Beam.
Every path may be local or gs://. Details: docs/EVALUATION.md."""

EXAMPLES = """\
# evaluate the trainer's model on the test split
bonify-eval --model JOB/model/final.keras --data_dir DATA --split test --output_dir EVAL
# a job folder works too (its model/final.keras and model_card.json)
bonify-eval --model JOB --data_dir DATA --output_dir EVAL
# a model from an older bonify, without model_card.json: say how it was trained
bonify-eval --model old/final.keras --image_size 320 --resize stretch --data_dir DATA \\
    --output_dir EVAL
# score a saved predictions file (bonify's own EVAL/predictions.csv or another model's)
bonify-eval --predictions EVAL/predictions.csv --output_dir EVAL2
# flip test-time augmentation; an ensemble of two models (probabilities averaged)
bonify-eval --model JOB1 --model JOB2 --tta flip --data_dir DATA --output_dir EVAL
# an ensemble of saved predictions files of the same images
bonify-eval --predictions EVAL1/predictions.csv --predictions EVAL2/predictions.csv \\
    --output_dir EVAL3
# fit the operating point (threshold, temperature) on validation and write it into the card
bonify-eval --model JOB --data_dir DATA --split validation --output_dir EVAL_VAL \\
    --fit_operating_point --update_model_card
# paired bootstrap of this model minus another evaluated on the same images
bonify-eval --model JOB --data_dir DATA --output_dir EVAL --compare OTHER_EVAL
# the same inference as a Beam RunInference pipeline on this machine (offline)
bonify-eval --model JOB/model/final.keras --data_dir DATA --output_dir EVAL \\
    --runner=FnApiRunner --direct_num_workers=2 --direct_running_mode=multi_processing
# on Google Cloud Dataflow (gs:// paths; workers from the bonify worker image, which has
# TensorFlow for RunInference; --setup_file=./setup.py instead installs it on every worker)
bonify-eval --model gs://BUCKET/job/model/final.keras --data_dir gs://BUCKET/data \\
    --output_dir gs://BUCKET/eval --runner=DataflowRunner --project=PROJECT \\
    --region=REGION --temp_location=gs://BUCKET/tmp \\
    --sdk_container_image=REGION-docker.pkg.dev/PROJECT/REPO/bonify-worker@sha256:DIGEST"""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROGRAM, description=DESCRIPTION, examples=EXAMPLES)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        action="append",
        help="the trained model: JOB, JOB/model or a .keras file (e.g. JOB/model/final.keras); "
        "repeat for an ensemble (probabilities averaged; the first model's card rules)",
    )
    source.add_argument(
        "--predictions",
        action="append",
        help="a predictions CSV to evaluate (any model's); repeat for an ensemble of files of "
        "the same images",
    )
    parser.add_argument("--data_dir", help="the Beam job's output folder (needed with --model)")
    parser.add_argument(
        "--split", default="test", choices=SPLITS, help="split to evaluate (default test)"
    )
    parser.add_argument("--output_dir", required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--batch_size", type=int, default=64, help="images per inference batch (default 64)"
    )
    parser.add_argument(
        "--bootstrap_resamples",
        type=int,
        default=1000,
        help="bootstrap resamples (over patients) for the 95%% CIs; 0 disables (default 1000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--image_size",
        type=int,
        help="the model's input size, only for a model without model_card.json (older jobs)",
    )
    parser.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        help="how the model's training images were resized (pad or stretch), only for a model "
        "without model_card.json",
    )
    parser.add_argument(
        "--tta",
        choices=TTA_MODES,
        default="none",
        help="test-time augmentation: flip averages each image with its horizontal mirror "
        "(default none)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="P(abnormal) threshold of the study call at the operating point "
        "(study_level.at_operating_point; default: the model card's, else 0.5)",
    )
    parser.add_argument(
        "--fit_operating_point",
        action="store_true",
        help="fit the threshold maximising study kappa (and Youden's) and a temperature "
        "minimising NLL on this split (only --split validation) -> operating_point.fitted",
    )
    parser.add_argument(
        "--update_model_card",
        action="store_true",
        help="with --fit_operating_point: write the fitted threshold and temperature into the "
        "model's card (used by test evaluation, bonify-predict and the app)",
    )
    parser.add_argument(
        "--compare",
        metavar="OTHER",
        help="paired bootstrap over patients of this run minus OTHER (a predictions CSV or a "
        "bonify-eval output folder of the same images; --bootstrap_resamples, --seed)",
    )
    parser.add_argument(
        "--runner",
        help="run inference as a Beam pipeline on this runner: FnApiRunner (local, offline) "
        "or DataflowRunner; unknown flags must then be Beam pipeline options",
    )
    return parser


def parse_args(argv: Sequence[str] | None) -> EvalConfig:
    """Flags -> a validated EvalConfig; any problem is one EvalError line. TensorFlow-free."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = build_parser().parse_known_args(argv)
    if unknown and args.runner is None:
        raise EvalError(f"unrecognized arguments: {' '.join(unknown)} (see {PROGRAM} --help)")
    if args.model is not None and not args.data_dir:
        raise EvalError("--model needs --data_dir (the Beam job's output folder)")
    if args.predictions is not None and args.runner is not None:
        raise EvalError("--runner runs model inference; it makes no sense with --predictions")
    if args.predictions is not None and args.tta != "none":
        raise EvalError(
            f"--tta {args.tta} runs the model on mirrored images; a --predictions file is already "
            "the model's output (evaluate the model with --model and --tta instead)"
        )
    if args.batch_size <= 0:
        raise EvalError(f"--batch_size must be positive, got {args.batch_size}")
    if args.model is None and (args.image_size is not None or args.resize is not None):
        raise EvalError("--image_size and --resize describe a --model; --predictions needs neither")
    if args.image_size is not None and args.image_size <= 0:
        raise EvalError(f"--image_size must be positive, got {args.image_size}")
    if args.bootstrap_resamples < 0:
        raise EvalError(f"--bootstrap_resamples must be >= 0, got {args.bootstrap_resamples}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise EvalError(f"--threshold must be between 0 and 1, got {args.threshold}")
    beam_args = None
    if args.runner is not None:
        beam_args = (f"--runner={args.runner}", *unknown)
        validate_beam_args(beam_args)
        for model in args.model or ():
            check_dataflow(beam_args, model, args.data_dir, args.output_dir)
    members = args.model or args.predictions
    config = EvalConfig(
        output_dir=args.output_dir,
        predictions=args.predictions[0] if args.predictions else None,
        model=args.model[0] if args.model else None,
        other_members=tuple(members[1:]),
        tta=args.tta,
        threshold=args.threshold,
        fit_operating_point=args.fit_operating_point,
        update_model_card=args.update_model_card,
        compare=args.compare,
        data_dir=args.data_dir,
        split=args.split,
        batch_size=args.batch_size,
        bootstrap_resamples=args.bootstrap_resamples,
        seed=args.seed,
        beam_args=beam_args,
        image_size=args.image_size,
        resize=args.resize,
    )
    check_fit_flags(config)
    return config


def _is_local(path: str) -> bool:
    return "://" not in path


def check_local_paths(config: EvalConfig) -> None:
    """EvalError naming the flag when a local input is missing (the data folder's whole
    manifest is checked) or the output folder cannot be made. Remote (gs://) paths are left
    to the readers, which go through tf.io.gfile. TensorFlow-free."""
    model, predictions = config.model, config.predictions
    data_dir, output_dir = config.data_dir, config.output_dir
    if model is not None:
        models = [model_file(path) if _is_local(path) else path for path in config.members]
        model = models[0]
        check_ensemble_inputs(models, config.image_size, config.resize)
    for path in config.members if predictions is not None else ():
        if _is_local(path) and not os.path.isfile(path):
            what = "is a folder, not a file" if os.path.isdir(path) else "file not found"
            raise EvalError(f"--predictions {path}: {what}")
    if data_dir is not None and _is_local(data_dir):
        read_manifest(data_dir)  # the whole manifest is checked here, still without TensorFlow
    if not output_dir.strip():
        raise EvalError("--output_dir is empty")
    if _is_local(output_dir):
        if os.path.exists(output_dir) and not os.path.isdir(output_dir):
            raise EvalError(f"--output_dir {output_dir}: exists and is not a folder")
        # The nearest existing ancestor decides whether the folder can be created.
        existing = os.path.abspath(output_dir)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise EvalError(f"--output_dir {output_dir}: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise EvalError(f"--output_dir {output_dir}: no permission to write in {existing}")
    if model is not None and _is_local(model) and data_dir is not None and _is_local(data_dir):
        check_model_spec(model, data_dir, config.image_size, config.resize)
    if config.update_model_card and model is not None and _is_local(model):
        check_card_to_update(model)
    if config.compare is not None and _is_local(config.compare):
        from eval.compare import other_predictions_file

        other_predictions_file(config.compare)


def check_ensemble_inputs(
    models: Sequence[str], image_size: int | None = None, resize: str | None = None
) -> None:
    """EvalError naming two local ensemble members whose input specs (model cards, or
    --image_size/--resize) differ. TensorFlow-free; gs:// members are checked on reading."""
    local = [model for model in models if _is_local(model)]
    if len(local) < 2:
        return
    try:
        specs = [input_spec_for(model, image_size, resize) for model in local]
    except BonifyError as error:
        raise EvalError(f"--model {error}") from None
    for model, spec in zip(local[1:], specs[1:], strict=True):
        if spec != specs[0]:
            raise EvalError(
                f"--model {model} takes {_describe_spec(spec)} but --model {local[0]} takes "
                f"{_describe_spec(specs[0])}: the models of an ensemble must take the same input"
            )


def _describe_spec(spec: InputSpec) -> str:
    return f"image_size {spec.image_size}, resize {spec.resize}, {len(spec.class_names)} classes"


def model_file(model: str) -> str:
    """The .keras file of --model (a .keras file, JOB or JOB/model); EvalError naming it.
    TensorFlow-free for local paths."""
    try:
        return resolve_model(model)
    except BonifyError as error:
        raise EvalError(f"--model {error}") from None


def check_model_spec(
    model: str, data_dir: str, image_size: int | None = None, resize: str | None = None
) -> InputSpec:
    """The input spec of the .keras file `model` (its card, or --image_size/--resize for a
    model without one), checked against the shards of `data_dir`: EvalError naming both
    sides when the image size or resize mode differ. TensorFlow-free for local paths."""
    try:
        spec = input_spec_for(model, image_size, resize)
    except BonifyError as error:
        raise EvalError(f"--model {error}") from None
    manifest = read_manifest(data_dir)
    mismatch = spec_mismatch(spec, manifest.image_size, manifest.resize)
    if mismatch is not None:
        card = load_card(model)
        source = card.path if card is not None else "--image_size/--resize"
        raise EvalError(
            f"--model {model} takes image_size {spec.image_size}, resize {spec.resize} "
            f"(from {source}) but --data_dir {data_dir} holds image_size {manifest.image_size}, "
            f"resize {manifest.resize} ({manifest.path}); evaluate it on shards written with "
            "the settings it was trained on"
        )
    return spec


def validate_beam_args(beam_args: Sequence[str]) -> None:
    """EvalError for a flag that is no Beam pipeline option (Beam would silently drop it)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class _Parser(_BeamArgumentParser):
        def error(self, message: str):
            raise EvalError(f"bad Beam pipeline option: {message}")

    parser = _Parser(allow_abbrev=False)
    for cls in {str(cls): cls for cls in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # how Beam itself collects its flags
    _, unknown = parser.parse_known_args(list(beam_args))
    if unknown:
        raise EvalError(
            f"unknown flag {unknown[0]}: neither a {PROGRAM} flag nor a Beam pipeline option "
            f"(see {PROGRAM} --help)"
        )


def check_dataflow(beam_args: Sequence[str], model: str, data_dir: str, output_dir: str) -> None:
    """On Dataflow (any spelling of the runner Beam accepts): the shared Dataflow checks
    (project, region, gs:// temp_location, gs:// paths), as an EvalError."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from bonify.dataflow import check_dataflow_options, is_dataflow

    options = PipelineOptions(list(beam_args))
    if not is_dataflow(options):
        return
    paths = {"--model": model, "--data_dir": data_dir, "--output_dir": output_dir}
    try:
        check_dataflow_options(options, paths)
    except BonifyError as error:
        raise EvalError(str(error)) from None
