"""Beam RunInference mode gives the same predictions as in-process inference."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from bonify.vocabulary import MANIFEST_FILE
from eval.__main__ import main


def test_beam_runinference_matches_in_process(tiny_model_factory, sample_shards_dir, tmp_path):
    manifest = json.loads((sample_shards_dir / MANIFEST_FILE).read_text())
    model = tiny_model_factory(int(manifest["image_size"]))
    common = ["--model", str(model), "--data_dir", str(sample_shards_dir), "--split", "test",
              "--batch_size", "16", "--bootstrap_resamples", "20"]  # fmt: skip
    assert main([*common, "--output_dir", str(tmp_path / "local")]) == 0
    assert main([*common, "--output_dir", str(tmp_path / "beam"), "--runner=FnApiRunner"]) == 0
    local = pd.read_csv(tmp_path / "local" / "predictions.csv")
    beam = pd.read_csv(tmp_path / "beam" / "predictions.csv")
    assert len(beam) == manifest["splits"]["test"]["images"]
    assert list(beam["image_path"]) == list(local["image_path"])
    pd.testing.assert_frame_equal(
        beam.drop(columns=[c for c in beam.columns if c.startswith("prob_")] + ["confidence"]),
        local.drop(columns=[c for c in local.columns if c.startswith("prob_")] + ["confidence"]),
    )
    probs = [c for c in local.columns if c.startswith("prob_")]
    np.testing.assert_allclose(beam[probs].to_numpy(), local[probs].to_numpy(), atol=1e-5)
    metrics = json.loads((tmp_path / "beam" / "metrics.json").read_text())
    assert metrics["source"]["inference"] == "beam"
    assert not (tmp_path / "beam" / ".beam_inference").exists()  # scratch output cleaned up


def test_unknown_beam_flag_is_one_line(tiny_model_factory, sample_shards_dir, tmp_path, capsys):
    model = tiny_model_factory(64)
    argv = ["--model", str(model), "--data_dir", str(sample_shards_dir), "--output_dir",
            str(tmp_path / "o"), "--runner=FnApiRunner", "--no_such_flag=1"]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "--no_such_flag" in error and len(error.splitlines()) == 1


DATAFLOW = ["--runner=DataflowRunner", "--project=my-project", "--region=us-central1"]


def test_dataflow_job_builds_offline_with_dry_run(tiny_model_factory, sample_shards_dir, tmp_path,
                                                  capsys):  # fmt: skip
    model = tiny_model_factory(64)
    argv = ["--model", str(model), "--data_dir", str(sample_shards_dir), "--split", "test",
            "--output_dir", str(tmp_path / "o"), *DATAFLOW,
            "--temp_location=gs://my-bucket/tmp", "--dry_run=True"]  # fmt: skip
    assert main(argv) == 0
    assert "dry run on DataflowRunner: job built" in capsys.readouterr().out
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_dataflow_prerequisites_are_one_line_errors(tiny_model_factory, sample_shards_dir,
                                                    tmp_path, capsys):  # fmt: skip
    model = tiny_model_factory(64)
    common = ["--model", str(model), "--data_dir", str(sample_shards_dir), "--split", "test",
              "--output_dir", str(tmp_path / "o")]  # fmt: skip
    cases = [
        (["--runner=DataflowRunner", "--region=r1", "--temp_location=gs://my-bucket/t"],
         "--project"),
        ([*DATAFLOW], "gs:// --temp_location"),
        ([*DATAFLOW, "--temp_location=gs://my-bucket/tmp"], "on Dataflow --model must be a gs://"),
    ]  # fmt: skip
    for flags, expected in cases:
        assert main([*common, *flags]) == 2
        error = capsys.readouterr().err.strip()
        assert expected in error and len(error.splitlines()) == 1, error
