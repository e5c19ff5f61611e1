"""Orchestration: config -> strategy -> model -> phases of epochs of steps -> exports.

`train(...)` is the whole trainer. Rerunning it on the same JOB resumes from the latest
checkpoint (the same schedule and, on CPU with the same seeds, bitwise the same weights as
an uninterrupted run); on a finished JOB it prints the summary and returns 0.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence

from bonify.dataset import read_manifest, split_files
from trainer.config import dump_config, load_config, load_saved_config, resume_conflict
from trainer.errors import TrainerError

#: Exit code after a SIGTERM-triggered save (128 + SIGTERM), so orchestrators restart us.
SIGTERM_EXIT_CODE = 143

_stop_requested = False


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    global _stop_requested
    _stop_requested = True
    print("trainer: SIGTERM received, saving at the next step", file=sys.stderr, flush=True)


def _log(message: str, chief: bool = True) -> None:
    if chief:
        print(message, flush=True)


def _summary_text(state: dict, job_dir: str) -> str:
    lines = ["", "Training summary"]
    for index, row in enumerate(state["phases"]):
        best = row["best_val_accuracy"]
        lines.append(
            f"  phase {index + 1} {row['name']}: {row['epochs_completed']} epochs, "
            f"best val accuracy {best if best is None else round(best, 4)}"
            f"{' (stopped early)' if row['stopped_early'] else ''}"
        )
    lines += [
        f"  model: {job_dir}/model/final.keras   SavedModel: {job_dir}/export",
        f"  TensorBoard logs: {job_dir}/tensorboard",
        f"  open them with: tensorboard --logdir {job_dir}/tensorboard --host 127.0.0.1",
    ]
    return "\n".join(lines)


def _apply_flags(overrides: list[str], strategy, mixed_precision, xla) -> list[str]:
    overrides = list(overrides)
    if strategy:
        overrides.append(f"distribute.strategy={strategy}")
    if mixed_precision:
        overrides.append(f"distribute.mixed_precision={mixed_precision}")
    if xla is not None:
        overrides.append(f"distribute.xla={'true' if xla else 'false'}")
    return overrides


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
    """Train (or resume) the job; returns the process exit code (0, or 143 after SIGTERM)."""
    global _stop_requested
    _stop_requested = False  # a new run in this process starts unstopped
    if tf_config_from_k8s:
        from trainer import k8s_cluster

        os.environ["TF_CONFIG"] = json.dumps(k8s_cluster.tf_config_from_environ(os.environ))

    config = load_config(
        config_file, _apply_flags(list(overrides), strategy_name, mixed_precision, xla)
    )
    import tensorflow as tf

    from trainer import checkpoint as ckpt_lib

    manifest = read_manifest(data_dir)
    if int(manifest.get("image_size", -1)) != config["data"]["image_size"]:
        raise TrainerError(
            f"config key 'data.image_size' is {config['data']['image_size']} but "
            f"{data_dir}/manifest.json says image_size {manifest.get('image_size')}"
        )
    train_files = split_files(data_dir, "train")
    validation_files = split_files(data_dir, "validation")
    previous = ckpt_lib.read_json(ckpt_lib.join(job_dir, ckpt_lib.STATE_FILE))
    if previous and previous.get("completed"):
        print(_summary_text(previous, job_dir))
        return 0
    weights = config["model"]["weights"]
    if weights not in ("imagenet", "none") and not tf.io.gfile.exists(weights):
        raise TrainerError(f"config key 'model.weights': {weights}: no such file")
    return _Trainer(config, manifest, data_dir, job_dir, train_files, validation_files).run()


class _Trainer:
    """The state of one training process (see `train`)."""

    def __init__(self, config, manifest, data_dir, job_dir, train_files, validation_files):
        import keras
        import tensorflow as tf

        from trainer import distribute

        self.config, self.manifest, self.job_dir = config, manifest, job_dir
        self.train_files, self.validation_files = train_files, validation_files
        self.encoding = manifest.get("encoding", "png")
        dist = config["distribute"]
        distribute.split_cpu(dist["logical_cpus"])
        self.strategy = distribute.make_strategy(dist["strategy"])
        # After the strategy: MWMS replaces handlers installed earlier (PLATFORM_FACTS).
        signal.signal(signal.SIGTERM, _on_sigterm)
        self.chief = distribute.is_chief(self.strategy)
        self.worker = distribute.worker_id(self.strategy)
        self.precision = distribute.resolve_precision(dist["mixed_precision"])
        distribute.set_precision(self.precision)
        _log(
            f"Strategy: {type(self.strategy).__name__}, {self.strategy.num_replicas_in_sync} "
            f"replicas in sync; precision {self.precision}; XLA {dist['xla']}",
            self.chief,
        )
        training = config["training"]
        keras.utils.set_random_seed(training["seed"])
        with self.strategy.scope():
            from trainer.model import build_model

            self.model = build_model(config)
        splits = manifest.get("splits", {})
        self.train_images = int(splits.get("train", {}).get("images", 0))
        self.validation_images = int(splits.get("validation", {}).get("images", 0))
        if self.train_images <= 0 or self.validation_images <= 0:
            raise TrainerError(f"{data_dir}/manifest.json: the train or validation split is empty")
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
        counts = splits.get("train", {}).get("class_counts", {})
        if any(phase["class_weights"] for phase in config["phases"]):
            check_class_counts(counts, self.train_images, data_dir)
        self.class_weights = tf.constant(balanced_class_weights(counts))
        self.no_class_weights = tf.ones_like(self.class_weights)
        from trainer.tensorboard import Summaries

        self.summaries = Summaries(job_dir, self.chief)
        # Restores after a non-finite loss in this process (bounded by max_nonfinite_retries).
        self.nonfinite_restores = 0

    # ---- state -------------------------------------------------------------------------

    def _fresh_state(self) -> dict:
        from trainer.phases import new_phase_state

        return {
            "phase": 0,
            "epoch": 0,
            "step": 0,
            "global_step": 0,
            "phase_started": False,
            "completed": False,
            "phases": [new_phase_state(self.config["phases"][0])],
            "epoch_sums": {},
            "history": [],
            # The resolved precision ("auto" resolves per machine): float16 adds the loss
            # scaler's variables to the checkpoint, so a resume must use the same.
            "precision": self.precision,
        }

    def _write_state_files(self, state: dict) -> None:
        if not self.chief:
            return
        from trainer import checkpoint as ckpt_lib
        from trainer.phases import summary_row

        public = {
            "phase": state["phase"],
            "phase_name": self.config["phases"][
                min(state["phase"], len(self.config["phases"]) - 1)
            ]["name"],
            "epoch": state["epoch"],
            "step_in_epoch": state["step"],
            "global_step": state["global_step"],
            "completed": state["completed"],
            "phases": [summary_row(row) for row in state["phases"]],
        }
        ckpt_lib.write_text_atomically(
            ckpt_lib.join(self.job_dir, ckpt_lib.STATE_FILE), json.dumps(public, indent=2)
        )
        ckpt_lib.write_text_atomically(
            ckpt_lib.join(self.job_dir, ckpt_lib.HISTORY_FILE),
            json.dumps(state["history"], indent=2),
        )

    # ---- main loop ---------------------------------------------------------------------

    def run(self) -> int:
        import tensorflow as tf

        from trainer import checkpoint as ckpt_lib

        latest, state = ckpt_lib.read_latest_state(self.job_dir)
        config_path = ckpt_lib.join(self.job_dir, "config.yaml")
        if latest is not None and tf.io.gfile.exists(config_path):
            self._check_resumable(load_saved_config(config_path))
        if state is not None and state.get("precision", self.precision) != self.precision:
            raise TrainerError(
                f"{self.job_dir} was trained with mixed precision {state['precision']!r}, this "
                f"run resolves distribute.mixed_precision="
                f"{self.config['distribute']['mixed_precision']!r} to {self.precision!r}: "
                f"resume with --mixed_precision {state['precision']}, or use a new --job_dir"
            )
        if self.chief:
            tf.io.gfile.makedirs(self.job_dir)
            ckpt_lib.write_text_atomically(config_path, dump_config(self.config))
            self.summaries.hparams(self.config)
        if state is None:
            state = self._fresh_state()
        else:
            _log(
                f"Resuming from {latest}: phase {state['phase'] + 1}, epoch {state['epoch'] + 1}, "
                f"step {state['step']}",
                self.chief,
            )
        phases = self.config["phases"]
        while True:
            phase_index = min(state["phase"], len(phases) - 1)
            checkpoint = self._build_phase(phase_index)
            if latest is not None:
                checkpoint.restore(latest)
                latest = None
            if state["completed"] or state["phase"] >= len(phases):
                break
            from trainer.loop import set_learning_rate

            set_learning_rate(self.optimizer, state["phases"][phase_index]["learning_rate"])
            if not state["phase_started"]:
                state["phase_started"] = True
                checkpoint.save(state)
                self._write_state_files(state)
            result = self._run_phase(phase_index, state, checkpoint)
            if result == "stopped":
                return SIGTERM_EXIT_CODE
            if result == "restore":
                latest, state = ckpt_lib.read_latest_state(self.job_dir)
                continue
            state = self._finish_phase(phase_index, state, checkpoint)
            if state["completed"]:
                break
            # Before building and tracing the next phase (minutes for a DenseNet): a rerun
            # redoes only the idempotent end of the phase just finished.
            if self._stop_agreed(state, "at the end of a phase"):
                return SIGTERM_EXIT_CODE
        self._write_state_files(state)
        _log(_summary_text(state, self.job_dir), self.chief)
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

    def _run_phase(self, phase_index: int, state: dict, checkpoint) -> str:
        """Epochs until the phase finishes: "finished", "stopped" (SIGTERM) or "restore"."""
        from trainer import distribute
        from trainer.phases import after_epoch

        phase = self.config["phases"][phase_index]
        while not state["phases"][phase_index]["finished"]:
            result = self._run_epoch(phase_index, state, checkpoint)
            if result != "done":
                return result
            metrics = self._validate()
            train_metrics = self._epoch_train_metrics(state)
            phase_state, improved = after_epoch(state["phases"][phase_index], phase, metrics)
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
                "epoch": state["epoch"] + 1,
                "global_step": state["global_step"],
                "learning_rate": state["phases"][phase_index]["learning_rate"],
                **train_metrics,
                **metrics,
            }
            state["history"].append(record)
            state["phases"][phase_index] = phase_state
            state["epoch"] += 1
            state["step"] = 0
            state["epoch_sums"] = {}
            from trainer.loop import set_learning_rate

            set_learning_rate(self.optimizer, phase_state["learning_rate"])
            checkpoint.save(state)
            self._write_state_files(state)
            if self.chief:
                from trainer.checkpoint import prune_best_weights

                prune_best_weights(self.job_dir, phase_index, phase_state["best_epoch"])
            self.summaries.scalars(
                "validation",
                {
                    "loss": metrics["val_loss"],
                    "accuracy": metrics["val_accuracy"],
                    "top3_accuracy": metrics["val_top3_accuracy"],
                },
                state["global_step"],
            )
            self.summaries.scalars(
                "train",
                {
                    "epoch_loss": train_metrics["loss"],
                    "epoch_accuracy": train_metrics["accuracy"],
                    "learning_rate": record["learning_rate"],
                    "phase": phase_index + 1,
                },
                state["global_step"],
            )
            _log(
                f"phase {phase_index + 1} epoch {record['epoch']}: "
                f"loss {train_metrics['loss']:.4f} acc {train_metrics['accuracy']:.4f} | "
                f"val_loss {metrics['val_loss']:.4f} val_acc {metrics['val_accuracy']:.4f} "
                f"val_top3 {metrics['val_top3_accuracy']:.4f} | lr {record['learning_rate']:.3g}",
                self.chief,
            )
            # A SIGTERM during validation or the epoch-end save: the checkpoint just saved
            # is the place to stop, without waiting for the next train step.
            if self._stop_agreed(state, "after the epoch"):
                return "stopped"
        return "finished"

    def _stop_agreed(self, state: dict, where: str) -> bool:
        """True when any worker got SIGTERM (every worker gets the same answer)."""
        from trainer import distribute

        if not distribute.any_worker(self.strategy, _stop_requested):
            return False
        _log(f"Stopping {where} at global step {state['global_step']} after SIGTERM", True)
        return True

    @staticmethod
    def _epoch_train_metrics(state: dict) -> dict:
        sums = state["epoch_sums"]
        count = max(sums.get("count", 0.0), 1.0)
        return {
            "loss": sums.get("loss_sum", 0.0) / count,
            "accuracy": sums.get("correct", 0.0) / count,
            "top3_accuracy": sums.get("top3", 0.0) / count,
        }

    def _data_error(self, error: Exception, files: list[str]):
        from trainer.data import find_corrupt_shard

        bad = find_corrupt_shard(files, self.encoding, self.config["data"]["image_size"])
        if bad is None:
            raise error
        shard, problem = bad
        raise TrainerError(f"corrupt shard {shard}: {problem}; rerun beam_preprocess")

    def _run_epoch(self, phase_index: int, state: dict, checkpoint) -> str:
        import keras
        import tensorflow as tf

        from trainer.data import train_dataset_fn

        training = self.config["training"]
        steps, start = self.steps_per_epoch, state["step"]
        dataset_fn = train_dataset_fn(
            self.train_files,
            self.encoding,
            self.config,
            phase_index,
            state["epoch"],
            start,
            steps,
        )
        dataset = self.strategy.distribute_datasets_from_function(dataset_fn)
        iterator = iter(dataset)
        if start == 0 and state["epoch"] == 0 and self.summaries.enabled:
            # A few (augmented) input images once per phase, from a non-distributed copy
            # of this epoch's pipeline.
            try:
                first = next(iter(dataset_fn(tf.distribute.InputContext())))
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
                self._data_error(error, self.train_files)
            self.summaries.images(
                first["image"], state["global_step"], training["tensorboard_images"]
            )
        phase = self.config["phases"][phase_index]
        if self.chief and training["verbose"]:
            print(
                f"Phase {phase_index + 1}/{len(self.config['phases'])} ({phase['name']}), "
                f"epoch {state['epoch'] + 1}/{phase['epochs']}",
                flush=True,
            )
        progress = keras.utils.Progbar(
            steps, verbose=training["verbose"] if self.chief else 0, stateful_metrics=["images/s"]
        )
        if start:
            progress.update(start)
        sums = {key: float(value) for key, value in state["epoch_sums"].items()}
        scaled = self.precision == "float16"
        started = time.time()
        for step in range(start, steps):
            try:
                out = self.train_step(iterator, tf.constant(1.0 if _stop_requested else 0.0))
                out = {key: float(value) for key, value in out.items()}
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
                self._data_error(error, self.train_files)
            if out["nonfinite"] > 0 and not scaled:
                return self._nonfinite(state)
            # A non-finite loss here is a float16 step the loss scaler skipped: keep it out of
            # the epoch's means.
            if math.isfinite(out["loss_sum"]):
                for key in ("loss_sum", "correct", "top3", "count"):
                    sums[key] = sums.get(key, 0.0) + out[key]
            state["step"], state["global_step"] = step + 1, state["global_step"] + 1
            state["epoch_sums"] = sums
            images_per_second = (
                (step + 1 - start)
                * training["global_batch_size"]
                / max(time.time() - started, 1e-9)
            )
            loss = out["loss_sum"] / max(out["count"], 1.0)
            shown = [("images/s", images_per_second)]
            if math.isfinite(loss):  # the bar's running means would stay nan for the epoch
                shown += [("loss", loss), ("accuracy", out["correct"] / max(out["count"], 1.0))]
            progress.update(step + 1, shown)
            if (
                training["log_every_steps"]
                and state["global_step"] % training["log_every_steps"] == 0
            ):
                self.summaries.scalars(
                    "train",
                    {
                        "loss": loss,
                        "accuracy": out["correct"] / max(out["count"], 1.0),
                        "top3_accuracy": out["top3"] / max(out["count"], 1.0),
                        "images_per_second": images_per_second,
                        "learning_rate": state["phases"][phase_index]["learning_rate"],
                        "phase": phase_index + 1,
                    },
                    state["global_step"],
                )
            if out["stop"] > 0:
                checkpoint.save(state)
                self._write_state_files(state)
                _log(
                    f"Saved a checkpoint at global step {state['global_step']} after SIGTERM", True
                )
                return "stopped"
            every = training["checkpoint_every_steps"]
            if every and (step + 1) % every == 0 and step + 1 < steps:
                checkpoint.save(state)
        return "done"

    def _nonfinite(self, state: dict) -> str:
        from trainer import checkpoint as ckpt_lib

        retries = self.config["training"]["max_nonfinite_retries"]
        self.nonfinite_restores += 1
        if self.nonfinite_restores > retries or ckpt_lib.latest_checkpoint(self.job_dir) is None:
            raise TrainerError(
                f"non-finite loss at global step {state['global_step']} after {retries} restores: "
                "lower the learning rate or check the data"
            )
        _log(
            f"non-finite loss at global step {state['global_step']}: restoring the last checkpoint "
            f"(retry {self.nonfinite_restores}/{retries})",
            True,
        )
        return "restore"

    def _validate(self) -> dict:
        import tensorflow as tf

        from trainer.data import eval_dataset_fn

        dataset_fn = eval_dataset_fn(
            self.validation_files,
            self.encoding,
            self.config,
            self.validation_images,
            self.validation_steps,
        )
        iterator = iter(self.strategy.distribute_datasets_from_function(dataset_fn))
        sums = {"loss_sum": 0.0, "correct": 0.0, "top3": 0.0, "count": 0.0}
        for _ in range(self.validation_steps):
            try:
                out = self.eval_step(iterator)
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
                self._data_error(error, self.validation_files)
            for key in sums:
                sums[key] += float(out[key])
        count = max(sums["count"], 1.0)
        return {
            "val_loss": sums["loss_sum"] / count,
            "val_accuracy": sums["correct"] / count,
            "val_top3_accuracy": sums["top3"] / count,
        }

    def _finish_phase(self, phase_index: int, state: dict, checkpoint) -> dict:
        from trainer import checkpoint as ckpt_lib
        from trainer.export import export_saved_model, save_keras
        from trainer.phases import new_phase_state, should_restore_best

        phase = self.config["phases"][phase_index]
        phase_state = state["phases"][phase_index]
        if should_restore_best(phase_state, phase):
            ckpt_lib.restore_best_weights(
                self.job_dir, phase_index, phase_state["best_epoch"], self.model
            )
        model_dir = ckpt_lib.join(self.job_dir, "model")
        best_path = ckpt_lib.join(model_dir, f"phase{phase_index + 1}_best.keras")
        if self.chief:
            save_keras(self.model, best_path)
        state = dict(state)
        state["phase"] = phase_index + 1
        state["epoch"], state["step"], state["epoch_sums"] = 0, 0, {}
        state["phase_started"] = False
        if state["phase"] < len(self.config["phases"]):
            state["phases"] = state["phases"] + [
                new_phase_state(self.config["phases"][state["phase"]])
            ]
            return state
        if self.chief:
            final = ckpt_lib.join(model_dir, "final.keras")
            tf_copy(best_path, final)
            export_saved_model(
                final, ckpt_lib.join(self.job_dir, "export"), self.config["data"]["image_size"]
            )
        state["completed"] = True
        checkpoint.save(state)
        self._write_state_files(state)
        return state


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


def tf_copy(source: str, destination: str) -> None:
    """Copy a file atomically (temp + rename)."""
    import tensorflow as tf

    tf.io.gfile.copy(source, destination + ".tmp", overwrite=True)
    tf.io.gfile.rename(destination + ".tmp", destination, overwrite=True)
