"""The evaluator takes the model's image size and resize mode from its model card: a card
that disagrees with the shards, a card-less model without --image_size/--resize, or flags
that disagree with the card are one line each, before TensorFlow is imported; --model may
be a job folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from bonify.model_card import CARD_FILE
from bonify.vocabulary import CLASS_NAMES, SCHEMA_VERSION
from eval.__main__ import main
from eval.errors import EvalError
from tests.support.trainer_runs import REPO_ROOT, stage_env


def _write_card(model_dir, image_size, resize="pad"):
    card = {"input_spec": {"image_size": image_size, "resize": resize,
                           "class_names": list(CLASS_NAMES), "schema_version": SCHEMA_VERSION}}  # fmt: skip
    (model_dir / CARD_FILE).write_text(json.dumps(card))


def _fake_model(tmp_path, card_image_size=None, card_resize="pad"):
    """JOB/model/final.keras (bytes never loaded: every case fails before TensorFlow)."""
    model_dir = tmp_path / "job" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "final.keras").write_bytes(b"not loaded before TensorFlow")
    if card_image_size is not None:
        _write_card(model_dir, card_image_size, card_resize)
    return model_dir / "final.keras"


def _run_eval(argv) -> subprocess.CompletedProcess:
    """bonify-eval in a fresh interpreter that reports whether TensorFlow got imported."""
    code = (
        "import sys\nfrom eval.__main__ import main\n"
        f"code = main({list(map(str, argv))!r})\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\nsys.exit(code)\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=stage_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def _one_line_before_tensorflow(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bonify-eval: error:"), result.stderr
    assert result.stdout.strip() == "tensorflow imported: False"
    return lines[0]


@pytest.mark.parametrize(
    ("card_image_size", "card_resize", "named"),
    [(32, "pad", ("image_size 32", "image_size 64")), (64, "stretch", ("resize stretch", "resize pad"))],
    ids=["image_size", "resize"],
)  # fmt: skip
def test_a_card_that_disagrees_with_the_shards_names_both(
    tmp_path, sample_shards_dir, card_image_size, card_resize, named
):
    model = _fake_model(tmp_path, card_image_size, card_resize)
    error = _one_line_before_tensorflow(_run_eval(
        ["--model", model, "--data_dir", sample_shards_dir, "--output_dir", tmp_path / "out"]
    ))  # fmt: skip
    assert all(part in error for part in named), error
    assert str(model.parent / CARD_FILE) in error and str(sample_shards_dir) in error


@pytest.mark.parametrize("flags", [[], ["--image_size", "64"], ["--resize", "pad"]])
def test_a_model_without_a_card_needs_image_size_and_resize(tmp_path, sample_shards_dir, flags):
    model = _fake_model(tmp_path)
    error = _one_line_before_tensorflow(_run_eval(
        ["--model", model, "--data_dir", sample_shards_dir, "--output_dir", tmp_path / "out",
         *flags]
    ))  # fmt: skip
    assert f"no {CARD_FILE}" in error and "--image_size and --resize" in error, error


def test_flags_that_disagree_with_the_card_name_both(tmp_path, sample_shards_dir):
    model = _fake_model(tmp_path, 64)
    error = _one_line_before_tensorflow(_run_eval(
        ["--model", model, "--data_dir", sample_shards_dir, "--output_dir", tmp_path / "out",
         "--image_size", "32", "--resize", "pad"]
    ))  # fmt: skip
    assert "--image_size 32" in error and "image_size 64" in error and CARD_FILE in error


def test_flags_of_a_card_less_model_that_disagree_with_the_shards_name_both(
    tmp_path, sample_shards_dir
):
    model = _fake_model(tmp_path)
    error = _one_line_before_tensorflow(_run_eval(
        ["--model", model, "--data_dir", sample_shards_dir, "--output_dir", tmp_path / "out",
         "--image_size", "64", "--resize", "stretch"]
    ))  # fmt: skip
    assert "resize stretch" in error and "--image_size/--resize" in error and "resize pad" in error


def test_the_beam_mode_checks_the_card_before_tensorflow(tmp_path, sample_shards_dir):
    model = _fake_model(tmp_path, 32)
    error = _one_line_before_tensorflow(_run_eval(
        ["--model", model, "--data_dir", sample_shards_dir, "--output_dir", tmp_path / "out",
         "--runner=FnApiRunner"]
    ))  # fmt: skip
    assert "image_size 32" in error and "image_size 64" in error


def test_the_beam_inference_itself_refuses_a_disagreeing_card(tmp_path, sample_shards_dir):
    # What a gs:// model meets: the check runs where the model is read, not only on the CLI.
    from eval.beam_inference import predict_split_beam

    model = _fake_model(tmp_path, 32)
    with pytest.raises(EvalError, match="image_size 32.*image_size 64"):
        predict_split_beam(str(model), str(sample_shards_dir), "test", 8, str(tmp_path / "out"),
                           ["--runner=FnApiRunner"])  # fmt: skip


@pytest.fixture
def job_with_model(tiny_model_factory, sample_shards_dir, tmp_path):
    """JOB/model/final.keras + its card: the tiny evaluator model laid out as the trainer does."""
    manifest = json.loads((sample_shards_dir / "manifest.json").read_text())
    tiny = tiny_model_factory(int(manifest["image_size"]))
    model_dir = tmp_path / "job" / "model"
    model_dir.mkdir(parents=True)
    shutil.copy(tiny, model_dir / "final.keras")
    shutil.copy(tiny.parent / CARD_FILE, model_dir / CARD_FILE)
    return tmp_path / "job"


@pytest.mark.parametrize("which", ["job", "model_dir"])
def test_a_job_folder_or_its_model_folder_is_evaluated_with_its_final_model(
    job_with_model, sample_shards_dir, tmp_path, which
):
    model = job_with_model if which == "job" else job_with_model / "model"
    argv = ["--model", str(model), "--data_dir", str(sample_shards_dir), "--split", "test",
            "--output_dir", str(tmp_path / "eval"), "--bootstrap_resamples", "0"]  # fmt: skip
    assert main(argv) == 0
    source = json.loads((tmp_path / "eval" / "metrics.json").read_text())["source"]
    assert source["model"] == str(job_with_model / "model" / "final.keras")


def test_a_card_less_model_is_evaluated_with_matching_flags(
    job_with_model, sample_shards_dir, tmp_path
):
    (job_with_model / "model" / CARD_FILE).unlink()  # a model from an older bonify
    argv = ["--model", str(job_with_model), "--data_dir", str(sample_shards_dir),
            "--output_dir", str(tmp_path / "eval"), "--bootstrap_resamples", "0",
            "--image_size", "64", "--resize", "pad"]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "eval" / "metrics.json").is_file()
