"""The command line: bad arguments are one line on stderr and a non-zero exit."""

from __future__ import annotations

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
        (["--model", "absent.keras", "--data_dir", "d", "--output_dir", "o"], "no manifest.json"),
    ],
)
def test_bad_args_are_one_line_naming_the_flag(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and expected in error, error
