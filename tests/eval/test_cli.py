"""The command line: bad arguments are one line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from eval.__main__ import main

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_bad_args_in_a_subprocess_give_one_stderr_line():
    result = subprocess.run(
        [sys.executable, "-m", "eval", "--output_dir", "x", "--bootstrap_resamples", "many",
         "--predictions", "p.csv"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bonify-eval: error:") and "--bootstrap_resamples" in lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--output_dir", "o"], "one of the arguments --model --predictions is required"),
        (["--predictions", "p.csv"], "--output_dir"),
        (["--model", "m.keras", "--output_dir", "o"], "--model needs --data_dir"),
        (["--predictions", "p.csv", "--model", "m", "--output_dir", "o"], "not allowed with"),
        (["--predictions", "p.csv", "--output_dir", "o", "--batch_size", "0"], "--batch_size"),
        (["--predictions", "p.csv", "--output_dir", "o", "--split", "dev"], "--split"),
        (["--predictions", "p.csv", "--output_dir", "o", "--frobnicate"], "--frobnicate"),
        (["--predictions", "p.csv", "--output_dir", "o", "--runner=FnApiRunner"], "--runner"),
        (["--predictions", "absent.csv", "--output_dir", "o"], "absent.csv: file not found"),
        (
            ["--model", "absent.keras", "--data_dir", "d", "--output_dir", "o"],
            "absent.keras: file not found",
        ),
        (
            ["--model", ".", "--data_dir", "d", "--output_dir", "o"],
            "--model .: a folder without final.keras or model/final.keras",
        ),
    ],
)
def test_bad_args_are_one_line_naming_the_flag(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and expected in error, error


def test_help_starts_with_what_it_does_and_ends_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    description = text.split("\n\n", 2)[1]  # after the usage lines
    assert description.startswith("Measure how well a trained MURA model classifies X-rays.")
    examples = text[text.index("\nExamples:\n") :]
    assert text.rstrip().endswith(examples.rstrip())  # the last section
    assert "--model JOB/model/final.keras --data_dir DATA --split test" in examples
    assert "--predictions EVAL/predictions.csv" in examples
    assert "--runner=FnApiRunner" in examples
    assert "--runner=DataflowRunner --project=PROJECT" in examples


def _run_before_tensorflow(argv, cwd) -> subprocess.CompletedProcess:
    """`main(argv)` in a fresh interpreter that prints whether TensorFlow got imported."""
    code = (
        "import sys\n"
        "from eval.__main__ import main\n"
        f"exit_code = main({list(argv)!r})\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\n"
        "sys.exit(exit_code)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    ("make_argv", "expected"),
    [
        (lambda d: ["--model", "/nope.keras", "--data_dir", str(d), "--output_dir", "o"],
         "--model /nope.keras: file not found"),
        (lambda d: ["--model", str(d / "m.keras"), "--data_dir", "/nonexistent", "--output_dir", "o"],
         "--data_dir /nonexistent: no such directory"),
        (lambda d: ["--model", str(d / "m.keras"), "--data_dir", str(d / "empty"), "--output_dir", "o"],
         "no manifest.json"),
        (lambda d: ["--model", str(d / "m.keras"), "--data_dir", str(d / "bad"), "--output_dir", "o"],
         "manifest.json: not a valid manifest: key 'schema_version' is missing"),
        (lambda d: ["--predictions", "/nope.csv", "--output_dir", "o"], "--predictions /nope.csv: file not found"),
        (lambda d: ["--model", str(d / "m.keras"), "--data_dir", str(d), "--output_dir", str(d / "m.keras")],
         "exists and is not a folder"),
        (lambda d: ["--model", str(d / "m.keras"), "--data_dir", str(d), "--output_dir", str(d / "m.keras" / "out")],
         "is a file, not a folder"),
    ],
    ids=["model", "data_dir", "manifest", "bad_manifest", "predictions", "output_is_file",
         "output_under_file"],
)  # fmt: skip
def test_path_errors_come_before_tensorflow_is_imported(
    make_argv, expected, tmp_path, sample_shards_dir
):
    (tmp_path / "m.keras").write_bytes(b"not checked before TensorFlow")
    (tmp_path / "manifest.json").write_bytes((sample_shards_dir / "manifest.json").read_bytes())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    result = _run_before_tensorflow(make_argv(tmp_path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bonify-eval: error:"), result.stderr
    assert expected in lines[0]
    assert result.stdout.strip() == "tensorflow imported: False"


@pytest.mark.parametrize("runner", ["dataflow", "DATAFLOWRUNNER", "DataflowRunner"])
def test_every_spelling_of_dataflow_gets_the_dataflow_checks(runner, capsys):
    argv = ["--model", "gs://bucket/job/model/final.keras", "--data_dir", "gs://bucket/data",
            "--output_dir", "gs://bucket/eval", f"--runner={runner}"]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "--runner=DataflowRunner needs --project" in error, error


def test_local_runner_skips_the_dataflow_checks(tmp_path, sample_shards_dir):
    from eval.options import parse_args

    (tmp_path / "m.keras").write_bytes(b"")
    (tmp_path / "manifest.json").write_bytes((sample_shards_dir / "manifest.json").read_bytes())
    config = parse_args(["--model", str(tmp_path / "m.keras"), "--data_dir", str(tmp_path),
                         "--output_dir", str(tmp_path / "out"), "--runner=FnApiRunner"])  # fmt: skip
    assert config.beam_args == ("--runner=FnApiRunner",)
