"""Where a training job is, as plain Python (no TensorFlow): the run state and the phase
state machine.

`RunState` is the position of the job (phase, epoch, step), the per-phase dicts below, the
running sums of the epoch in progress and the history; it goes into every checkpoint as
JSON, so a resumed run continues exactly where the saved one was.

One dict per phase records what Keras' ReduceLROnPlateau / EarlyStopping / best-checkpoint
callbacks would keep in memory, so a resumed run makes the same decisions as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

#: JOB/training_state.json: the job's position and per-phase results for people and scripts.
STATE_FILE = "training_state.json"


@dataclasses.dataclass
class RunState:
    """The training state saved in every checkpoint (`to_json` / `from_json`).

    `phase` and `epoch` are 0-based indexes (the phase in progress, the epochs of it already
    done) and `step` the steps done in the epoch in progress. People see 1-based numbers
    (`position`): the console, training_state.json and history.json all use those.
    """

    #: The resolved precision ("auto" resolves per machine): float16 adds the loss scaler's
    #: variables to the checkpoint, so a resume must use the same.
    precision: str
    phases: list[dict[str, Any]]
    phase: int = 0
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    #: The phase's start checkpoint is saved (its optimizer and trainable flags exist).
    phase_started: bool = False
    completed: bool = False
    #: Running sums of the epoch in progress (trainer.metrics), restored mid-epoch.
    epoch_sums: dict[str, float] = dataclasses.field(default_factory=dict)
    #: One record per finished epoch (history.json).
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: Checkpoints saved so far: the number of the next one keeps growing across phases.
    saves: int = 0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunState:
        return cls(**json.loads(text))

    def position(self, steps_per_epoch: int) -> tuple[int, int, int]:
        """(phase, epoch, step) as people read them: `step` steps of 1-based epoch `epoch` of
        1-based phase `phase` are done. At an epoch's end that is (phase, that epoch,
        steps_per_epoch); at a phase's start (phase, 1, 0); a finished job ends at its last
        phase's last epoch."""
        if self.completed:
            return len(self.phases), self.phases[-1]["epochs_completed"], steps_per_epoch
        if self.step == 0 and self.epoch > 0:
            return self.phase + 1, self.epoch, steps_per_epoch
        return self.phase + 1, self.epoch + 1, self.step


#: The metrics a phase can watch (`training.monitor`, a phase's early_stopping.monitor and
#: reduce_lr.monitor), each with whether it is maximised.
MONITOR_MAXIMISED = {"val_accuracy": True, "val_study_kappa": True, "val_loss": False}
#: The metric the best weights are picked by when a job does not say (the reference's).
DEFAULT_MONITOR = "val_accuracy"


def block_monitor(block_name: str, configured: str | None, monitor: str) -> str:
    """The metric a phase's `block_name` ("early_stopping" or "reduce_lr") watches: its own
    `configured` one, else `monitor` (training.monitor); except that the reference's
    plateau watches val_loss while it selects by val_accuracy (the notebook's callbacks)."""
    if configured is not None:
        return configured
    if block_name == "reduce_lr" and monitor == "val_accuracy":
        return "val_loss"
    return monitor


def _better(monitor: str, value: float | None, best: float | None, min_delta: float) -> bool:
    """True when `value` improves on `best` by more than `min_delta` for this monitor; an
    undefined value (None or NaN: e.g. a study kappa with one class only) never does."""
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    if MONITOR_MAXIMISED[monitor]:
        return value > best + min_delta
    return value < best - min_delta


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
        # For comparing runs (TensorBoard hparams); no decision depends on it.
        "best_val_loss": None,
        "best_val_study_kappa": None,
        "stopped_early": False,
        "finished": False,
    }


def after_epoch(
    state: dict, phase: dict, metrics: dict[str, float | None], monitor: str = DEFAULT_MONITOR
) -> tuple[dict, bool]:
    """Update the phase state with one epoch's validation metrics.

    Args:
      state: from `new_phase_state` / a previous call (not modified).
      phase: the phase's config (reduce_lr, early_stopping, epochs).
      metrics: at least "val_loss", "val_accuracy" and `monitor` (val_study_kappa may be
        None: undefined, which never counts as an improvement).
      monitor: training.monitor, the metric the best weights are picked by.
    Returns:
      (new state, improved) where improved means the best-by-`monitor` weights changed
      (the caller saves them).
    """
    state = dict(state)
    state["epochs_completed"] += 1
    epoch = state["epochs_completed"]

    # The best of each metric (for people and TensorBoard), and the best epoch by `monitor`.
    # best_val_accuracy keeps its name and meaning (the jobs and cards before the monitor).
    bests = {}
    for name in MONITOR_MAXIMISED:
        previous = state.get(f"best_{name}")
        bests[name] = _better(name, metrics.get(name), previous, 0.0)
        if bests[name]:
            state[f"best_{name}"] = float(metrics[name])
    improved = bests[monitor]
    if improved:
        state["best_epoch"] = epoch

    plateau = phase["reduce_lr"]
    if plateau["enabled"] and _patience_ran_out(state, "plateau", plateau, metrics, monitor):
        lowered = max(state["learning_rate"] * plateau["factor"], plateau["min_lr"])
        state["learning_rate"] = float(lowered)
        state["plateau_wait"] = 0

    stopping = phase["early_stopping"]
    if stopping["enabled"] and _patience_ran_out(state, "stop", stopping, metrics, monitor):
        state["stopped_early"] = epoch < phase["epochs"]
        state["finished"] = True
    if epoch >= phase["epochs"]:
        state["finished"] = True
    return state, improved


def _patience_ran_out(state: dict, prefix: str, block: dict, metrics: dict, monitor: str) -> bool:
    """Track the best value of the block's metric in state[prefix + "_best"] and the epochs
    since it improved in state[prefix + "_wait"]; True once they reach `block["patience"]`."""
    watched = block_monitor(
        "reduce_lr" if prefix == "plateau" else "early_stopping", block["monitor"], monitor
    )
    value = metrics.get(watched)
    if _better(watched, value, state[f"{prefix}_best"], block["min_delta"]):
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
        "best_val_loss": state.get("best_val_loss"),
        "best_val_study_kappa": state.get("best_val_study_kappa"),
        "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped_early"],
        "learning_rate": state["learning_rate"],
        "finished": state["finished"],
    }
