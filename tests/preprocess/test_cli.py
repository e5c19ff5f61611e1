"""Command-line behaviour: bad arguments are one line and exit 2, Dataflow prerequisites
are checked before launching, and reruns never mix or destroy outputs."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

from bonify.vocabulary import MANIFEST_FILE

from .conftest import REPO_ROOT_FOR_SUBPROCESS, one_line, run_job

DATAFLOW = ["--runner=DataflowRunner", "--project=my-project", "--region=us-central1"]


def _error_line(capsys) -> str:
    lines = one_line(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("bonify-preprocess: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--image_size", "0"], "--image_size"),
        (["--image_size", "big"], "--image_size"),
        (["--val_fraction", "1.0"], "--val_fraction"),
        (["--val_fraction", "-0.1"], "--val_fraction"),
        (["--resize", "crop"], "--resize"),
        (["--encoding", "webp"], "--encoding"),
        (["--num_shards", "0"], "--num_shards"),
        (["--num_shards", "4", "--target_shard_mb", "10"], "not allowed with"),
        (["--target_shard_mb", "-1"], "--target_shard_mb"),
        (["--image_sise", "64"], "unknown flag --image_sise"),
        (["--direct_num_workers", "two"], "bad Beam pipeline option"),
    ],
)
def test_bad_values_are_one_line_errors(extra, expected, sample_dataset_dir, tmp_path, capsys):
    code = run_job(["--input_dir", sample_dataset_dir, "--output_dir", tmp_path / "out", *extra])
    assert code == 2
    assert expected in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_missing_required_flag(tmp_path, capsys):
    assert run_job(["--output_dir", tmp_path]) == 2
    assert "--input_dir" in _error_line(capsys)


def test_missing_input_dir(tmp_path, capsys):
    assert run_job(["--input_dir", tmp_path / "nope", "--output_dir", tmp_path / "out"]) == 2
    assert "does not exist" in _error_line(capsys)


def test_input_dir_without_csvs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run_job(["--input_dir", tmp_path / "empty", "--output_dir", tmp_path / "out"]) == 2
    assert "train_image_paths.csv" in _error_line(capsys)


def test_mura_dir_missing_one_csv(copied_dataset, tmp_path, capsys):
    (copied_dataset / "MURA-v1.1" / "valid_labeled_studies.csv").unlink()
    # The MURA-v1.1 folder itself is accepted as --input_dir too.
    assert (
        run_job(["--input_dir", copied_dataset / "MURA-v1.1", "--output_dir", tmp_path / "out"])
        == 2
    )
    assert "valid_labeled_studies.csv" in _error_line(capsys)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["--runner=DataflowRunner", "--region=r1", "--temp_location=gs://my-bucket/tmp"],
            "--project",
        ),
        (
            ["--runner=DataflowRunner", "--project=my-project", "--temp_location=gs://my-bucket/t"],
            "--region",
        ),
        (DATAFLOW, "gs:// --temp_location"),
        ([*DATAFLOW, "--temp_location=/tmp/local"], "gs:// --temp_location"),
        ([*DATAFLOW, "--temp_location=gs://b/tmp"], "not a valid gs://"),
        ([*DATAFLOW, "--temp_location=gs://my-bucket/tmp"], "--input_dir must be a gs://"),
    ],
)
def test_dataflow_prerequisites_are_checked_before_launch(
    flags, expected, sample_dataset_dir, tmp_path, capsys
):
    code = run_job(["--input_dir", sample_dataset_dir, "--output_dir", tmp_path / "out", *flags])
    assert code == 2
    assert expected in _error_line(capsys)


def test_subprocess_error_is_one_line_not_a_traceback(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_preprocess",
            "--input_dir",
            str(tmp_path),
            "--output_dir",
            str(tmp_path / "out"),
            "--val_fraction",
            "2",
        ],
        cwd=REPO_ROOT_FOR_SUBPROCESS,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT_FOR_SUBPROCESS)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    lines = one_line(completed.stderr)
    assert lines == ["bonify-preprocess: error: --val_fraction must be in [0, 1), got 2.0"]


HELP_COMMANDS = {
    "bonify-preprocess": ("beam_preprocess.__main__", "Turn a MURA v1.1 tree"),
    "bonify-sample": ("bonify.sample", "Write a synthetic MURA v1.1 dataset"),
    "inspect": ("beam_preprocess.inspect", "Look at what bonify-preprocess wrote"),
}


@pytest.mark.parametrize("command", sorted(HELP_COMMANDS))
def test_help_says_what_the_command_does_and_ends_with_examples(command, capsys):
    module_name, first_words = HELP_COMMANDS[command]
    module = importlib.import_module(module_name)
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    description = help_text.split("\n\n", 1)[1]  # after the usage lines
    assert description.startswith(first_words)
    examples = help_text.rsplit("Examples:\n", 1)[1]
    commands = [line.strip() for line in examples.splitlines() if line.strip()]
    assert commands and not commands[-1].startswith("#")
    assert all(line.startswith(("#", "bonify-", "python -m", "--")) for line in commands)


def test_preprocess_help_says_a_local_run_uses_every_core(capsys):
    with pytest.raises(SystemExit):
        run_job(["--help"])
    assert "one worker process per CPU core" in " ".join(capsys.readouterr().out.split())


def _run_in_fresh_python(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter that then prints which heavy modules it imported."""
    script = (
        "import sys\n"
        f"{code}\n"
        "print('imported:', [m for m in ('tensorflow', 'apache_beam') if m in sys.modules])\n"
        "sys.exit(exit_code)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT_FOR_SUBPROCESS,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT_FOR_SUBPROCESS)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_input_dir_is_reported_before_beam_or_tensorflow_load(tmp_path):
    completed = _run_in_fresh_python(
        "from beam_preprocess.__main__ import main\n"
        f"exit_code = main(['--input_dir', {str(tmp_path / 'nope')!r}, '--output_dir', {str(tmp_path / 'out')!r}])"
    )
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"bonify-preprocess: error: --input_dir {tmp_path / 'nope'} does not exist"
    ]
    assert "imported: []" in completed.stdout


def test_inspect_missing_output_dir_is_reported_before_tensorflow_loads(tmp_path):
    completed = _run_in_fresh_python(
        "from beam_preprocess.inspect import main\n"
        f"exit_code = main(['--output_dir', {str(tmp_path / 'nope')!r}])"
    )
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"python -m beam_preprocess.inspect: error: --output_dir {tmp_path / 'nope'} does not exist"
    ]
    assert "imported: []" in completed.stdout


def _mtimes(directory):
    return {path.name: path.stat().st_mtime_ns for path in directory.iterdir()}


def test_rerun_refuses_then_overwrite_replaces_without_stale_shards(
    sample_dataset_dir, tmp_path, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("not ours")
    stale = out / "mura-train.tfrecord-00000-of-00099"
    stale.write_bytes(b"stale")
    common = [
        "--input_dir",
        sample_dataset_dir,
        "--output_dir",
        out,
        "--image_size",
        "16",
        "--num_shards",
        "2",
    ]

    # Shards without a manifest: an incomplete run, refused and left untouched.
    assert run_job(common) == 2
    assert "incomplete previous run" in _error_line(capsys)
    assert stale.exists()

    assert run_job([*common, "--overwrite"]) == 0
    capsys.readouterr()
    assert not stale.exists()
    assert (out / "notes.txt").read_text() == "not ours"
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    shards = sorted(path.name for path in out.glob("mura-*.tfrecord-*"))
    assert shards == sorted(
        name for split in manifest["splits"].values() for name in split["files"]
    )

    # A complete run: refused without --overwrite, nothing changed.
    before = _mtimes(out)
    assert run_job(common) == 2
    assert "already holds a preprocessing run" in _error_line(capsys)
    assert _mtimes(out) == before

    # --overwrite with other shard counts: only the new shards remain.
    assert run_job([*common[:-1], "3", "--overwrite"]) == 0
    assert all(path.name.endswith("-of-00003") for path in out.glob("mura-*.tfrecord-*"))
    assert (out / "notes.txt").exists()
