"""`python -m eval` / `bonify-eval`: evaluate a model on a split, or saved predictions."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bonify.cli import run_command


def _run(argv: Sequence[str] | None) -> int:
    from eval.options import check_local_paths, parse_args

    # Every flag and local path is checked before TensorFlow is imported (answers in < 1 s).
    config = parse_args(argv)
    check_local_paths(config)
    from eval.run import evaluate

    evaluate(config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluator with `argv` (default: sys.argv[1:]); returns the exit code."""
    return run_command("bonify-eval", _run, argv)


def console_main() -> None:
    """Entry point of the `bonify-eval` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
