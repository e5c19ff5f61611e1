"""The phase state machine (plain Python): plateau LR, early stopping, best tracking."""

from __future__ import annotations

import copy

from trainer.config import PHASE_DEFAULTS
from trainer.phases import after_epoch, new_phase_state, should_restore_best


def _phase(epochs=20, plateau=2, stop=3, factor=0.5, min_lr=1e-3):
    phase = copy.deepcopy(PHASE_DEFAULTS)
    phase.update(epochs=epochs, learning_rate=0.1)
    phase["reduce_lr"].update(patience=plateau, factor=factor, min_lr=min_lr)
    phase["early_stopping"].update(patience=stop)
    return phase


def _run(phase, losses, accuracies):
    state = new_phase_state(phase)
    improvements = []
    for loss, accuracy in zip(losses, accuracies, strict=True):
        state, improved = after_epoch(state, phase, {"val_loss": loss, "val_accuracy": accuracy})
        improvements.append(improved)
        if state["finished"]:
            break
    return state, improvements


def test_learning_rate_drops_after_patience_epochs_without_val_loss_improvement():
    state, _ = _run(_phase(), [1.0, 1.0, 1.0], [0.1, 0.2, 0.3])
    assert state["learning_rate"] == 0.05
    assert state["plateau_wait"] == 0


def test_learning_rate_never_goes_below_min_lr():
    state, _ = _run(_phase(plateau=1, stop=100, factor=0.1, min_lr=0.01), [1.0] * 5, [0.5] * 5)
    assert state["learning_rate"] == 0.01


def test_early_stopping_after_patience_epochs_without_accuracy_gain():
    state, improvements = _run(_phase(stop=3), [1.0] * 10, [0.5, 0.6, 0.6, 0.55, 0.6, 0.9, 0.9])
    assert state["finished"] and state["stopped_early"]
    assert state["epochs_completed"] == 5
    assert state["best_val_accuracy"] == 0.6 and state["best_epoch"] == 2
    assert improvements == [True, True, False, False, False]
    assert should_restore_best(state, _phase())


def test_phase_finishes_at_its_epoch_limit_without_early_stop():
    state, _ = _run(_phase(epochs=2), [1.0, 0.9], [0.1, 0.2])
    assert state["finished"] and not state["stopped_early"]
    assert state["epochs_completed"] == 2


def test_state_is_not_mutated_and_is_json_serialisable():
    import json

    phase = _phase()
    state = new_phase_state(phase)
    before = json.dumps(state)
    after_epoch(state, phase, {"val_loss": 1.0, "val_accuracy": 0.5})
    assert json.dumps(state) == before
