"""Checkpoints and state files in JOB/: atomic, chief-written, restored by every worker.

Layout: JOB/checkpoints/ (tf.train.CheckpointManager: model, optimizer, and the training
state as a JSON string variable), JOB/best/phase<N>/epoch<E> (best weights of a phase, model only),
JOB/training_state.json and JOB/history.json (human-readable, rewritten atomically).

Multi-worker: every worker restores from the chief's directory; every worker also saves,
since a save runs collectives that all workers must join, non-chiefs into a temp dir
deleted right after.
Optimizer restore is positional: read the state first (`read_latest_state`), build that
phase's optimizer on its variables, then `restore`.
"""

from __future__ import annotations

import tensorflow as tf

from trainer.phases import RunState

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
HISTORY_FILE = "history.json"
_STATE_KEY = "state/.ATTRIBUTES/VARIABLE_VALUE"


def join(*parts: str) -> str:
    """Join path parts with "/" (works for local paths and gs://)."""
    return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])


def copy_atomically(source: str, destination: str) -> None:
    """Copy a file to a temp file beside `destination`, then rename over it (a kill leaves
    the old file or none, never half a file); local paths and gs://."""
    tf.io.gfile.copy(source, destination + ".tmp", overwrite=True)
    tf.io.gfile.rename(destination + ".tmp", destination, overwrite=True)


def latest_checkpoint(job_dir: str) -> str | None:
    """The chief's latest checkpoint in JOB/checkpoints (what every worker restores from)."""
    return tf.train.latest_checkpoint(join(job_dir, CHECKPOINT_DIR))


def read_latest_state(job_dir: str) -> tuple[str | None, RunState | None]:
    """(latest checkpoint path, the training state saved in it), or (None, None)."""
    latest = latest_checkpoint(job_dir)
    if latest is None:
        return None, None
    raw = tf.train.load_variable(latest, _STATE_KEY)
    return latest, RunState.from_json(raw.decode() if isinstance(raw, bytes) else raw)


def _worker_temp_dir(job_dir: str, worker: int) -> str:
    return join(job_dir, "tmp", f"worker{worker}")


class JobCheckpoint:
    """The checkpoint of one phase's model + optimizer + training state."""

    def __init__(self, job_dir: str, model, optimizer, chief: bool, worker: int, keep: int):
        self.job_dir, self.chief, self.worker = job_dir, chief, worker
        # A plain (non-distributed) string variable: the JSON training state.
        with tf.device("/cpu:0"):
            self.state = tf.Variable("", dtype=tf.string, trainable=False)
        # Keras does not expose the dropout SeedGenerator states to tf.train.Checkpoint;
        # without them a resumed run draws different dropout masks.
        seeds = {
            f"seed{index}": variable
            for index, variable in enumerate(
                v for v in model.variables if "seed_generator" in v.path
            )
        }
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, state=self.state, seeds=seeds
        )
        directory = join(job_dir, CHECKPOINT_DIR) if chief else _worker_temp_dir(job_dir, worker)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep)

    def save(self, state: RunState) -> None:
        """Save model, optimizer and state (non-chiefs save to a temp dir, then delete it).

        Increments state.saves: checkpoint numbers keep growing across phases (each phase
        has a new tf.train.Checkpoint whose own save counter would restart at 1).
        """
        state.saves += 1
        self.state.assign(state.to_json())
        self.manager.save(checkpoint_number=state.saves)
        if not self.chief:
            tf.io.gfile.rmtree(_worker_temp_dir(self.job_dir, self.worker))

    def restore(self, path: str) -> None:
        """Restore everything from `path` (the chief's checkpoint)."""
        self.checkpoint.restore(path).assert_existing_objects_matched()


def best_weights_path(job_dir: str, phase_index: int, epoch: int) -> str:
    """Prefix of the best-weights checkpoint of a phase (0-based) written after `epoch`.

    One file set per epoch, never rewritten: a crash between writing a new best and the
    epoch-end checkpoint leaves the state's best_epoch pointing at a complete older file.
    """
    return join(job_dir, BEST_DIR, f"phase{phase_index + 1}", f"epoch{epoch}")


def save_best_weights(
    job_dir: str, phase_index: int, epoch: int, model, chief: bool, worker: int
) -> None:
    """Write the model's weights as the phase's best after `epoch` (1-based in the phase)."""
    checkpoint = tf.train.Checkpoint(model=model)
    if chief:
        checkpoint.write(best_weights_path(job_dir, phase_index, epoch))
    else:
        temp = _worker_temp_dir(job_dir, worker)
        checkpoint.write(join(temp, "best"))
        tf.io.gfile.rmtree(temp)


def prune_best_weights(job_dir: str, phase_index: int, keep_epoch: int | None) -> None:
    """Delete a phase's best-weight files other than `keep_epoch`'s (chief, after the
    epoch-end checkpoint has recorded which one is the best)."""
    folder = join(job_dir, BEST_DIR, f"phase{phase_index + 1}")
    keep = f"epoch{keep_epoch}."
    for path in tf.io.gfile.glob(join(folder, "epoch*")):
        if not path.rsplit("/", 1)[-1].startswith(keep):
            tf.io.gfile.remove(path)


def restore_best_weights(job_dir: str, phase_index: int, epoch: int, model) -> None:
    """Load a phase's best weights into the model (every worker, from the chief's files)."""
    path = best_weights_path(job_dir, phase_index, epoch)
    tf.train.Checkpoint(model=model).read(path).expect_partial()
