"""`python -m beam_preprocess` / `bonify-preprocess`: MURA v1.1 -> sharded TFRecords."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bonify.cli import run_command


def _run(argv: Sequence[str] | None) -> int:
    from beam_preprocess.options import check_local_paths, parse_args

    config, beam_args = parse_args(argv)
    check_local_paths(config)
    # Beam (and, for the data report, TensorFlow) load only once the arguments are valid.
    from beam_preprocess.pipeline import run_preprocess

    run_preprocess(config, beam_args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job with `argv` (default: sys.argv[1:]); returns the exit code."""
    return run_command("bonify-preprocess", _run, argv)


def console_main() -> None:
    """Entry point of the `bonify-preprocess` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
