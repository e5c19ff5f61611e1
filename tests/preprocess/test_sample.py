"""The synthetic MURA generator writes the real release's layout, deterministically."""

from __future__ import annotations

import collections
import hashlib
import pathlib
import time

import numpy as np
import pytest
from PIL import Image

from bonify import sample
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


def test_cli_refuses_an_output_dir_that_is_a_file(tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("keep me")
    assert sample.main(["--output_dir", str(not_a_folder)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not_a_folder.read_text() == "keep me"


def test_cli_help_documents_the_default_size(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--help"])
    assert exit_info.value.code == 0
    assert f"default {sample.DEFAULT_PATIENTS}" in capsys.readouterr().out


def padded_pixels(path: pathlib.Path, size: int = 64) -> np.ndarray:
    """The image as the trainer sees it: gray, padded to a square, resized, in [0, 1]."""
    with Image.open(path) as image:
        gray = image.convert("L")
    side = max(gray.size)
    canvas = Image.new("L", (side, side))
    canvas.paste(gray, ((side - gray.width) // 2, (side - gray.height) // 2))
    return np.asarray(canvas.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def load_images(dataset_dir: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every image of both folders: (images [N, 64, 64] float32, labels [N], patient ids [N])."""
    rows = [
        row
        for folder in vocab.MURA_FOLDERS
        for row in read_lines(dataset_dir / "MURA-v1.1" / f"{folder}_image_paths.csv")
    ]
    keys = [vocab.parse_study_path(row) for row in rows]
    images = np.stack([padded_pixels(dataset_dir / row) for row in rows])
    labels = np.array(
        [vocab.label_of(vocab.REGIONS.index(k.region), k.abnormal_from_folder) for k in keys]
    )
    return images, labels, np.array([k.patient_id for k in keys])


def position_free_features(images: np.ndarray) -> np.ndarray:
    """Histograms of intensity and of neighbour differences: where a defect is does not matter.

    A metal plate adds pixels brighter than bone; a fracture gap adds sharp bright-to-dark
    steps. Pixels themselves cannot show that to a linear model, as defects move around.
    """
    features = []
    for image in images:
        dx, dy = np.diff(image, axis=1), np.diff(image, axis=0)
        features.append(
            np.concatenate(
                [
                    np.histogram(image, bins=16, range=(0, 1))[0] / image.size,
                    np.log1p(1000 * np.histogram(dx, bins=16, range=(-1, 1))[0] / dx.size),
                    np.log1p(1000 * np.histogram(dy, bins=16, range=(-1, 1))[0] / dy.size),
                ]
            )
        )
    return np.array(features)


def test_class_is_visible_at_64_px_on_held_out_patients(sample_dataset_dir):
    """Cheap models, cross-validated with patients held out, see region and abnormality.

    Images are read at 64 px like the tests' trainer. Region: logistic regression on the
    pixels (shrunk to 16 px to keep it fast). Abnormal: logistic regression on
    position-free histograms plus the region. (A small CNN learning all 14 classes is the
    trainer demo's job.)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    images, labels, patients = load_images(sample_dataset_dir)
    folds = GroupKFold(n_splits=4)
    small = images.reshape(len(images), 16, 4, 16, 4).mean(axis=(2, 4)).reshape(len(images), -1)
    region_accuracy = cross_val_score(
        LogisticRegression(max_iter=2000, C=0.1), small, labels // 2, groups=patients, cv=folds
    ).mean()
    assert region_accuracy > 0.7, region_accuracy  # chance is about 1/7

    with_region = np.hstack(
        [position_free_features(images), np.eye(vocab.NUM_REGIONS)[labels // 2]]
    )
    abnormal_accuracy = cross_val_score(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        with_region,
        labels % 2,
        groups=patients,
        cv=folds,
    ).mean()
    majority = max((labels % 2).mean(), 1 - (labels % 2).mean())
    # ~0.72 vs ~0.57 at 60 patients: hardware is easy for histograms, fractures are not.
    assert abnormal_accuracy > majority + 0.1, (abnormal_accuracy, majority)
    print(
        f"region {region_accuracy:.3f}, abnormal {abnormal_accuracy:.3f} (majority {majority:.3f})"
    )


def test_small_patient_counts_work(tmp_path):
    for patients in (1, 2, 10):
        mura = sample.generate_sample(tmp_path / str(patients), patients=patients, seed=0)
        rows = read_lines(mura / "train_image_paths.csv") + read_lines(
            mura / "valid_image_paths.csv"
        )
        patient_ids = {vocab.parse_study_path(row).patient_id for row in rows}
        assert len(patient_ids) == patients
        assert all((mura.parent / row).is_file() for row in rows)


@pytest.mark.slow
def test_default_sample_generates_every_class_in_both_folders(tmp_path, capsys):
    started = time.perf_counter()
    mura = sample.generate_sample(tmp_path)
    seconds = time.perf_counter() - started
    total = 0
    for folder in vocab.MURA_FOLDERS:
        rows = read_lines(mura / f"{folder}_image_paths.csv")
        total += len(rows)
        keys = [vocab.parse_study_path(row) for row in rows]
        labels = {
            vocab.label_of(vocab.REGIONS.index(k.region), k.abnormal_from_folder) for k in keys
        }
        assert labels == set(range(vocab.NUM_CLASSES)), folder
    assert 500 <= total <= 1500
    with capsys.disabled():  # measured, not asserted: the machine may be shared
        print(
            f"\ndefault sample ({sample.DEFAULT_PATIENTS} patients): {total} images in {seconds:.1f} s"
        )
