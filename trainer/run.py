"""Orchestration: config -> strategy -> model -> phases of epochs of steps -> exports.

`train(...)` is the whole trainer. Rerunning it on the same JOB resumes from the latest
checkpoint (the same schedule and, on CPU with the same seeds, bitwise the same weights as
an uninterrupted run); on a finished JOB it says so, prints the summary and returns 0.

Numbering: phases and epochs are 1-based everywhere a person reads them (console,
training_state.json, history.json); `RunState` keeps 0-based indexes internally.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence

from bonify import files
from bonify.dataset import read_manifest, split_files
from trainer.config import (
    dump_config,
    flag_overrides,
    load_config,
    load_saved_config,
    resume_conflict,
)
from trainer.errors import TrainerError
from trainer.phases import STATE_FILE, RunState

#: Exit codes after a signal-triggered save: 128 + the signal, so orchestrators restart us.
SIGTERM_EXIT_CODE = 143
SIGINT_EXIT_CODE = 130
RESUME_HINT = "checkpoint saved; rerun the same command to resume"

#: The first stop signal this process received (SIGTERM or SIGINT), None until then.
_stop_signal: int | None = None


class _Console:
    """The chief's stdout. It knows when a progress bar is mid-line, so that every other
    message starts on its own line."""

    def __init__(self) -> None:
        self.chief = True
        self.bar_open = False

    def line(self, message: str, every_worker: bool = False) -> None:
        if not (self.chief or every_worker):
            return
        if self.bar_open:
            print(flush=True)
            self.bar_open = False
        print(message, flush=True)


_console = _Console()


def _on_stop_signal(signum, frame):  # noqa: ARG001 - signal handler signature
    """SIGTERM or Ctrl-C: save at the next step (all workers agree), then exit. A second
    Ctrl-C aborts at once, without saving."""
    global _stop_signal
    # os.write, not print: the handler may interrupt a print of the main thread.
    newline = "\n" if _console.bar_open else ""
    if _stop_signal is not None and signum == signal.SIGINT:
        os.write(2, f"{newline}trainer: second Ctrl-C: aborting without saving\n".encode())
        os._exit(SIGINT_EXIT_CODE)
    if _stop_signal is None:
        _stop_signal = signum
    name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    again = " (Ctrl-C again to abort without saving)" if signum == signal.SIGINT else ""
    os.write(2, f"{newline}trainer: {name} received, saving at the next step{again}\n".encode())


def _stop_exit_code() -> int:
    # A worker stopped by another worker's signal exits as after SIGTERM (a restartable stop).
    return SIGINT_EXIT_CODE if _stop_signal == signal.SIGINT else SIGTERM_EXIT_CODE


def _stop_message(position: tuple[int, int, int]) -> str:
    """The line printed after the stop's checkpoint is saved at `position` (RunState)."""
    phase, epoch, step = position
    where = f"at phase {phase} epoch {epoch} step {step}"
    if _stop_signal == signal.SIGINT:
        return f"interrupted {where}; {RESUME_HINT}"
    if _stop_signal == signal.SIGTERM:
        return f"stopped after SIGTERM {where}; {RESUME_HINT}"
    return f"stopped after SIGTERM or Ctrl-C to another worker {where}; {RESUME_HINT}"


def _summary_text(phase_rows: list[dict], job_dir: str) -> str:
    lines = ["", "Training summary"]
    for number, row in enumerate(phase_rows, start=1):
        best = row["best_val_accuracy"]
        # Rows of jobs trained before the study kappa was computed have no such key.
        kappa = row.get("best_val_study_kappa")
        lines.append(
            f"  phase {number} {row['name']}: {row['epochs_completed']} epochs, "
            f"best val accuracy {best if best is None else round(best, 4)}"
            f"{'' if kappa is None else f', best val study kappa {round(kappa, 4)}'}"
            f"{' (stopped early)' if row['stopped_early'] else ''}"
        )
    lines += [
        f"  model: {job_dir}/model/final.keras   SavedModel: {job_dir}/export",
        f"  TensorBoard logs: {job_dir}/tensorboard",
        f"  open them with: tensorboard --logdir {job_dir}/tensorboard --host 127.0.0.1",
    ]
    return "\n".join(lines)


def _read_job_state(job_dir: str) -> dict | None:
    """JOB/training_state.json, or None. Local paths are read without TensorFlow."""
    path = f"{job_dir.rstrip('/')}/{STATE_FILE}"
    return json.loads(files.read_text(path)) if files.exists(path) else None


def resolve_verbose(verbose: int | str, stdout=None) -> int:
    """`training.verbose`: 0, 1 (progress bar), 2 (one line per epoch); "auto" is 1 on a
    terminal and 2 otherwise (pods, CI, `> log`: no ANSI escapes, `\\r` or `\\b`)."""
    if verbose != "auto":
        return int(verbose)
    stdout = stdout or sys.stdout
    return 1 if hasattr(stdout, "isatty") and stdout.isatty() else 2


def train(
    data_dir: str,
    job_dir: str,
    config_file: str | None = None,
    overrides: Sequence[str] = (),
    strategy_name: str | None = None,
    mixed_precision: str | None = None,
    xla: bool | None = None,
    tf_config_from_k8s: bool = False,
) -> int:
    """Train (or resume) the job; returns the process exit code (0, or 143 after SIGTERM,
    130 after Ctrl-C: a checkpoint was saved and the same command resumes)."""
    global _stop_signal
    _stop_signal = None  # a new run in this process starts unstopped
    if tf_config_from_k8s:
        from trainer import k8s_cluster

        os.environ["TF_CONFIG"] = json.dumps(k8s_cluster.tf_config_from_environ(os.environ))

    # Everything a user can get wrong is checked before TensorFlow is imported (seconds).
    config = load_config(
        config_file, [*overrides, *flag_overrides(strategy_name, mixed_precision, xla)]
    )
    manifest = read_manifest(data_dir)
    if manifest.image_size != config["data"]["image_size"]:
        raise TrainerError(
            f"config key 'data.image_size' is {config['data']['image_size']} but "
            f"{manifest.path} says image_size {manifest.image_size}"
        )
    train_files = split_files(data_dir, "train")
    validation_files = split_files(data_dir, "validation")
    if manifest.splits["train"].images <= 0 or manifest.splits["validation"].images <= 0:
        raise TrainerError(f"{data_dir}/manifest.json: the train or validation split is empty")
    if any(phase["class_weights"] for phase in config["phases"]):
        check_class_counts(
            manifest.splits["train"].class_counts, manifest.splits["train"].images, data_dir
        )
    previous = _read_job_state(job_dir)
    if previous and previous.get("completed"):
        print(
            f"{job_dir} is already finished ({STATE_FILE} says completed): nothing to train; "
            "use a new --job_dir to train again"
        )
        print(_summary_text(previous["phases"], job_dir))
        return 0
    weights = config["model"]["weights"]
    if weights not in ("imagenet", "none") and not files.isfile(weights):
        raise TrainerError(f"config key 'model.weights': {weights}: no such file")
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _Trainer(config, manifest, data_dir, job_dir, train_files, validation_files).run()
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)


class _Trainer:
    """The state of one training process (see `train`)."""

    def __init__(self, config, manifest, data_dir, job_dir, train_files, validation_files):
        import keras
        import tensorflow as tf

        from trainer import distribute

        self.config, self.manifest, self.job_dir = config, manifest, job_dir
        self.data_dir = data_dir
        self.train_files, self.validation_files = train_files, validation_files
        self.encoding = manifest.encoding
        dist = config["distribute"]
        distribute.split_cpu(dist["logical_cpus"])
        self.strategy = distribute.make_strategy(dist["strategy"])
        # After the strategy: MultiWorkerMirroredStrategy replaces handlers installed earlier.
        signal.signal(signal.SIGTERM, _on_stop_signal)
        signal.signal(signal.SIGINT, _on_stop_signal)
        self.chief = distribute.is_chief(self.strategy)
        _console.chief, _console.bar_open = self.chief, False
        self.worker = distribute.worker_id(self.strategy)
        self.precision = distribute.resolve_precision(dist["mixed_precision"])
        distribute.set_precision(self.precision)
        training = config["training"]
        self.verbose = resolve_verbose(training["verbose"])
        _console.line(
            f"Strategy: {type(self.strategy).__name__}, {self.strategy.num_replicas_in_sync} "
            f"replicas in sync; precision {self.precision}; XLA {dist['xla']}"
        )
        keras.utils.set_random_seed(training["seed"])
        with self.strategy.scope():
            from trainer.model import build_model

            self.model = build_model(config)
        self.train_images = manifest.splits["train"].images
        self.validation_images = manifest.splits["validation"].images
        global_batch = training["global_batch_size"]
        if global_batch % self.strategy.num_replicas_in_sync:
            raise TrainerError(
                f"config key 'training.global_batch_size' ({global_batch}) is not divisible by "
                f"the {self.strategy.num_replicas_in_sync} replicas"
            )
        from trainer.data import default_steps
        from trainer.losses import balanced_class_weights

        self.steps_per_epoch = training["steps_per_epoch"] or default_steps(
            self.train_images, global_batch, training=True
        )
        self.validation_steps = training["validation_steps"] or default_steps(
            self.validation_images, global_batch, training=False
        )
        counts = manifest.splits["train"].class_counts
        self.class_weights = tf.constant(balanced_class_weights(counts))
        self.no_class_weights = tf.ones_like(self.class_weights)
        from trainer.tensorboard import Summaries

        self.summaries = Summaries(job_dir, self.chief)
        # Restores after a non-finite loss in this process (bounded by max_nonfinite_retries).
        self.nonfinite_restores = 0

    # ---- state -------------------------------------------------------------------------

    def _fresh_state(self) -> RunState:
        from trainer.phases import new_phase_state

        return RunState(
            precision=self.precision, phases=[new_phase_state(self.config["phases"][0])]
        )

    def _write_state_files(self, state: RunState) -> None:
        if not self.chief:
            return
        from trainer import checkpoint as ckpt_lib
        from trainer.phases import summary_row

        phase, epoch, step = state.position(self.steps_per_epoch)
        public = {
            "phase": phase,
            "phase_name": self.config["phases"][phase - 1]["name"],
            "epoch": epoch,
            "step_in_epoch": step,
            "global_step": state.global_step,
            "completed": state.completed,
            "phases": [summary_row(row) for row in state.phases],
        }
        files.write_text_atomically(
            ckpt_lib.join(self.job_dir, STATE_FILE), json.dumps(public, indent=2)
        )
        files.write_text_atomically(
            ckpt_lib.join(self.job_dir, ckpt_lib.HISTORY_FILE),
            json.dumps(state.history, indent=2),
        )

    # ---- main loop ---------------------------------------------------------------------

    def run(self) -> int:
        import tensorflow as tf

        from trainer import checkpoint as ckpt_lib
        from trainer.tensorboard import recipe_hparams

        latest, state = ckpt_lib.read_latest_state(self.job_dir)
        config_path = ckpt_lib.join(self.job_dir, "config.yaml")
        if latest is not None and tf.io.gfile.exists(config_path):
            self._check_resumable(load_saved_config(config_path))
        if state is not None and state.precision != self.precision:
            raise TrainerError(
                f"{self.job_dir} was trained with mixed precision {state.precision!r}, this "
                f"run resolves distribute.mixed_precision="
                f"{self.config['distribute']['mixed_precision']!r} to {self.precision!r}: "
                f"resume with --mixed_precision {state.precision}, or use a new --job_dir"
            )
        if self.chief:
            tf.io.gfile.makedirs(self.job_dir)
            files.write_text_atomically(config_path, dump_config(self.config))
            run_values = {
                "resize": self.manifest.resize,
                "encoding": self.encoding,
                "precision": self.precision,
                "strategy": type(self.strategy).__name__,
                "replicas": self.strategy.num_replicas_in_sync,
            }
            self.summaries.hparams(
                recipe_hparams(self.config, run_values), len(self.config["phases"])
            )
        if state is None:
            state = self._fresh_state()
        else:
            phase, epoch, step = state.position(self.steps_per_epoch)
            _console.line(
                f"Resuming from {latest}: phase {phase} epoch {epoch} step {step} were done"
            )
        phases = self.config["phases"]
        while True:
            phase_index = min(state.phase, len(phases) - 1)
            checkpoint = self._build_phase(phase_index)
            if latest is not None:
                checkpoint.restore(latest)
                latest = None
            if state.completed or state.phase >= len(phases):
                break
            from trainer.loop import set_learning_rate

            set_learning_rate(self.optimizer, state.phases[phase_index]["learning_rate"])
            if not state.phase_started:
                state.phase_started = True
                checkpoint.save(state)
                self._write_state_files(state)
            result = self._run_phase(phase_index, state, checkpoint)
            if result == "stopped":
                return _stop_exit_code()
            if result == "restore":
                latest, state = ckpt_lib.read_latest_state(self.job_dir)
                continue
            saved_position = state.position(self.steps_per_epoch)
            self._finish_phase(phase_index, state, checkpoint)
            if state.completed:
                break
            # Before building and tracing the next phase (minutes for a DenseNet): a rerun
            # redoes only the idempotent end of the phase just finished.
            if self._stop_agreed(saved_position):
                return _stop_exit_code()
        self._write_state_files(state)
        from trainer.phases import summary_row

        _console.line(_summary_text([summary_row(row) for row in state.phases], self.job_dir))
        # Every worker prints it: equal lines in all pods show the replicas stayed in sync.
        print(f"worker {self.worker} weights sha256: {weights_fingerprint(self.model)}", flush=True)
        return 0

    def _check_resumable(self, saved: dict) -> None:
        """TrainerError when this run's config cannot continue the job's checkpoints."""
        conflict = resume_conflict(saved, self.config)
        if conflict is None:
            return
        key, old, new = conflict
        raise TrainerError(
            f"{self.job_dir} was trained with config key {key!r} = {old!r}, this run has {new!r}: "
            "rerun with the job's settings (JOB/config.yaml) to resume, or use a new --job_dir"
        )

    def _build_phase(self, phase_index: int):
        from trainer.checkpoint import JobCheckpoint
        from trainer.loop import make_eval_step, make_optimizer, make_train_step
        from trainer.model import set_trainable, trainable_variables

        phase = self.config["phases"][phase_index]
        set_trainable(self.model, phase["trainable"])
        with self.strategy.scope():
            # A new optimizer per phase, built on this phase's variables inside the scope.
            self.optimizer = make_optimizer(
                phase["optimizer"], phase["learning_rate"], self.precision
            )
            self.optimizer.build(trainable_variables(self.model))
        weights = self.class_weights if phase["class_weights"] else self.no_class_weights
        # A new tf.function per phase: a traced step keeps the old variables and optimizer.
        self.train_step = make_train_step(
            self.strategy,
            self.model,
            self.optimizer,
            weights,
            self.config["loss"],
            self.config["training"]["global_batch_size"],
            self.config["distribute"]["xla"],
        )
        self.eval_step = make_eval_step(self.strategy, self.model, self.config["loss"])
        training = self.config["training"]
        return JobCheckpoint(
            self.job_dir,
            self.model,
            self.optimizer,
            self.chief,
            self.worker,
            training["max_checkpoints"],
        )

    def _run_phase(self, phase_index: int, state: RunState, checkpoint) -> str:
        """Epochs until the phase finishes: "finished", "stopped" (a signal) or "restore"."""
        from trainer import distribute
        from trainer.loop import means, set_learning_rate
        from trainer.phases import after_epoch

        phase = self.config["phases"][phase_index]
        while not state.phases[phase_index]["finished"]:
            started = time.time()
            result = self._run_epoch(phase_index, state, checkpoint)
            if result != "done":
                return result
            train_seconds = time.time() - started
            metrics, _ = self._validate()
            train_metrics = means(state.epoch_sums)
            learning_rate = state.phases[phase_index]["learning_rate"]
            phase_state, improved = after_epoch(
                state.phases[phase_index], phase, metrics, self.config["training"]["monitor"]
            )
            if improved:
                from trainer.checkpoint import save_best_weights

                save_best_weights(
                    self.job_dir,
                    phase_index,
                    phase_state["best_epoch"],
                    self.model,
                    self.chief,
                    self.worker,
                )
                # Before any worker can read the best weights back (at the end of the phase).
                distribute.barrier(self.strategy)
            record = {
                "phase": phase_index + 1,
                "phase_name": phase["name"],
                "epoch": state.epoch + 1,
                "global_step": state.global_step,
                "learning_rate": learning_rate,
                **train_metrics,
                **metrics,
            }
            state.history.append(record)
            state.phases[phase_index] = phase_state
            state.epoch += 1
            state.step = 0
            state.epoch_sums = {}
            set_learning_rate(self.optimizer, phase_state["learning_rate"])
            checkpoint.save(state)
            self._write_state_files(state)
            if self.chief:
                from trainer.checkpoint import prune_best_weights

                prune_best_weights(self.job_dir, phase_index, phase_state["best_epoch"])
            self._log_epoch(phase_index, record, train_seconds)
            if phase_state["learning_rate"] < learning_rate:
                reduce_lr = phase["reduce_lr"]
                patience = reduce_lr["patience"]
                _console.line(
                    f"phase {phase_index + 1} epoch {record['epoch']}: {reduce_lr['monitor']} "
                    f"did not improve for {patience} epoch{'' if patience == 1 else 's'}; "
                    f"learning rate {learning_rate:.2e} -> {phase_state['learning_rate']:.2e}"
                )
            # A signal during validation or the epoch-end save: the checkpoint just saved
            # is the place to stop, without waiting for the next train step.
            if self._stop_agreed(state.position(self.steps_per_epoch)):
                return "stopped"
        return "finished"

    def _log_epoch(self, phase_index: int, record: dict, train_seconds: float) -> None:
        """TensorBoard's epoch scalars and the console's epoch line (both from METRICS)."""
        from trainer.loop import METRICS

        step = record["global_step"]
        scalars = {f"epoch/{metric.name}": record[metric.name] for metric in METRICS}
        scalars.update(
            {f"validation/{metric.name}": record[f"val_{metric.name}"] for metric in METRICS}
        )
        # Undefined (None: the validation steps saw one class only) is left out, not drawn as 0.
        scalars.update(
            {
                f"validation/{name.removeprefix('val_')}": record[name]
                for name in STUDY_METRICS
                if record[name] is not None
            }
        )
        scalars.update(
            {"phase/learning_rate": record["learning_rate"], "phase/index": phase_index + 1}
        )
        self.summaries.scalars(scalars, step)
        if self.verbose == 0:
            return
        phases = self.config["phases"]
        steps_run = self.steps_run_in_epoch
        rate = steps_run * self.config["training"]["global_batch_size"] / max(train_seconds, 1e-9)
        train = " ".join(f"{m.label} {record[m.name]:.4f}" for m in METRICS)
        validation = " ".join(
            [f"val_{m.label} {record['val_' + m.name]:.4f}" for m in METRICS]
            + [f"{name} {_four_places(record[name])}" for name in STUDY_METRICS]
        )
        _console.line(
            f"phase {phase_index + 1}/{len(phases)} {record['phase_name']} epoch "
            f"{record['epoch']}/{phases[phase_index]['epochs']}: {train} | {validation} | "
            f"lr {record['learning_rate']:.2e} | {rate:.1f} images/s, {train_seconds:.1f} s"
        )

    def _stop_agreed(self, saved_position: tuple[int, int, int]) -> bool:
        """True when any worker got a stop signal (every worker gets the same answer); the
        checkpoint at `saved_position` was saved just before."""
        from trainer import distribute

        if not distribute.any_worker(self.strategy, _stop_signal is not None):
            return False
        _console.line(_stop_message(saved_position), every_worker=True)
        return True

    def _data_error(self, error: Exception, files: list[str]):
        from trainer.data import find_corrupt_shard

        bad = find_corrupt_shard(files, self.encoding, self.config["data"]["image_size"])
        if bad is None:
            raise error
        shard, problem = bad
        raise TrainerError(f"corrupt shard {shard}: {problem}; rerun beam_preprocess")

    def _log_input_images(self, dataset_fn, global_step: int) -> None:
        """A few (augmented) input images once per phase, captioned with their class, from a
        non-distributed copy of this epoch's pipeline."""
        import tensorflow as tf

        from bonify.vocabulary import CLASS_NAMES

        try:
            first = next(iter(dataset_fn(tf.distribute.InputContext())))
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            self._data_error(error, self.train_files)
        self.summaries.images(
            first["image"],
            first["label"].numpy(),
            list(CLASS_NAMES),
            global_step,
            self.config["training"]["tensorboard_images"],
        )

    def _run_epoch(self, phase_index: int, state: RunState, checkpoint) -> str:
        import keras
        import tensorflow as tf

        from trainer.data import train_dataset_fn
        from trainer.loop import COUNT, METRICS, means

        training = self.config["training"]
        steps, start = self.steps_per_epoch, state.step
        self.steps_run_in_epoch = 0
        dataset_fn = train_dataset_fn(
            self.train_files,
            self.encoding,
            self.config,
            phase_index,
            state.epoch,
            start,
            steps,
        )
        dataset = self.strategy.distribute_datasets_from_function(dataset_fn)
        iterator = iter(dataset)
        if start == 0 and state.epoch == 0 and self.summaries.enabled:
            self._log_input_images(dataset_fn, state.global_step)
        phase = self.config["phases"][phase_index]
        progress = None
        if self.chief and self.verbose == 1:
            _console.line(
                f"Phase {phase_index + 1}/{len(self.config['phases'])} ({phase['name']}), "
                f"epoch {state.epoch + 1}/{phase['epochs']}"
            )
            # The bar shows the epoch's running means (the values of the epoch line).
            progress = keras.utils.Progbar(
                steps, verbose=1, stateful_metrics=[metric.label for metric in METRICS]
            )
            if start:
                progress.update(start)
                _console.bar_open = True
        sums = {key: float(value) for key, value in state.epoch_sums.items()}
        scaled = self.precision == "float16"
        started = time.time()
        for step in range(start, steps):
            stop_flag = tf.constant(1.0 if _stop_signal is not None else 0.0)
            try:
                out = self.train_step(iterator, stop_flag)
                out = {key: float(value) for key, value in out.items()}
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
                self._data_error(error, self.train_files)
            if out["nonfinite"] > 0 and not scaled:
                return self._nonfinite(state)
            # A non-finite loss here is a float16 step the loss scaler skipped: keep it out of
            # the epoch's means.
            if math.isfinite(out["loss_sum"]):
                for key in (*(metric.sum_key for metric in METRICS), COUNT):
                    sums[key] = sums.get(key, 0.0) + out[key]
            state.step, state.global_step = step + 1, state.global_step + 1
            state.epoch_sums = sums
            self.steps_run_in_epoch = step + 1 - start
            if progress is not None:
                running = means(sums)
                progress.update(step + 1, [(m.label, running[m.name]) for m in METRICS])
                _console.bar_open = step + 1 < steps
            if training["log_every_steps"] and state.global_step % training["log_every_steps"] == 0:
                count = max(out[COUNT], 1.0)
                scalars = {f"train/{m.name}": out[m.sum_key] / count for m in METRICS}
                scalars["train/images_per_second"] = (
                    self.steps_run_in_epoch
                    * training["global_batch_size"]
                    / max(time.time() - started, 1e-9)
                )
                self.summaries.scalars(scalars, state.global_step)
            if out["stop"] > 0:
                checkpoint.save(state)
                self._write_state_files(state)
                _console.line(
                    _stop_message(state.position(self.steps_per_epoch)), every_worker=True
                )
                return "stopped"
            every = training["checkpoint_every_steps"]
            if every and (step + 1) % every == 0 and step + 1 < steps:
                checkpoint.save(state)
        return "done"

    def _nonfinite(self, state: RunState) -> str:
        from trainer import checkpoint as ckpt_lib

        retries = self.config["training"]["max_nonfinite_retries"]
        self.nonfinite_restores += 1
        if self.nonfinite_restores > retries or ckpt_lib.latest_checkpoint(self.job_dir) is None:
            raise TrainerError(
                f"non-finite loss at global step {state.global_step} after {retries} restores: "
                "lower the learning rate or check the data"
            )
        _console.line(
            f"non-finite loss at global step {state.global_step}: restoring the last checkpoint "
            f"(retry {self.nonfinite_restores}/{retries})",
            every_worker=True,
        )
        return "restore"

    def _validate(self) -> tuple[dict, dict]:
        """(metrics, examples) of the model on the validation steps: METRICS' means and
        STUDY_METRICS as "val_" names; examples: EXAMPLE_KEYS -> numpy arrays over the real
        (not padding) validation images, the same on every worker."""
        import numpy as np
        import tensorflow as tf

        from trainer.data import eval_dataset_fn
        from trainer.loop import COUNT, EXAMPLE_KEYS, METRICS, means

        dataset_fn = eval_dataset_fn(
            self.validation_files,
            self.encoding,
            self.config,
            self.validation_images,
            self.validation_steps,
        )
        iterator = iter(self.strategy.distribute_datasets_from_function(dataset_fn))
        sums = dict.fromkeys((*(metric.sum_key for metric in METRICS), COUNT), 0.0)
        batches: dict[str, list] = {key: [] for key in EXAMPLE_KEYS}
        for _ in range(self.validation_steps):
            try:
                out, examples = self.eval_step(iterator)
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
                self._data_error(error, self.validation_files)
            for key in sums:
                sums[key] += float(out[key])
            for key in EXAMPLE_KEYS:
                batches[key].append(examples[key].numpy())
        gathered = {key: np.concatenate(values) for key, values in batches.items()}
        real = gathered.pop("weight") > 0
        gathered = {key: values[real] for key, values in gathered.items()}
        study = study_metrics(gathered["probabilities"], gathered["label"], gathered["study"])
        return {**means(sums, prefix="val_"), **study}, gathered

    def _finish_phase(self, phase_index: int, state: RunState, checkpoint) -> None:
        """Restore the phase's best weights, save its model, and move `state` to the next
        phase (or to completed, with the final model and the SavedModel)."""
        from trainer import checkpoint as ckpt_lib
        from trainer.export import export_saved_model, save_keras
        from trainer.phases import new_phase_state, should_restore_best

        phase = self.config["phases"][phase_index]
        phase_state = state.phases[phase_index]
        restored = should_restore_best(phase_state, phase)
        if restored:
            ckpt_lib.restore_best_weights(
                self.job_dir, phase_index, phase_state["best_epoch"], self.model
            )
        _console.line(
            _phase_end_line(
                phase_index, phase, phase_state, restored, self.config["training"]["monitor"]
            )
        )
        model_dir = ckpt_lib.join(self.job_dir, "model")
        best_path = ckpt_lib.join(model_dir, f"phase{phase_index + 1}_best.keras")
        if self.chief:
            save_keras(self.model, best_path)
        state.phase = phase_index + 1
        state.epoch, state.step, state.epoch_sums = 0, 0, {}
        state.phase_started = False
        self.summaries.best_metrics(state.phases, state.global_step)
        if state.phase < len(self.config["phases"]):
            state.phases = state.phases + [new_phase_state(self.config["phases"][state.phase])]
            return
        # The final model's validation predictions, for its operating point (every worker
        # takes part in the gathers; the chief fits and writes).
        _, examples = self._validate()
        if self.chief:
            final = ckpt_lib.join(model_dir, "final.keras")
            ckpt_lib.copy_atomically(best_path, final)
            self._write_model_card(model_dir, state)
            self._write_operating_point(final, examples)
            # After the card: the export reads the image size and resize mode from it.
            export_saved_model(final, ckpt_lib.join(self.job_dir, "export"))
        state.completed = True
        checkpoint.save(state)
        self._write_state_files(state)

    def _write_model_card(self, model_dir: str, state: RunState) -> None:
        """JOB/model/model_card.json and .md beside final.keras (see bonify.model_card)."""
        from bonify.model_card import build_card, write_card
        from trainer.phases import summary_row

        card = build_card(
            config=self.config,
            # The same text run() wrote to JOB/config.yaml, so the card's hash is that file's.
            config_text=dump_config(self.config),
            manifest=self.manifest,
            phase_rows=[summary_row(row) for row in state.phases],
        )
        write_card(model_dir, card)

    def _write_operating_point(self, final: str, examples: dict) -> None:
        """Fit the final model's operating point on its validation `examples` (see
        `_validate`) and write it into its card (see
        bonify.study_metrics.fit_operating_point); one line says what it changes. A split
        that cannot be fitted (one class only) leaves the card's defaults."""
        from bonify.model_card import set_operating_point
        from bonify.study_metrics import fit_operating_point

        try:
            fitted = fit_operating_point(
                examples["probabilities"], examples["label"], examples["study"]
            )
        except ValueError as error:
            _console.line(f"operating point not fitted on the validation split: {error}")
            return
        fitted["source"] = "trainer"
        fitted["fitted_on"] = {
            "split": "validation",
            "data_dir": self.data_dir,
            "n_studies": fitted["n_studies"],
            "n_images": fitted["n_images"],
        }
        set_operating_point(final, fitted)
        _console.line(
            f"operating point (validation, {fitted['n_studies']} studies): threshold "
            f"{fitted['threshold']:.3f}, temperature {fitted['temperature']:.3f}; study kappa "
            f"{_four_places(fitted['kappa_at_default_threshold'])} at 0.5 -> "
            f"{_four_places(fitted['kappa_at_threshold'])} at the threshold (both with the "
            "temperature); written to the model card"
        )


#: Validation's study-level metrics (history.json names), after METRICS' in the epoch line.
STUDY_METRICS = ("val_study_kappa", "val_study_auroc")


def study_metrics(probabilities, labels, studies) -> dict[str, float | None]:
    """MURA's metric on validation images: a study's P(abnormal) is the mean over its images
    of the summed abnormal-class mass, called abnormal at >= 0.5; Cohen's kappa of that call
    and the AUROC of the score against the studies' truth, as STUDY_METRICS (None where
    undefined: one class only, or no images). probabilities float [N, 14], labels int [N],
    studies [N] any per-study key."""
    from bonify.study_metrics import abnormal_probability, binary_report, study_scores

    if len(labels) == 0:
        return dict.fromkeys(STUDY_METRICS)
    _, truth = study_scores(labels % 2, studies, "max")
    _, scores = study_scores(abnormal_probability(probabilities), studies, "mean")
    report = binary_report(truth, scores, 0.5)
    return {"val_study_kappa": report["kappa"], "val_study_auroc": report["auroc"]}


def _four_places(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


#: How the console names each monitor.
_MONITOR_LABELS = {"val_accuracy": "val_acc", "val_loss": "val_loss"}


def _phase_end_line(
    phase_index: int, phase: dict, phase_state: dict, restored: bool, monitor: str
) -> str:
    """What a phase did: epochs run, stopped early or not, which weights it ends with."""
    epochs = phase_state["epochs_completed"]
    how = (
        f"stopped early after {epochs} of {phase['epochs']} epochs"
        if phase_state["stopped_early"]
        else f"{epochs} epochs, not stopped early"
    )
    # The best value of the monitor is the value at the best epoch.
    best = phase_state.get(f"best_{monitor}")
    label = _MONITOR_LABELS.get(monitor, monitor)
    if restored:
        weights = f"restored best epoch {phase_state['best_epoch']} ({label} {best:.4f})"
    else:
        weights = "kept the last epoch's weights"
        if best is not None:
            weights += f" (best {label} {best:.4f} at epoch {phase_state['best_epoch']})"
    return f"phase {phase_index + 1} {phase['name']} finished: {how}; {weights}"


def check_class_counts(counts, train_images: int, data_dir: str) -> None:
    """TrainerError unless the manifest's train class counts can weight the loss: without
    them every class weight would be 0, and a run would train on a zero loss."""
    from bonify.vocabulary import CLASS_NAMES

    where = f"{data_dir}/manifest.json splits.train.class_counts"
    if not isinstance(counts, dict) or not counts:
        raise TrainerError(
            f"{where}: missing; needed for class weights (or set class_weights: false)"
        )
    unknown = sorted(set(counts) - set(CLASS_NAMES))
    if unknown:
        raise TrainerError(f"{where}: unknown class names {unknown[:3]}")
    if sum(int(value) for value in counts.values()) != train_images:
        raise TrainerError(f"{where}: the counts do not add up to the {train_images} train images")


def weights_fingerprint(model) -> str:
    """sha256 over the bytes of every model weight, in order."""
    import hashlib

    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()
