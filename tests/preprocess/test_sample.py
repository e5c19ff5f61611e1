"""The synthetic MURA generator writes the real release's layout, deterministically."""

from __future__ import annotations

import collections
import hashlib
import pathlib

import numpy as np
import pytest
from PIL import Image

from beam_preprocess import sample
from bonify import vocabulary as vocab


def read_lines(path: pathlib.Path) -> list[str]:
    return path.read_text().splitlines()


def tree_digest(folder: pathlib.Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_csvs_follow_the_release_format(sample_dataset_dir):
    mura = sample_dataset_dir / vocab.MURA_ROOT_NAME
    for folder in vocab.MURA_FOLDERS:
        image_rows = read_lines(mura / f"{folder}_image_paths.csv")
        study_rows = read_lines(mura / f"{folder}_labeled_studies.csv")
        assert image_rows and study_rows
        for row in image_rows:
            assert "," not in row and row.startswith(f"MURA-v1.1/{folder}/XR_")
            assert row.endswith(".png")
        for row in study_rows:
            study_path, label = row.split(",")
            assert study_path.endswith("/") and study_path.startswith(f"MURA-v1.1/{folder}/")
            # The CSV label agrees with the folder suffix, as in the release.
            assert int(label) == vocab.parse_study_path(study_path).abnormal_from_folder
        # Every image's study has exactly one label row.
        labelled = {row.split(",")[0] for row in study_rows}
        assert len(labelled) == len(study_rows)
        assert {row.rsplit("/", 1)[0] + "/" for row in image_rows} == labelled


def test_csv_rows_and_files_on_disk_match_exactly(sample_dataset_dir):
    listed = set()
    for folder in vocab.MURA_FOLDERS:
        listed |= set(read_lines(sample_dataset_dir / "MURA-v1.1" / f"{folder}_image_paths.csv"))
    on_disk = {
        str(path.relative_to(sample_dataset_dir))
        for path in (sample_dataset_dir / "MURA-v1.1").rglob("*.png")
    }
    assert listed == on_disk


def test_valid_patients_are_disjoint_from_train_patients(sample_dataset_dir):
    patients = {}
    for folder in vocab.MURA_FOLDERS:
        rows = read_lines(sample_dataset_dir / "MURA-v1.1" / f"{folder}_image_paths.csv")
        patients[folder] = {vocab.parse_study_path(row).patient_id for row in rows}
    assert patients["train"] and patients["valid"]
    assert not patients["train"] & patients["valid"]


def test_studies_have_one_to_four_images_and_some_patients_several_studies(sample_dataset_dir):
    rows = read_lines(sample_dataset_dir / "MURA-v1.1" / "train_image_paths.csv")
    images_per_study = collections.Counter(row.rsplit("/", 1)[0] + "/" for row in rows)
    assert set(images_per_study.values()) <= {1, 2, 3, 4}
    assert len(set(images_per_study.values())) >= 3
    studies_per_patient = collections.Counter(
        vocab.parse_study_path(study).patient_id for study in images_per_study
    )
    assert max(studies_per_patient.values()) >= 2


def test_images_are_8bit_pngs_of_mixed_modes_and_sizes(sample_dataset_dir):
    modes, long_sides, short_sides = collections.Counter(), set(), set()
    for path in (sample_dataset_dir / "MURA-v1.1").rglob("*.png"):
        with Image.open(path) as image:
            assert image.format == "PNG"
            modes[image.mode] += 1
            long_sides.add(max(image.size))
            short_sides.add(min(image.size))
    assert set(modes) == {"L", "RGB", "RGBA"}
    assert modes["L"] > modes["RGB"] + modes["RGBA"]  # mostly grayscale, as in the release
    assert long_sides == {sample.IMAGE_LONG_SIDE}
    assert len(short_sides) > 10 and min(short_sides) < 300


def test_default_size_has_every_class_in_both_folders():
    studies = sample.plan_studies(sample.DEFAULT_PATIENTS, seed=0)
    for folder in vocab.MURA_FOLDERS:
        labels = {
            vocab.label_of(vocab.REGIONS.index(s.region), s.abnormal)
            for s in studies
            if s.folder == folder
        }
        assert labels == set(range(vocab.NUM_CLASSES))
    total_images = sum(s.num_images for s in studies)
    assert 500 <= total_images <= 1500


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    first = sample.generate_sample(tmp_path / "a", patients=6, seed=3)
    second = sample.generate_sample(tmp_path / "b", patients=6, seed=3)
    other = sample.generate_sample(tmp_path / "c", patients=6, seed=4)
    assert tree_digest(first) == tree_digest(second)
    assert tree_digest(first) != tree_digest(other)


def test_cli_refuses_a_non_empty_output_then_overwrites(tmp_path, capsys):
    assert sample.main(["--output_dir", str(tmp_path), "--patients", "3"]) == 0
    assert "images per class" in capsys.readouterr().out
    assert sample.main(["--output_dir", str(tmp_path), "--patients", "3"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--overwrite" in error
    assert sample.main(["--output_dir", str(tmp_path), "--patients", "3", "--overwrite"]) == 0


@pytest.mark.parametrize("bad", [["--patients", "0"], ["--output_dir", "gs://bucket/x"]])
def test_cli_bad_arguments_are_one_line_errors(tmp_path, capsys, bad):
    argv = ["--output_dir", str(tmp_path / "out"), *bad]
    assert sample.main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def padded_pixels(path: pathlib.Path, size: int = 32) -> np.ndarray:
    with Image.open(path) as image:
        gray = image.convert("L")
    side = max(gray.size)
    canvas = Image.new("L", (side, side))
    canvas.paste(gray, ((side - gray.width) // 2, (side - gray.height) // 2))
    return np.asarray(canvas.resize((size, size)), dtype=np.float32).ravel() / 255.0


def test_regions_are_visible_at_low_resolution(sample_dataset_dir):
    """A linear model on 32 px pixels tells regions apart on held-out (valid/) patients.

    (That abnormal defects are learnable is shown end to end by the trainer demo.)
    """
    from sklearn.linear_model import LogisticRegression

    def load(folder):
        rows = read_lines(sample_dataset_dir / "MURA-v1.1" / f"{folder}_image_paths.csv")
        keys = [vocab.parse_study_path(row) for row in rows]
        features = np.stack([padded_pixels(sample_dataset_dir / row) for row in rows])
        regions = np.array([vocab.REGIONS.index(key.region) for key in keys])
        return features, regions

    train_x, train_regions = load("train")
    test_x, test_regions = load("valid")
    model = LogisticRegression(max_iter=2000).fit(train_x, train_regions)
    region_accuracy = (model.predict(test_x) == test_regions).mean()
    assert region_accuracy > 0.6  # chance is 1/7
