"""The evaluator takes the model's image size and resize mode from its model card: a card
that disagrees with the shards, a card-less model without --image_size/--resize, or flags
that disagree with the card are one line each, before TensorFlow is imported; --model may
be a job folder."""

from __future__ import annotations

import json

import pytest

from bonify.model_card import CARD_FILE
from eval.__main__ import main
from eval.errors import EvalError
from tests.support.eval_runs import (
    one_error_line_before_tensorflow,
    run_eval_in_fresh_interpreter,
    write_model_card,
)


def _fake_model(tmp_path, card_image_size=None, card_resize="pad"):
    """JOB/model/final.keras (bytes never loaded: every case fails before TensorFlow)."""
    model_dir = tmp_path / "job" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "final.keras").write_bytes(b"not loaded before TensorFlow")
    if card_image_size is not None:
        write_model_card(model_dir, card_image_size, card_resize)
    return model_dir / "final.keras"


@pytest.mark.parametrize(
    ("card_image_size", "card_resize", "named"),
    [(32, "pad", ("image_size 32", "image_size 64")), (64, "stretch", ("resize stretch", "resize pad"))],
    ids=["image_size", "resize"],
)  # fmt: skip
def test_a_card_that_disagrees_with_the_shards_names_both(
    tmp_path, sample_shards_dir, card_image_size, card_resize, named
):
    model = _fake_model(tmp_path, card_image_size, card_resize)
    error = one_error_line_before_tensorflow(run_eval_in_fresh_interpreter(
        ["--model", model, "--data_dir", sample_shards_dir, "--output_dir", tmp_path / "out"]
    ))  # fmt: skip
    assert all(part in error for part in named), error
    assert str(model.parent / CARD_FILE) in error and str(sample_shards_dir) in error


@pytest.mark.parametrize("flags", [[], ["--image_size", "64"], ["--resize", "pad"]])
def test_a_model_without_a_card_needs_image_size_and_resize(tmp_path, sample_shards_dir, flags):
    model = _fake_model(tmp_path)
    error = one_error_line_before_tensorflow(run_eval_in_fresh_interpreter(
        ["--model", model, "--data_dir", sample_shards_dir, "--output_dir", tmp_path / "out",
         *flags]
    ))  # fmt: skip
    assert f"no {CARD_FILE}" in error and "--image_size and --resize" in error, error


def test_flags_that_disagree_with_the_card_name_both(tmp_path, sample_shards_dir):
    model = _fake_model(tmp_path, 64)
    error = one_error_line_before_tensorflow(run_eval_in_fresh_interpreter(
        ["--model", model, "--data_dir", sample_shards_dir, "--output_dir", tmp_path / "out",
         "--image_size", "32", "--resize", "pad"]
    ))  # fmt: skip
    assert "--image_size 32" in error and "image_size 64" in error and CARD_FILE in error


def test_flags_of_a_card_less_model_that_disagree_with_the_shards_name_both(
    tmp_path, sample_shards_dir
):
    model = _fake_model(tmp_path)
    error = one_error_line_before_tensorflow(run_eval_in_fresh_interpreter(
        ["--model", model, "--data_dir", sample_shards_dir, "--output_dir", tmp_path / "out",
         "--image_size", "64", "--resize", "stretch"]
    ))  # fmt: skip
    assert "resize stretch" in error and "--image_size/--resize" in error and "resize pad" in error


def test_the_beam_mode_checks_the_card_before_tensorflow(tmp_path, sample_shards_dir):
    model = _fake_model(tmp_path, 32)
    error = one_error_line_before_tensorflow(run_eval_in_fresh_interpreter(
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
