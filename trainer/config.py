"""The trainer's configuration: built-in defaults -> `--config` YAML -> `--set` overrides.

A config is a plain nested dict. `DEFAULTS` is the reference recipe (the BONIFY notebook):
DenseNet169 at 320 px, batch 32, focal loss, balanced class weights, three phases.
Every key a user can set appears in `DEFAULTS`; anything else is an error naming the key.
Phases are data: a list of dicts, each validated against `PHASE_DEFAULTS`.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from typing import Any

import yaml

from bonify import files
from trainer.errors import TrainerError
from trainer.phases import DEFAULT_MONITOR, MONITOR_MAXIMISED, block_monitor

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

#: Defaults of one phase; a phase in a YAML file overrides any of these keys.
PHASE_DEFAULTS: dict[str, Any] = {
    "name": "phase",
    # "all" | "head_only" | "last_n:<N>" (the backbone's last N layers + the head train).
    "trainable": "all",
    "optimizer": "adam",  # adam | adamw | sgd
    "learning_rate": 1e-4,
    "epochs": 1,  # maximum epochs of this phase
    "class_weights": True,  # weight the loss with balanced class weights from manifest.json
    "reduce_lr": {
        "enabled": True,
        # null: training.monitor (val_loss when that is val_accuracy, as the reference
        # pairs them); or val_loss (minimised) | val_accuracy | val_study_kappa (maximised)
        "monitor": None,
        "factor": 0.3,
        "patience": 4,
        "min_lr": 1e-8,
        "min_delta": 1e-4,
    },
    "early_stopping": {
        "enabled": True,
        "monitor": None,  # null: training.monitor; or one of MONITORS
        "patience": 10,
        "min_delta": 0.0,
        "restore_best": True,
    },
}


def _phase(name: str, trainable: str, lr: float, epochs: int, plateau: int, stop: int) -> dict:
    phase = copy.deepcopy(PHASE_DEFAULTS)
    phase.update(name=name, trainable=trainable, learning_rate=lr, epochs=epochs)
    phase["reduce_lr"]["patience"] = plateau
    phase["early_stopping"]["patience"] = stop
    return phase


DEFAULTS: dict[str, Any] = {
    "model": {
        # densenet121 | densenet169 | densenet201 | small_cnn (tiny, for CPU tests and the demo)
        "backbone": "densenet169",
        # imagenet | none | path to a weights file (.weights.h5 / .h5) for the backbone
        "weights": "imagenet",
        "head_units": [512, 256],  # Dense(relu) -> BatchNorm -> Dropout per entry
        "head_dropout": [0.4, 0.2],
        "small_cnn_width": 16,  # filters of small_cnn's first block (doubles per block)
        # BatchNorm momentum of the head and small_cnn (Keras default 0.99; short runs on
        # small data need less, or the moving statistics lag the weights at validation).
        "bn_momentum": 0.99,
    },
    "data": {
        "image_size": 320,  # must equal manifest.json's image_size
        "shuffle_buffer": 2048,  # records
        "cycle_length": 8,  # shards read in parallel per input pipeline
        "augment": {
            "enabled": True,
            "flip_left_right": True,
            "flip_up_down": True,
            "brightness": 0.15,  # max delta on the [0, 1] scale
            "contrast": [0.85, 1.15],  # factor range
            "crop_padding": 0.0625,  # pad by this fraction of the size, random crop back (340/320)
        },
    },
    "loss": {"focal_gamma": 2.0, "focal_alpha": 0.25},
    "training": {
        "global_batch_size": 32,  # images per step over all replicas
        "steps_per_epoch": 0,  # 0: train images // global batch
        "validation_steps": 0,  # 0: ceil(validation images / global batch)
        "seed": 42,
        "checkpoint_every_steps": 100,  # also at every epoch end
        "max_checkpoints": 2,
        "max_nonfinite_retries": 3,
        "log_every_steps": 20,  # TensorBoard train scalars
        # auto: a progress bar on a terminal, one line per epoch otherwise (pods, CI, > log);
        # 0 no per-epoch output, 1 progress bar, 2 one line per epoch.
        "verbose": "auto",
        "tensorboard_images": 8,  # input images logged once per phase
        # The metric that picks each phase's best weights (restored at its end), and that
        # early stopping and the LR plateau watch unless a phase names its own:
        # val_accuracy (the reference's) | val_study_kappa (MURA's metric) | val_loss.
        "monitor": DEFAULT_MONITOR,
    },
    "distribute": {
        "strategy": "auto",  # auto | default | mirrored | multi_worker
        "logical_cpus": 0,  # >1: split the CPU into N logical devices (Mirrored on a CPU)
        "mixed_precision": "auto",  # auto | float16 | bfloat16 | off
        "xla": False,
    },
    "phases": [
        _phase("frozen_backbone", "last_n:60", 1e-4, 20, plateau=4, stop=10),
        _phase("full_finetune", "all", 5e-6, 20, plateau=4, stop=10),
        _phase("low_lr_finetune", "all", 1e-6, 15, plateau=3, stop=8),
    ],
}

BACKBONES = ("densenet121", "densenet169", "densenet201", "small_cnn")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("auto", "float16", "bfloat16", "off")
OPTIMIZERS = ("adam", "adamw", "sgd")
MONITORS = tuple(MONITOR_MAXIMISED)


class _ConfigLoader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-4` (no dot) as a string; config files and --set take it as a float."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _load_yaml(text_or_stream: Any) -> Any:
    return yaml.load(text_or_stream, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def resolve_config_path(config: str) -> str:
    """A path, or the bare name of a shipped config (e.g. "sample_cpu")."""
    if files.exists(config):
        return config
    shipped = os.path.join(CONFIG_DIR, config if config.endswith(".yaml") else config + ".yaml")
    if os.path.exists(shipped):
        return shipped
    names = sorted(n[: -len(".yaml")] for n in os.listdir(CONFIG_DIR) if n.endswith(".yaml"))
    raise TrainerError(f"--config {config}: no such file and no shipped config (shipped: {names})")


def _merge(base: dict, override: dict, where: str) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in base:
            raise TrainerError(f"unknown config key {path!r}; known: {', '.join(sorted(base))}")
        if key == "phases":
            merged[key] = complete_phases(value)
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise TrainerError(f"config key {path!r} must be a mapping")
            merged[key] = _merge(base[key], value, path)
        else:
            merged[key] = value
    return merged


def complete_phases(phases: Any) -> list[dict]:
    """Each phase of a list filled in from `PHASE_DEFAULTS` (unknown keys are errors)."""
    if not isinstance(phases, list) or not phases:
        raise TrainerError("config key 'phases' must be a non-empty list of phases")
    for i, phase in enumerate(phases):
        if not isinstance(phase, dict):
            raise TrainerError(f"config key 'phases[{i}]' must be a mapping of phase keys")
    return [_merge(PHASE_DEFAULTS, phase, f"phases[{i}]") for i, phase in enumerate(phases)]


def _parse_set(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise TrainerError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    try:
        return key.strip().split("."), _load_yaml(raw)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise TrainerError(f"--set {item!r}: the value is {problem}") from None


def apply_override(config: dict, dotted: list[str], value: Any) -> dict:
    """Set `config[a][b]...` = value; a phases index is a number: phases.0.epochs=2."""
    config = copy.deepcopy(config)
    node: Any = config
    for i, part in enumerate(dotted[:-1]):
        so_far = ".".join(dotted[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise TrainerError(f"--set {'.'.join(dotted)}: no list index {so_far!r}")
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise TrainerError(f"--set {'.'.join(dotted)}: unknown config key {so_far!r}")
    last = dotted[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise TrainerError(f"--set {'.'.join(dotted)}: bad list index {last!r}")
        node[int(last)] = value
    elif isinstance(node, dict) and last in node:
        if isinstance(node[last], dict):
            if not isinstance(value, dict):
                raise TrainerError(f"--set {'.'.join(dotted)}: config key must be a mapping")
            value = _merge(node[last], value, ".".join(dotted))
        node[last] = value
    else:
        raise TrainerError(f"--set {'.'.join(dotted)}: unknown config key {'.'.join(dotted)!r}")
    return config


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise TrainerError(f"config key {key!r}: {message}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate(config: dict) -> dict:
    """Check types and ranges; return the config (raises TrainerError naming the key)."""
    model, data, training, dist = (
        config["model"],
        config["data"],
        config["training"],
        config["distribute"],
    )
    _check(model["backbone"] in BACKBONES, "model.backbone", f"one of {BACKBONES}")
    _check(isinstance(model["weights"], str), "model.weights", "imagenet, none or a file path")
    _check(
        isinstance(model["head_units"], list)
        and isinstance(model["head_dropout"], list)
        and len(model["head_units"]) == len(model["head_dropout"]),
        "model.head_units",
        "head_units and head_dropout must be lists of equal length",
    )
    _check(
        isinstance(data["image_size"], int) and data["image_size"] >= 16,
        "data.image_size",
        "an integer >= 16",
    )
    for key in (
        "global_batch_size", "seed", "checkpoint_every_steps", "max_checkpoints",
        "steps_per_epoch", "validation_steps", "log_every_steps",
        "max_nonfinite_retries", "tensorboard_images",
    ):  # fmt: skip
        _check(isinstance(training[key], int) and training[key] >= 0, f"training.{key}", "int >= 0")
    _check(training["verbose"] in ("auto", 0, 1, 2) and not isinstance(training["verbose"], bool),
           "training.verbose", "auto, 0, 1 or 2")  # fmt: skip
    _check(training["monitor"] in MONITORS, "training.monitor", f"one of {', '.join(MONITORS)}")
    _check(training["global_batch_size"] > 0, "training.global_batch_size", "must be > 0")
    _check(training["max_checkpoints"] >= 1, "training.max_checkpoints", "an integer >= 1")
    _check(
        not (model["backbone"] == "small_cnn" and model["weights"] == "imagenet"),
        "model.weights",
        "small_cnn has no ImageNet weights: none, or a weights file",
    )
    _check(
        all(isinstance(u, int) and u > 0 for u in model["head_units"])
        and all(_number(d) and 0 <= d < 1 for d in model["head_dropout"]),
        "model.head_units",
        "positive integers, with head_dropout rates in [0, 1)",
    )
    _check(_number(model["bn_momentum"]) and 0 <= model["bn_momentum"] < 1, "model.bn_momentum",
           "a number in [0, 1)")  # fmt: skip
    for key in ("shuffle_buffer", "cycle_length"):
        _check(isinstance(data[key], int) and data[key] >= 1, f"data.{key}", "an integer >= 1")
    augment = data["augment"]
    for key in ("enabled", "flip_left_right", "flip_up_down"):
        _check(isinstance(augment[key], bool), f"data.augment.{key}", "true or false")
    for key in ("brightness", "crop_padding"):
        _check(_number(augment[key]) and augment[key] >= 0, f"data.augment.{key}", "a number >= 0")
    loss = config["loss"]
    _check(_number(loss["focal_gamma"]) and loss["focal_gamma"] >= 0, "loss.focal_gamma",
           "a number >= 0")  # fmt: skip
    _check(_number(loss["focal_alpha"]) and 0 < loss["focal_alpha"] <= 1, "loss.focal_alpha",
           "a number in (0, 1]")  # fmt: skip
    contrast = data["augment"]["contrast"]
    _check(
        isinstance(contrast, list) and len(contrast) == 2 and all(map(_number, contrast)),
        "data.augment.contrast",
        "a [low, high] pair",
    )
    if dist["mixed_precision"] is False:  # YAML 1.1 reads an unquoted `off` as false
        dist["mixed_precision"] = "off"
    _check(dist["strategy"] in STRATEGIES, "distribute.strategy", f"one of {STRATEGIES}")
    _check(
        dist["mixed_precision"] in PRECISIONS, "distribute.mixed_precision", f"one of {PRECISIONS}"
    )
    _check(isinstance(dist["logical_cpus"], int), "distribute.logical_cpus", "an integer")
    _check(isinstance(dist["xla"], bool), "distribute.xla", "true or false")
    for i, phase in enumerate(config["phases"]):
        where = f"phases[{i}]"
        _check(phase["optimizer"] in OPTIMIZERS, f"{where}.optimizer", f"one of {OPTIMIZERS}")
        _check(
            _number(phase["learning_rate"]) and phase["learning_rate"] > 0,
            f"{where}.learning_rate",
            "a positive number",
        )
        _check(
            isinstance(phase["epochs"], int) and phase["epochs"] >= 1,
            f"{where}.epochs",
            "an integer >= 1",
        )
        try:
            parse_trainable(phase["trainable"])
        except ValueError as error:
            raise TrainerError(f"config key '{where}.trainable': {error}") from None
        for block in ("reduce_lr", "early_stopping"):
            _check(
                phase[block]["monitor"] in (None, *MONITORS),
                f"{where}.{block}.monitor",
                f"null (training.monitor) or one of {', '.join(MONITORS)}",
            )
            # Resolved here, so JOB/config.yaml and --print_config say what each one watches.
            phase[block]["monitor"] = block_monitor(
                block, phase[block]["monitor"], training["monitor"]
            )
            _check(
                isinstance(phase[block]["patience"], int) and phase[block]["patience"] >= 0,
                f"{where}.{block}.patience",
                "an integer >= 0",
            )
        _check(
            _number(phase["reduce_lr"]["factor"]) and 0 < phase["reduce_lr"]["factor"] < 1,
            f"{where}.reduce_lr.factor",
            "a number in (0, 1)",
        )
        _check(isinstance(phase["class_weights"], bool), f"{where}.class_weights", "true or false")
        _check(_number(phase["reduce_lr"]["min_lr"]) and phase["reduce_lr"]["min_lr"] >= 0,
               f"{where}.reduce_lr.min_lr", "a number >= 0")  # fmt: skip
        for block in ("reduce_lr", "early_stopping"):
            _check(isinstance(phase[block]["enabled"], bool), f"{where}.{block}.enabled",
                   "true or false")  # fmt: skip
            _check(_number(phase[block]["min_delta"]) and phase[block]["min_delta"] >= 0,
                   f"{where}.{block}.min_delta", "a number >= 0")  # fmt: skip
        _check(isinstance(phase["early_stopping"]["restore_best"], bool),
               f"{where}.early_stopping.restore_best", "true or false")  # fmt: skip
    return config


def flag_overrides(
    strategy: str | None = None, mixed_precision: str | None = None, xla: bool | None = None
) -> list[str]:
    """The `--set` items the --strategy, --mixed_precision and --xla flags stand for (applied
    after the user's --set items, so the flags win); a flag left unset adds nothing."""
    overrides = []
    if strategy:
        overrides.append(f"distribute.strategy={strategy}")
    if mixed_precision:
        overrides.append(f"distribute.mixed_precision={mixed_precision}")
    if xla is not None:
        overrides.append(f"distribute.xla={'true' if xla else 'false'}")
    return overrides


def parse_trainable(rule: Any) -> tuple[str, int]:
    """ "all" -> ("all", 0); "head_only" -> ("head_only", 0); "last_n:60" -> ("last_n", 60)."""
    if rule in ("all", "head_only"):
        return rule, 0
    if isinstance(rule, str) and rule.startswith("last_n:") and rule[7:].isdigit():
        return "last_n", int(rule[7:])
    raise ValueError(f"{rule!r} is not all, head_only or last_n:<N>")


def load_config(config_file: str | None = None, overrides: Sequence[str] = ()) -> dict:
    """Defaults -> YAML file (path or shipped name) -> `key.path=value` overrides, validated.

    Imports TensorFlow only to read a config from a URL (gs://...)."""
    config = copy.deepcopy(DEFAULTS)
    if config_file:
        path = resolve_config_path(config_file)
        try:
            loaded = _load_yaml(files.read_text(path)) or {}
        except OSError as error:
            raise TrainerError(f"--config {path}: cannot read it ({error.strerror})") from None
        except yaml.YAMLError as error:
            raise TrainerError(f"--config {path}: not valid YAML ({error})") from None
        if not isinstance(loaded, dict):
            raise TrainerError(f"--config {path}: expected a mapping at the top level")
        config = _merge(config, loaded, "")
    for item in overrides:
        dotted, value = _parse_set(item)
        config = apply_override(config, dotted, value)
        if dotted[0] == "phases":
            # `--set phases=[...]` or `phases.0={...}` may give partial phases: fill them in.
            config["phases"] = complete_phases(config["phases"])
    return validate(config)


#: Keys a resumed job may change: how it logs and saves, and the hardware it runs on.
#: Anything else changes what the checkpoints hold or the schedule they continue.
RESUMABLE_CHANGES = (
    "training.verbose",
    "training.log_every_steps",
    "training.tensorboard_images",
    "training.checkpoint_every_steps",
    "training.max_checkpoints",
    "training.max_nonfinite_retries",
    "distribute.strategy",
    "distribute.logical_cpus",
    "distribute.xla",
    # Checked after resolution instead ("auto" differs per machine): trainer.run.
    "distribute.mixed_precision",
)


#: Keys added after jobs were saved: a saved config without one ran with this value.
ADDED_KEYS = {"training.monitor": DEFAULT_MONITOR}


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list) and prefix == "phases":
        items = enumerate(node)
    else:
        return {prefix: node}
    flat = {}
    for key, value in items:
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def resume_conflict(saved: dict, config: dict) -> tuple[str, Any, Any] | None:
    """(dotted key, saved value, this run's value) of the first key that differs between a
    job's saved config and this run's, ignoring RESUMABLE_CHANGES; None when the job can
    resume with this config."""
    old, new = {**ADDED_KEYS, **_flatten(saved)}, _flatten(config)
    # Phase keys last: a changed training.monitor is named, not the phase monitors it sets.
    for key in sorted(old.keys() | new.keys(), key=lambda key: (key.startswith("phases."), key)):
        before, now = old.get(key, "absent"), new.get(key, "absent")
        if key not in RESUMABLE_CHANGES and before != now:
            return key, before, now
    return None


def load_saved_config(path: str) -> dict:
    """A job's JOB/config.yaml, as written by `dump_config`."""
    return _load_yaml(files.read_text(path)) or {}


def dump_config(config: dict, one_key_per_line: bool = False) -> str:
    """The resolved config as YAML text (written to JOB/config.yaml; one_key_per_line for
    people: --print_config)."""
    return yaml.safe_dump(
        config, sort_keys=False, default_flow_style=False if one_key_per_line else None
    )
