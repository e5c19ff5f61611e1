"""`python -m trainer --data_dir OUT --job_dir JOB [--config FILE] [--set key=value ...]`.

Only parses arguments; `trainer.run.train` does the work. See docs/TRAINING.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bonify.cli import run_command

# TensorFlow's INFO lines (oneDNN, CPU features, CUDA stubs) drown the progress output;
# warnings and errors still show. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see docs/TRAINING.md)."""
    parser = argparse.ArgumentParser(prog="bonify-train", description=__doc__)
    parser.add_argument("--data_dir", required=True, help="beam_preprocess output (local or gs://)")
    parser.add_argument("--job_dir", required=True, help="checkpoints, logs, models (resumable)")
    parser.add_argument("--config", help="YAML file, or a shipped config name (e.g. sample_cpu)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a key"
    )
    parser.add_argument("--strategy", choices=["auto", "default", "mirrored", "multi_worker"])
    parser.add_argument("--mixed_precision", choices=["auto", "float16", "bfloat16", "off"])
    parser.add_argument(
        "--xla", action=argparse.BooleanOptionalAction, default=None, help="XLA-compile the step"
    )
    parser.add_argument(
        "--tf_config_from_k8s",
        action="store_true",
        help="build TF_CONFIG from the Kubernetes Indexed Job environment",
    )
    return parser.parse_args(argv)


def _main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from trainer.run import train

    return train(
        args.data_dir,
        args.job_dir,
        config_file=args.config,
        overrides=args.set,
        strategy_name=args.strategy,
        mixed_precision=args.mixed_precision,
        xla=args.xla,
        tf_config_from_k8s=args.tf_config_from_k8s,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trainer; 0 done, 2 user error, 143 after a SIGTERM save."""
    return run_command("bonify-train", _main, argv)


def console_main() -> None:
    """Entry point of the `bonify-train` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
