"""The command-line conventions every stage shares (bonify/cli.py, bonify/dataflow.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bonify.cli import (
    USER_ERROR_EXIT_CODE,
    BonifyError,
    OneLineArgumentParser,
    run_command,
    startup_noise,
)
from bonify.dataflow import is_dataflow

#: A command as every bonify CLI runs: run_command, then TensorFlow imported inside `main`
#: (devices listed: that is where the cuInit line comes from), then a real warning.
_COMMAND_IMPORTING_TF = """
import sys, warnings
from bonify.cli import run_command

def main(argv):
    import tensorflow as tf
    tf.config.list_physical_devices()
    warnings.warn("a warning that matters")
    return 0

sys.exit(run_command("demo-command", main, []))
"""

#: Lines TensorFlow 2.21 prints at start-up on a machine without a GPU driver.
_STARTUP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796008005.388011    2260 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results",
    "I0000 00:00:1796008005.388743    2260 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "I0000 00:00:1796008005.430789    2260 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796008008.629822    2260 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]


def _run_python(code: str, **env_changes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("line", _STARTUP_LINES)
def test_startup_notices_are_noise(line):
    assert startup_noise(line)


@pytest.mark.parametrize(
    "line",
    [
        "W0000 00:00:1796008008.629822    2260 some_op.cc:52] Out of memory while trying to allocate",
        "E0000 00:00:1796008008.629822    2260 grpc.cc:52] worker /job:worker/task:1 unavailable",
        "UserWarning: a warning that matters",
        "bonify-train: error: --data_dir /x: no such directory",
    ],
)
def test_real_warnings_are_not_noise(line):
    assert not startup_noise(line)


def test_a_command_prints_no_tensorflow_startup_lines_but_keeps_real_warnings():
    result = _run_python(_COMMAND_IMPORTING_TF)
    assert result.returncode == 0, result.stderr
    for marker in ("absl::InitializeLog", "oneDNN", "cuda", "cuInit", "cpu_feature_guard"):
        assert marker not in result.stderr
    assert "a warning that matters" in result.stderr


def test_a_lookup_before_the_import_does_not_unmute_it():
    # Beam and TFDS look TensorFlow up (find_spec) before anything imports it.
    lookup_first = _COMMAND_IMPORTING_TF.replace(
        "def main(argv):\n",
        "def main(argv):\n    import importlib.util\n"
        "    assert importlib.util.find_spec('tensorflow') is not None\n",
    )
    result = _run_python(lookup_first)
    assert result.returncode == 0, result.stderr
    assert "absl::InitializeLog" not in result.stderr
    assert "cuInit" not in result.stderr


def test_bonify_tf_logs_brings_the_startup_lines_back():
    result = _run_python(_COMMAND_IMPORTING_TF, BONIFY_TF_LOGS="1")
    assert result.returncode == 0, result.stderr
    assert "absl::InitializeLog" in result.stderr
    assert "a warning that matters" in result.stderr


def test_user_error_is_one_line_and_exit_2(capsys):
    def main(argv):
        raise BonifyError("--data_dir /nowhere: no such directory")

    assert run_command("bonify-x", main, []) == USER_ERROR_EXIT_CODE
    assert capsys.readouterr().err == "bonify-x: error: --data_dir /nowhere: no such directory\n"


def test_parser_error_is_a_bonify_error_naming_the_help():
    parser = OneLineArgumentParser(prog="bonify-x", description="Does x.")
    parser.add_argument("--size", type=int, required=True)
    with pytest.raises(BonifyError, match=r"--size.*\(see bonify-x --help\)"):
        parser.parse_args(["--size", "big"])


def test_help_starts_with_the_description_and_ends_with_examples():
    parser = OneLineArgumentParser(
        prog="bonify-x",
        description="Does x to your data.\n\nSecond paragraph.",
        examples="# the usual run\nbonify-x --size 3\nbonify-x --size 4",
    )
    parser.add_argument("--size", type=int)
    text = parser.format_help()
    assert text.startswith("usage: bonify-x")
    assert "Does x to your data.\n\nSecond paragraph." in text
    tail = text[text.index("Examples:") :].splitlines()
    assert tail == ["Examples:", "  # the usual run", "  bonify-x --size 3", "  bonify-x --size 4"]


@pytest.mark.parametrize(
    "runner",
    [
        "DataflowRunner",
        "dataflow",
        "DATAFLOW",
        "dataflowrunner",
        "TestDataflowRunner",
        "apache_beam.runners.dataflow.dataflow_runner.DataflowRunner",
    ],
)
def test_every_dataflow_spelling_is_dataflow(runner):
    from apache_beam.options.pipeline_options import PipelineOptions

    assert is_dataflow(runner)
    assert is_dataflow(PipelineOptions([f"--runner={runner}"]))


@pytest.mark.parametrize("runner", ["FnApiRunner", "DirectRunner", "PortableRunner", "", None])
def test_local_runners_are_not_dataflow(runner):
    assert not is_dataflow(runner)
