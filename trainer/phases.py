"""The phase state machine as plain functions on a small JSON-able dict (no TensorFlow).

One dict per phase records what Keras' ReduceLROnPlateau / EarlyStopping / best-checkpoint
callbacks would keep in memory. It goes into every checkpoint, so a resumed run makes the
same decisions as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any


def _better(monitor: str, value: float, best: float | None, min_delta: float) -> bool:
    """True when `value` improves on `best` by more than `min_delta` for this monitor."""
    if best is None:
        return not math.isnan(value)
    if monitor == "val_loss":
        return value < best - min_delta
    return value > best + min_delta


def new_phase_state(phase: dict) -> dict[str, Any]:
    """The state at the start of a phase."""
    return {
        "name": phase["name"],
        "learning_rate": float(phase["learning_rate"]),
        "epochs_completed": 0,
        "plateau_best": None,
        "plateau_wait": 0,
        "stop_best": None,
        "stop_wait": 0,
        "best_val_accuracy": None,
        "best_epoch": None,
        "stopped_early": False,
        "finished": False,
    }


def after_epoch(state: dict, phase: dict, metrics: dict[str, float]) -> tuple[dict, bool]:
    """Update the phase state with one epoch's validation metrics.

    Args:
      state: from `new_phase_state` / a previous call (not modified).
      phase: the phase's config (reduce_lr, early_stopping, epochs).
      metrics: at least "val_loss" and "val_accuracy".
    Returns:
      (new state, improved) where improved means the best-by-val-accuracy weights changed
      (the caller saves them).
    """
    state = dict(state)
    state["epochs_completed"] += 1
    epoch = state["epochs_completed"]

    improved = _better("val_accuracy", metrics["val_accuracy"], state["best_val_accuracy"], 0.0)
    if improved:
        state["best_val_accuracy"] = float(metrics["val_accuracy"])
        state["best_epoch"] = epoch

    plateau = phase["reduce_lr"]
    if plateau["enabled"] and _patience_ran_out(state, "plateau", plateau, metrics):
        lowered = max(state["learning_rate"] * plateau["factor"], plateau["min_lr"])
        state["learning_rate"] = float(lowered)
        state["plateau_wait"] = 0

    stopping = phase["early_stopping"]
    if stopping["enabled"] and _patience_ran_out(state, "stop", stopping, metrics):
        state["stopped_early"] = epoch < phase["epochs"]
        state["finished"] = True
    if epoch >= phase["epochs"]:
        state["finished"] = True
    return state, improved


def _patience_ran_out(state: dict, prefix: str, block: dict, metrics: dict) -> bool:
    """Track the best value of `block["monitor"]` in state[prefix + "_best"] and the epochs
    since it improved in state[prefix + "_wait"]; True once they reach `block["patience"]`."""
    value = metrics[block["monitor"]]
    if _better(block["monitor"], value, state[f"{prefix}_best"], block["min_delta"]):
        state[f"{prefix}_best"] = float(value)
        state[f"{prefix}_wait"] = 0
        return False
    state[f"{prefix}_wait"] += 1
    return state[f"{prefix}_wait"] >= block["patience"]


def should_restore_best(state: dict, phase: dict) -> bool:
    """At a phase's end: load the best weights instead of keeping the last ones?"""
    return bool(phase["early_stopping"]["restore_best"]) and state["best_epoch"] is not None


def summary_row(state: dict) -> dict[str, Any]:
    """The per-phase entry of training_state.json."""
    return {
        "name": state["name"],
        "epochs_completed": state["epochs_completed"],
        "best_val_accuracy": state["best_val_accuracy"],
        "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped_early"],
        "learning_rate": state["learning_rate"],
        "finished": state["finished"],
    }
