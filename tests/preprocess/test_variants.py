"""Other output settings end to end: JPEG and raw encodings read back through TFDS, the
inspector and the vocabulary spec; stretch resizing; an empty validation split; a tree
whose every row is rejected."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from beam_preprocess.inspect import main as inspect_main
from bonify.vocabulary import MANIFEST_FILE

from .conftest import read_records, run_job

IMAGE_SIZE = 24


@pytest.mark.parametrize("encoding", ["jpeg", "raw"])
def test_encoding_reads_back_everywhere(encoding, sample_dataset_dir, tmp_path, capsys):
    import tensorflow_datasets as tfds

    out = tmp_path / "out"
    argv = ["--input_dir", sample_dataset_dir, "--output_dir", out, "--image_size", IMAGE_SIZE]
    assert run_job([*argv, "--encoding", encoding, "--resize", "stretch", "--num_shards", 2]) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["encoding"] == encoding and manifest["resize"] == "stretch"

    records = read_records(out, "test")
    assert {r["format"] for r in records} == {encoding}
    for record in records[:5]:
        if encoding == "raw":
            pixels = np.frombuffer(record["image"], np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)
        else:
            pixels = np.asarray(Image.open(io.BytesIO(record["image"])))
        assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE)
        # stretch: no black padding columns at the sides
        assert pixels[:, 0].max() > 0 and pixels[:, -1].max() > 0

    examples = list(tfds.builder_from_directory(str(out)).as_dataset(split="test"))
    assert len(examples) == manifest["splits"]["test"]["images"] == len(records)
    assert all(e["image"].shape == (IMAGE_SIZE, IMAGE_SIZE, 1) for e in examples)
    if encoding == "raw":
        by_path = {r["path"]: r["image"] for r in records}
        for example in examples[:5]:
            stored = by_path[example["path"].numpy().decode()]
            assert example["image"].numpy().tobytes() == stored

    capsys.readouterr()
    assert inspect_main(["--output_dir", str(out), "--n", "2"]) == 0
    assert f"decoded shape ({IMAGE_SIZE}, {IMAGE_SIZE}, 1)" in capsys.readouterr().out


def test_zero_val_fraction_leaves_validation_empty(sample_dataset_dir, tmp_path):
    import tensorflow_datasets as tfds

    out = tmp_path / "out"
    argv = ["--input_dir", sample_dataset_dir, "--output_dir", out, "--image_size", 16]
    assert run_job([*argv, "--val_fraction", "0", "--num_shards", 2]) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["splits"]["validation"]["images"] == 0
    assert manifest["splits"]["validation"]["files"] == []
    assert not list(out.glob("mura-validation*"))
    assert set(tfds.builder_from_directory(str(out)).info.splits) == {"train", "test"}


def test_every_row_rejected_still_reports(copied_dataset, tmp_path):
    mura = copied_dataset / "MURA-v1.1"
    for name in ("train_labeled_studies.csv", "valid_labeled_studies.csv"):
        (mura / name).write_text("")  # no labels: every image row is rejected
    out = tmp_path / "out"
    assert run_job(["--input_dir", copied_dataset, "--output_dir", out, "--image_size", 16]) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["written"] == 0
    assert manifest["rejected"] == manifest["input_images"] > 0
    assert manifest["rejected_by_reason"] == {"no_study_label": manifest["input_images"]}
    assert not list(out.glob("mura-*"))
