"""What every bonify command line shares: one-line user errors, help with examples, and a
quiet TensorFlow start-up.

Each stage raises its own subclass of `BonifyError` for mistakes a user can fix (a bad
path, flag, config key or file); its `__main__` calls `run_command`, which prints
`<program>: error: <message>` on stderr and returns 2 instead of a traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence

#: Exit code for errors the user can act on (the same code argparse uses).
USER_ERROR_EXIT_CODE = 2

#: Exit code after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_EXIT_CODE = 130

#: Set to 1 to see TensorFlow's and absl's start-up lines again (see `quiet_tensorflow_startup`).
TF_LOGS_VARIABLE = "BONIFY_TF_LOGS"


class BonifyError(Exception):
    """An error the user caused and can fix; the message names the file, key or flag."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse for bonify's commands: a usage error is a `BonifyError` (one line, exit 2
    through `run_command`) instead of usage text; the help keeps the description's line
    breaks and ends with an "Examples:" section.

    examples: command lines a user actually runs, one per line; lines starting with "#"
    explain the command below them.
    """

    def __init__(self, *args, examples: str | None = None, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        if examples:
            body = "\n".join(f"  {line}" if line else "" for line in examples.strip().splitlines())
            kwargs["epilog"] = f"{kwargs.get('epilog') or ''}\n\nExamples:\n{body}".lstrip()
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise BonifyError(f"{message} (see {self.prog} --help)")


def run_command(program: str, main: Callable[[Sequence[str] | None], int | None], argv=None) -> int:
    """Run `main(argv)` and turn a BonifyError into one line on stderr and exit code 2.

    TensorFlow's start-up noise is silenced first (unless BONIFY_TF_LOGS=1).
    """
    quiet_tensorflow_startup()
    try:
        return int(main(argv) or 0)
    except BonifyError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except KeyboardInterrupt:
        print(f"\n{program}: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE


# ---- TensorFlow start-up noise ----------------------------------------------------------
#
# Importing TensorFlow 2.21 and listing its devices prints, on every machine, lines no user
# can act on: absl's "All log messages before absl::InitializeLog()", oneDNN and CPU-feature
# notices, "Could not find cuda drivers" and, without a GPU driver, an E-level "failed call
# to cuInit". They come from C++ before absl reads TF_CPP_MIN_LOG_LEVEL, so the variable
# cannot hide them. `quiet_tensorflow_startup` points file descriptor 2 at a temporary file
# while TensorFlow is imported and its devices are first listed, then replays every line
# that is not such a notice: warnings that matter (Python warnings, real errors) still show.

#: Start-up lines that are dropped (matched against each line of the captured stderr).
_STARTUP_NOISE = re.compile(
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|^I\d{4} [\d:. ]+\d+ \S+\] "  # any INFO line (TF_CPP_MIN_LOG_LEVEL=1 hides later ones)
    r"|^[WE]\d{4} [\d:. ]+\d+ \S+\] .*("
    r"failed call to cuInit|Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS)"
    r"|computation placer already registered|TF-TRT Warning)"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
)


def startup_noise(line: str) -> bool:
    """True for a line of TensorFlow's start-up notices that `quiet_tensorflow_startup` drops."""
    return bool(_STARTUP_NOISE.search(line))


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Wraps the first `import tensorflow` (wherever it happens) in `_StderrFiltered`.

    Libraries also look TensorFlow up without importing it (`importlib.util.find_spec`), so
    the finder stays installed until the module is really executed.
    """

    def __init__(self):
        self._searching = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow" or self._searching:
            return None
        self._searching = True  # the lookup below asks the finders again, this one included
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._searching = False
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader, finder: _QuietTensorFlowImport):
        self._loader, self._finder = loader, finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)  # once: later imports find the module loaded
        with _StderrFiltered():
            self._loader.exec_module(module)
            # Device discovery prints the cuInit line: do it now, inside the filter.
            module.config.list_physical_devices()


class _StderrFiltered:
    """Context: fd 2 goes to a temporary file; on exit, its non-noise lines are replayed."""

    def __enter__(self):
        sys.stderr.flush()
        self._capture = tempfile.TemporaryFile(mode="w+b")
        self._saved = os.dup(2)
        os.dup2(self._capture.fileno(), 2)
        return self

    def __exit__(self, *exc_info):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._capture.seek(0)
        kept = [
            line
            for line in self._capture.read().decode(errors="replace").splitlines(keepends=True)
            if not startup_noise(line)
        ]
        self._capture.close()
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
        return False


def quiet_tensorflow_startup() -> None:
    """Hide TensorFlow's start-up notices for this process (see the note above).

    Does nothing when BONIFY_TF_LOGS=1 or TensorFlow is already imported. INFO lines
    after start-up stay hidden by TF_CPP_MIN_LOG_LEVEL=1 (warnings and errors show).
    """
    if os.environ.get(TF_LOGS_VARIABLE, "").strip() not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
