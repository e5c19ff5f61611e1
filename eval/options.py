"""Command-line flags of the evaluator, their validation, and Beam pass-through options."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bonify.vocabulary import SPLITS
from eval.errors import EvalError
from eval.run import EvalConfig

PROGRAM = "bonify-eval"


class _OneLineParser(argparse.ArgumentParser):
    """argparse that raises EvalError (one line, exit 2) instead of printing usage."""

    def error(self, message: str):
        raise EvalError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=PROGRAM,
        description=(
            "Evaluate a MURA model: either run --model over a split of the Beam job's shards "
            "(--data_dir, --split) or read saved --predictions. Writes metrics.json, CSV tables, "
            "PNG figures and report.html to --output_dir (local or gs://). With --runner, "
            "inference runs as an Apache Beam RunInference pipeline on that runner (e.g. "
            "FnApiRunner, DataflowRunner); other flags then pass to Beam. See docs/EVALUATION.md."
        ),
        allow_abbrev=False,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a Keras 3 .keras model (e.g. JOB/model/final.keras)")
    source.add_argument("--predictions", help="a predictions CSV to evaluate (any model's)")
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
        "--runner",
        help="run inference as a Beam pipeline on this runner (FnApiRunner runs locally, offline)",
    )
    return parser


def parse_args(argv: Sequence[str] | None) -> EvalConfig:
    """Flags -> a validated EvalConfig; any problem is one EvalError line."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.runner is None:
        raise EvalError(f"unrecognized arguments: {' '.join(unknown)} (see --help)")
    if args.model is not None and not args.data_dir:
        raise EvalError("--model needs --data_dir (the Beam job's output folder)")
    if args.predictions is not None and args.runner is not None:
        raise EvalError("--runner runs model inference; it makes no sense with --predictions")
    if args.batch_size <= 0:
        raise EvalError(f"--batch_size must be positive, got {args.batch_size}")
    if args.bootstrap_resamples < 0:
        raise EvalError(f"--bootstrap_resamples must be >= 0, got {args.bootstrap_resamples}")
    beam_args = None
    if args.runner is not None:
        beam_args = (f"--runner={args.runner}", *unknown)
        validate_beam_args(beam_args)
    return EvalConfig(
        output_dir=args.output_dir,
        predictions=args.predictions,
        model=args.model,
        data_dir=args.data_dir,
        split=args.split,
        batch_size=args.batch_size,
        bootstrap_resamples=args.bootstrap_resamples,
        seed=args.seed,
        beam_args=beam_args,
    )


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
            f"unknown flag {unknown[0]}: neither a {PROGRAM} flag nor a Beam pipeline option (see --help)"
        )
