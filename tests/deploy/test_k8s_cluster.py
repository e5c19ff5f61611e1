"""TF_CONFIG derivation from an Indexed Job pod's environment (trainer/k8s_cluster.py)."""

from __future__ import annotations

import json
import os

import pytest

from bonify.cli import BonifyError
from trainer.k8s_cluster import ClusterConfigError, tf_config_from_environ


def pod_env(index: int, num_workers: int, **extra: str) -> dict[str, str]:
    """The env Kubernetes + the multi-node manifest give pod `index` of an N-pod Indexed Job."""
    env = {
        "JOB_COMPLETION_INDEX": str(index),
        "HOSTNAME": f"bonify-train-{index}",
        "BONIFY_NUM_WORKERS": str(num_workers),
        "BONIFY_JOB_NAME": "bonify-train",
        "BONIFY_SERVICE": "bonify-workers",
        "BONIFY_WORKER_PORT": "2222",
    }
    env.update(extra)
    return env


@pytest.mark.parametrize("num_workers", [1, 2, 3, 8])
def test_every_index_gets_the_same_cluster_and_its_own_task(num_workers):
    configs = [tf_config_from_environ(pod_env(i, num_workers)) for i in range(num_workers)]
    expected_workers = [f"bonify-train-{i}.bonify-workers:2222" for i in range(num_workers)]
    for index, config in enumerate(configs):
        assert config["cluster"] == {"worker": expected_workers}
        assert config["task"] == {"type": "worker", "index": index}
        json.dumps(config)  # TF_CONFIG must be JSON


def test_worker_zero_is_the_chief_and_there_is_no_chief_task():
    config = tf_config_from_environ(pod_env(0, 4))
    assert set(config["cluster"]) == {"worker"}
    assert config["task"] == {"type": "worker", "index": 0}
    assert config["cluster"]["worker"][0].startswith("bonify-train-0.")


def test_namespace_makes_addresses_namespace_qualified():
    config = tf_config_from_environ(pod_env(1, 2, BONIFY_NAMESPACE="ml"))
    assert config["cluster"]["worker"] == [
        "bonify-train-0.bonify-workers.ml.svc:2222",
        "bonify-train-1.bonify-workers.ml.svc:2222",
    ]


def test_loopback_template_with_one_port_per_index():
    env = pod_env(
        1,
        3,
        BONIFY_WORKER_ADDRESS_TEMPLATE="127.0.0.1:{port}",
        BONIFY_WORKER_PORT="5001, 5002,5003",
    )
    config = tf_config_from_environ(env)
    assert config["cluster"]["worker"] == ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"]
    assert config["task"]["index"] == 1


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"JOB_COMPLETION_INDEX": ""}, "JOB_COMPLETION_INDEX"),
        ({"JOB_COMPLETION_INDEX": "x"}, "JOB_COMPLETION_INDEX"),
        ({"JOB_COMPLETION_INDEX": "2"}, "JOB_COMPLETION_INDEX"),
        ({"JOB_COMPLETION_INDEX": "-1"}, "JOB_COMPLETION_INDEX"),
        ({"BONIFY_NUM_WORKERS": ""}, "BONIFY_NUM_WORKERS"),
        ({"BONIFY_NUM_WORKERS": "0"}, "BONIFY_NUM_WORKERS"),
        ({"BONIFY_NUM_WORKERS": "two"}, "BONIFY_NUM_WORKERS"),
        ({"BONIFY_JOB_NAME": ""}, "BONIFY_JOB_NAME"),
        ({"BONIFY_SERVICE": " "}, "BONIFY_SERVICE"),
        ({"BONIFY_WORKER_PORT": ""}, "BONIFY_WORKER_PORT"),
        ({"BONIFY_WORKER_PORT": "70000"}, "BONIFY_WORKER_PORT"),
        ({"BONIFY_WORKER_PORT": "1,2,3"}, "BONIFY_WORKER_PORT"),
        ({"BONIFY_WORKER_ADDRESS_TEMPLATE": "{host}:{port}"}, "BONIFY_WORKER_ADDRESS_TEMPLATE"),
        ({"BONIFY_WORKER_ADDRESS_TEMPLATE": "{namespace}:{port}"}, "BONIFY_NAMESPACE"),
        (
            {"BONIFY_WORKER_ADDRESS_TEMPLATE": "{hostname.x}:{port}"},
            "BONIFY_WORKER_ADDRESS_TEMPLATE",
        ),
        ({"BONIFY_WORKER_ADDRESS_TEMPLATE": "{port[0]}"}, "BONIFY_WORKER_ADDRESS_TEMPLATE"),
        ({"HOSTNAME": "other-job-1"}, "HOSTNAME"),
    ],
)
def test_bad_or_missing_variable_is_one_line_naming_it(override, named):
    env = pod_env(1, 2)
    env.update(override)
    with pytest.raises(ClusterConfigError) as caught:
        tf_config_from_environ(env)
    message = str(caught.value)
    assert named in message
    assert "\n" not in message
    assert isinstance(caught.value, BonifyError) and isinstance(caught.value, ValueError)


def test_absent_hostname_is_accepted():
    env = pod_env(1, 2)
    del env["HOSTNAME"]
    assert tf_config_from_environ(env)["task"]["index"] == 1


def test_trainer_cli_reports_a_missing_variable_in_one_line_and_exits_2(
    monkeypatch, capsys, tmp_path
):
    """`bonify-train --tf_config_from_k8s` in a pod whose manifest lost BONIFY_SERVICE."""
    from trainer.__main__ import main

    for name, value in pod_env(1, 2).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BONIFY_SERVICE")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code = main(
        [
            "--data_dir",
            str(tmp_path / "data"),
            "--job_dir",
            str(tmp_path / "job"),
            "--strategy",
            "multi_worker",
            "--tf_config_from_k8s",
        ]
    )
    assert code == 2
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1 and "BONIFY_SERVICE" in error_lines[0], error_lines
    assert "TF_CONFIG" not in os.environ
    assert not (tmp_path / "job").exists()
