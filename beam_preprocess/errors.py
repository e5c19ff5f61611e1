"""The one exception type of the preprocessing stage."""

from __future__ import annotations

from bonify.cli import BonifyError


class PreprocessError(BonifyError):
    """A mistake the user can fix (bad flag, missing input, existing output); one line."""
