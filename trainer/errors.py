"""The trainer's one exception type for mistakes a user can fix."""

from __future__ import annotations

from bonify.cli import BonifyError


class TrainerError(BonifyError):
    """A bad path, flag, config key/value, data directory or weights file (message names it)."""
