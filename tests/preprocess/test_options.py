"""How the job resolves its Beam flags: a local run uses every core unless told otherwise."""

from __future__ import annotations

import pytest

from beam_preprocess.options import DEFAULT_RUNNER, resolve_runner_args

EVERY_CORE = ["--direct_num_workers=8", "--direct_running_mode=multi_processing"]


def test_no_flags_runs_the_default_runner_with_one_worker_process_per_core():
    assert resolve_runner_args([], cpu_count=8) == [f"--runner={DEFAULT_RUNNER}", *EVERY_CORE]


@pytest.mark.parametrize(
    "runner_flags",
    [
        ["--runner=FnApiRunner"],
        ["--runner", "FnApiRunner"],
        ["--runner=fnapirunner"],
        ["--runner=DirectRunner"],
        ["--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"],
    ],
)
def test_a_named_local_runner_also_gets_one_worker_process_per_core(runner_flags):
    assert resolve_runner_args(runner_flags, cpu_count=8) == [*runner_flags, *EVERY_CORE]


@pytest.mark.parametrize(
    "worker_flags",
    [
        ["--direct_num_workers=3"],
        ["--direct_num_workers", "1"],
        ["--direct_running_mode=in_memory"],
        ["--direct_running_mode", "multi_threading", "--direct_num_workers=4"],
    ],
)
def test_worker_flags_the_user_gave_are_kept_as_they_are(worker_flags):
    resolved = resolve_runner_args(["--runner=FnApiRunner", *worker_flags], cpu_count=8)
    assert resolved == ["--runner=FnApiRunner", *worker_flags]


def test_the_other_flags_the_user_gave_are_kept():
    resolved = resolve_runner_args(["--setup_file=./setup.py", "--job_name", "x"], cpu_count=2)
    assert resolved[:3] == ["--setup_file=./setup.py", "--job_name", "x"]
    assert "--direct_num_workers=2" in resolved


@pytest.mark.parametrize(
    "runner_flags",
    [
        ["--runner=DataflowRunner", "--project=p", "--region=r", "--temp_location=gs://b/t"],
        ["--runner=dataflow"],
        ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
        ["--runner=FlinkRunner"],
    ],
)
def test_dataflow_and_other_remote_runners_are_untouched(runner_flags):
    assert resolve_runner_args(runner_flags, cpu_count=8) == runner_flags


@pytest.mark.parametrize("cpu_count", [1, None])
def test_one_core_keeps_beams_in_process_worker(cpu_count):
    assert resolve_runner_args([], cpu_count=cpu_count) == [f"--runner={DEFAULT_RUNNER}"]
