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


def test_best_val_loss_is_the_lowest_so_far_and_decides_nothing():
    phase = _phase()
    state, _ = _run(phase, [1.0, 0.5, 0.7], [0.1, 0.2, 0.3])
    assert state["best_val_loss"] == 0.5
    assert state["best_epoch"] == 3  # still by validation accuracy


def _run_state(**fields):
    from trainer.phases import RunState

    phases = [new_phase_state(_phase()) for _ in range(2)]
    return RunState(precision="off", phases=phases, **fields)


def test_run_state_survives_its_json_round_trip():
    from trainer.phases import RunState

    state = _run_state(phase=1, epoch=2, step=5, global_step=40, epoch_sums={"count": 8.0})
    state.history.append({"phase": 2, "epoch": 2})
    assert RunState.from_json(state.to_json()) == state


def test_run_state_position_numbers_phases_epochs_and_steps_as_people_read_them():
    steps = 10
    # 1-based phase and epoch; S steps of that epoch done.
    assert _run_state(phase=0, epoch=0, step=0).position(steps) == (1, 1, 0)
    assert _run_state(phase=0, epoch=1, step=4).position(steps) == (1, 2, 4)
    # At an epoch's end: the epoch just finished, all of its steps done.
    assert _run_state(phase=1, epoch=3, step=0).position(steps) == (2, 3, 10)
    finished = _run_state(phase=2, completed=True)
    finished.phases[-1]["epochs_completed"] = 4
    assert finished.position(steps) == (2, 4, 10)
