"""`--strategy auto` and `--mixed_precision auto` choose as docs/TRAINING.md says.

The choices are plain functions of what the trainer inspects (TF_CONFIG, the GPU count, each
GPU's details), so every documented case is tested here by handing them that input; the two
thin wrappers that read the process (TF_CONFIG, TensorFlow's device list) are tested last.
"""

from __future__ import annotations

import json

import pytest

from trainer.errors import TrainerError


def _cluster(workers: int, chief: int = 0) -> dict:
    cluster = {"worker": [f"w{i}:2222" for i in range(workers)]}
    if chief:
        cluster["chief"] = ["c0:2222"]
    return {"cluster": cluster, "task": {"type": "worker", "index": 0}}


@pytest.mark.parametrize(
    ("tf_config", "gpu_count", "expected"),
    [
        ({}, 0, "default"),  # no cluster, CPU only: one device
        ({}, 1, "default"),  # one GPU: one device, no need to mirror
        ({}, 2, "mirrored"),  # several GPUs on one host
        ({}, 8, "mirrored"),
        (_cluster(workers=1), 4, "mirrored"),  # a one-task cluster is one host
        (_cluster(workers=1), 0, "default"),
        (_cluster(workers=2), 0, "multi_worker"),  # a cluster wins over the GPU count
        (_cluster(workers=2), 8, "multi_worker"),
        (_cluster(workers=1, chief=1), 1, "multi_worker"),  # chief + worker = two tasks
    ],
)
def test_auto_strategy_follows_the_cluster_then_the_gpu_count(tf_config, gpu_count, expected):
    from trainer.distribute import strategy_for

    assert strategy_for("auto", tf_config, gpu_count) == expected


@pytest.mark.parametrize("requested", ["default", "mirrored", "multi_worker"])
def test_an_explicit_strategy_is_kept_whatever_the_host(requested):
    from trainer.distribute import strategy_for

    assert strategy_for(requested, _cluster(workers=4), 8) == requested
    assert strategy_for(requested, {}, 0) == requested


@pytest.mark.parametrize(
    ("gpu_details", "expected"),
    [
        ([], "off"),  # CPU only: no automatic mixed precision (bfloat16 only on request)
        ([{"compute_capability": (6, 1)}], "off"),  # Pascal: no float16 tensor cores
        ([{"compute_capability": (7, 0)}], "float16"),  # Volta (V100)
        ([{"compute_capability": (7, 5)}], "float16"),  # Turing (T4)
        ([{"compute_capability": (8, 0)}] * 4, "float16"),  # Ampere (A100) x4
        ([{"compute_capability": (6, 0)}, {"compute_capability": (7, 0)}], "float16"),
        ([{"device_name": "a GPU whose build reports no capability"}], "off"),
    ],
)
def test_auto_precision_is_float16_on_gpus_of_compute_capability_7_or_more(gpu_details, expected):
    from trainer.distribute import precision_for

    assert precision_for("auto", gpu_details) == expected


@pytest.mark.parametrize("requested", ["float16", "bfloat16", "off"])
def test_an_explicit_precision_is_kept_whatever_the_host(requested):
    from trainer.distribute import precision_for

    assert precision_for(requested, [{"compute_capability": (8, 0)}]) == requested
    assert precision_for(requested, []) == requested


def test_tf_config_text_is_parsed_and_unset_means_no_cluster():
    from trainer.distribute import count_cluster_tasks, parse_tf_config

    assert parse_tf_config("") == {}
    assert count_cluster_tasks(parse_tf_config(json.dumps(_cluster(workers=3, chief=1)))) == 4


@pytest.mark.parametrize("raw", ["{not json", '{"cluster": ["w0:2222"]}', '["w0:2222"]'])
def test_malformed_tf_config_is_a_one_line_error(raw):
    from trainer.distribute import parse_tf_config

    with pytest.raises(TrainerError, match="TF_CONFIG"):
        parse_tf_config(raw)


def test_wrappers_pass_this_process_tf_config_gpus_and_gpu_details(monkeypatch):
    import tensorflow as tf

    from trainer.distribute import choose_strategy_name, resolve_precision

    # What TensorFlow would report on a host with two Volta GPUs (this test host may have none).
    fake_gpus = ["GPU:0", "GPU:1"]
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: fake_gpus if kind == "GPU" else []
    )
    monkeypatch.setattr(
        tf.config.experimental, "get_device_details", lambda gpu: {"compute_capability": (7, 0)}
    )
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert choose_strategy_name("auto") == "mirrored"
    assert resolve_precision("auto") == "float16"
    monkeypatch.setenv("TF_CONFIG", json.dumps(_cluster(workers=2)))
    assert choose_strategy_name("auto") == "multi_worker"
    fake_gpus.clear()
    monkeypatch.delenv("TF_CONFIG")
    assert choose_strategy_name("auto") == "default"
    assert resolve_precision("auto") == "off"
