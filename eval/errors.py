"""The evaluator's one exception type for mistakes a user can fix."""

from __future__ import annotations

from bonify.cli import BonifyError


class EvalError(BonifyError):
    """A bad flag, model, shard folder or predictions file; the message names it."""
