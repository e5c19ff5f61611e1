"""`python -m eval` / `bonify-eval`: evaluate a model on a split, or saved predictions."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from bonify.cli import run_command

# TensorFlow's INFO lines (oneDNN, CPU features, CUDA stubs) drown the progress output;
# warnings and errors still show. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def _run(argv: Sequence[str] | None) -> int:
    from eval.options import parse_args
    from eval.run import evaluate

    evaluate(parse_args(argv))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluator with `argv` (default: sys.argv[1:]); returns the exit code."""
    return run_command("bonify-eval", _run, argv)


def console_main() -> None:
    """Entry point of the `bonify-eval` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
