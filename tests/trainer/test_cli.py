"""`bonify-train`'s command line: the help a user reads and `--print_config`.

The commands run as subprocesses: whether TensorFlow was imported is a property of the
process, and these must answer in well under a second without it.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run_trainer_cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS`, or `code` (which gets ARGS as sys.argv[1:]) in a fresh process."""
    command = [sys.executable, *(["-c", code] if code else ["-m", "trainer"]), *args]
    return subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def help_text() -> str:
    result = _run_trainer_cli("--help")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_starts_with_what_the_command_does_in_user_words(help_text):
    usage, first_paragraph = help_text.split("\n\n")[:2]
    assert usage.startswith("usage: bonify-train")
    assert first_paragraph.startswith("Train the 14-class MURA model on the shards")


def test_help_documents_every_flag_and_the_set_syntax(help_text):
    for flag in ("--data_dir", "--job_dir", "--config", "--set", "--strategy",
                 "--mixed_precision", "--xla", "--tf_config_from_k8s", "--print_config"):  # fmt: skip
        assert flag in help_text, flag
    for choice in ("auto", "default", "mirrored", "multi_worker", "float16", "bfloat16", "off"):
        assert choice in help_text, choice
    assert "KEY.PATH=VALUE" in help_text and "YAML" in help_text


def test_help_ends_with_examples_a_user_runs(help_text):
    examples = help_text.split("\nExamples:\n", 1)[1]
    assert "--config sample_cpu" in examples  # the demo
    assert "--config mura_densenet169" in examples  # the MURA recipe
    assert "--config mura_study" in examples  # the recipe selecting by study kappa
    assert "--strategy mirrored" in examples and "--mixed_precision float16" in examples
    assert "--set data.augment.brightness=" in examples  # a nested key
    assert "--set phases.0.epochs=" in examples  # a phase key
    assert "--set model.head_units=[" in examples  # a list
    assert "--print_config" in examples
    assert "rerun the same command" in examples.lower()  # resume


def test_print_config_prints_every_key_after_all_layers_without_importing_tensorflow(tmp_path):
    from trainer.config import DEFAULTS

    config_file = tmp_path / "mine.yaml"
    config_file.write_text("training: {seed: 3, global_batch_size: 16}\n")
    code = (
        "import sys\n"
        "from trainer.__main__ import main\n"
        "exit_code = main(sys.argv[1:])\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
        "sys.exit(exit_code)\n"
    )
    result = _run_trainer_cli(
        "--config", str(config_file), "--set", "training.seed=7", "--set",
        "phases.1.epochs=4", "--mixed_precision", "bfloat16", "--print_config",
        code=code,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert list(printed) == list(DEFAULTS)  # every top-level key, in the defaults' order
    assert printed["training"]["seed"] == 7  # --set wins over --config
    assert printed["training"]["global_batch_size"] == 16  # --config wins over the defaults
    assert printed["phases"][1]["epochs"] == 4
    assert printed["distribute"]["mixed_precision"] == "bfloat16"  # the flag, applied last


def test_print_config_names_a_bad_key_in_one_line():
    result = _run_trainer_cli("--set", "training.sead=7", "--print_config")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "bonify-train: error: --set training.sead: unknown config key 'training.sead'"
    ]


def test_training_without_data_dir_or_job_dir_is_a_one_line_error():
    result = _run_trainer_cli("--job_dir", "somewhere")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "bonify-train: error: missing --data_dir (see bonify-train --help)"
    ]
