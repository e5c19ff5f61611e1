"""What every bonify command line shares: user errors become one line and exit code 2.

Each stage raises its own subclass of `BonifyError` for mistakes a user can fix (a bad
path, flag, config key or file); its `__main__` calls `run_command`, which prints
`<program>: error: <message>` on stderr and returns 2 instead of a traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

#: Exit code for errors the user can act on (the same code argparse uses).
USER_ERROR_EXIT_CODE = 2


class BonifyError(Exception):
    """An error the user caused and can fix; the message names the file, key or flag."""


def run_command(program: str, main: Callable[[Sequence[str] | None], int | None], argv=None) -> int:
    """Run `main(argv)` and turn a BonifyError into one line on stderr and exit code 2."""
    try:
        return int(main(argv) or 0)
    except BonifyError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
