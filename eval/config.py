"""What one evaluation run does: the validated flags, as a plain dataclass.

Its own module, free of pandas, scikit-learn and TensorFlow, so the command line can build
and check it in a fraction of a second before anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
import sys


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and where to write. Exactly one of `predictions` and `model` is set."""

    output_dir: str
    predictions: str | None = None  # a predictions CSV (local or gs://)
    model: str | None = None  # a .keras model, or a JOB or JOB/model folder (its final.keras)
    data_dir: str | None = None  # the Beam job's output folder (with --model)
    split: str = "test"
    batch_size: int = 64
    bootstrap_resamples: int = 1000
    seed: int = 0
    beam_args: tuple[str, ...] | None = None  # set: run inference as a Beam pipeline
    # The model's input for a model without a model card (older jobs); with a card, None or
    # equal to the card's values.
    image_size: int | None = None
    resize: str | None = None
    # An ensemble: the members after the first (`model` or `predictions` is the first, whose
    # model card gives the operating point); their probabilities are averaged. () for one.
    other_members: tuple[str, ...] = ()
    tta: str = "none"  # test-time augmentation of model inference (bonify.tta.TTA_MODES)
    # The operating point (eval.operating_point): --threshold (None: the card's, else 0.5),
    # fitting it on the validation split, writing it into the card; --compare's other run.
    threshold: float | None = None
    fit_operating_point: bool = False
    update_model_card: bool = False
    compare: str | None = None
    # Progress: 1 a live bar on a terminal, 2 one line at the end (logs, pods, CI), 0 none.
    verbose: int = dataclasses.field(default_factory=lambda: 1 if sys.stdout.isatty() else 2)

    @property
    def members(self) -> tuple[str, ...]:
        """Every model file (or predictions CSV) evaluated, the first one first."""
        first = self.model if self.model is not None else self.predictions
        return (first, *self.other_members)
