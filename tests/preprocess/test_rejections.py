"""Every kind of bad input lands in rejected.jsonl with its reason, decodable oddities are
written, and input_images == written + rejected. One Beam run on a corrupted copy."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from beam_preprocess.progress import PROGRESS_DIR
from beam_preprocess.report import DATA_REPORT_FILE
from bonify.vocabulary import MANIFEST_FILE, REJECTED_FILE

from .conftest import csv_image_rows, read_records, report_rejects, run_job

IMAGE_SIZE = 32


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _smooth(height: int, width: int) -> np.ndarray:
    return np.round(np.linspace(20, 230, height)[:, None] * np.ones((1, width))).astype(np.uint8)


def _append(path: pathlib.Path, *lines: str) -> None:
    text = path.read_text()
    path.write_text(text + ("" if text.endswith("\n") else "\n") + "\n".join(lines) + "\n")


def _studies(rows: list[str]) -> dict[str, list[str]]:
    by_study: dict[str, list[str]] = {}
    for row in rows:
        by_study.setdefault(row.rsplit("/", 1)[0], []).append(row)
    return by_study


def corrupt(root: pathlib.Path) -> tuple[dict[str, str], dict[str, str], dict[str, str], int, str]:
    """Damage a copied MURA tree in every way the job must survive.

    Returns (image path -> expected reason, label-row path -> expected reason,
    image path -> source mode of the decodable oddities, number of CSV image rows added,
    the path listed twice).
    """
    mura = root / "MURA-v1.1"
    train_csv, train_labels = mura / "train_image_paths.csv", mura / "train_labeled_studies.csv"
    studies = list(_studies(csv_image_rows(mura)).items())
    train_studies = [(study, rows) for study, rows in studies if "/train/" in study]
    # Distinct studies for distinct damages, so expected reasons do not overlap.
    (mismatch_study, mismatch_rows), (unlabeled_study, unlabeled_rows), *rest = train_studies
    singles = [rows[0] for _, rows in rest]
    expected: dict[str, str] = {}
    expected_rows: dict[str, str] = {}
    decodable: dict[str, str] = {}

    truncated, empty, undecodable, sixteen, palette, rgba_path = singles[:6]
    data = (root / truncated).read_bytes()
    (root / truncated).write_bytes(data[: len(data) // 2])
    expected[truncated] = "truncated_image"
    (root / empty).write_bytes(b"")
    expected[empty] = "empty_file"
    (root / undecodable).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    expected[undecodable] = "undecodable_image"

    pixels16 = (_smooth(90, 60).astype(np.uint16) * 200).astype(np.uint16)
    (root / sixteen).write_bytes(_png(Image.fromarray(pixels16)))
    decodable[sixteen] = "I;16"
    (root / palette).write_bytes(_png(Image.fromarray(_smooth(90, 60)).convert("P")))
    decodable[palette] = "P"
    rgba = np.dstack([_smooth(90, 60)] * 3 + [np.full((90, 60), 255, np.uint8)])
    (root / rgba_path).write_bytes(_png(Image.fromarray(rgba)))
    decodable[rgba_path] = "RGBA"

    study_dir = singles[6].rsplit("/", 1)[0]
    fork = f"{study_dir}/._image1.png"  # a macOS resource fork listed in the CSV
    (root / fork).write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 60)
    expected[fork] = "not_an_image"
    missing = f"{study_dir}/image99.png"
    expected[missing] = "missing_file"
    garbage, no_folders = "this,is,not,a,path", "image1.png"
    expected[garbage] = expected[no_folders] = "unparseable_csv_line"
    knee = "MURA-v1.1/train/XR_KNEE/patient00001/study1_positive/image1.png"
    expected[knee] = "unknown_region"
    duplicate = singles[7]
    _append(train_csv, fork, missing, garbage, no_folders, knee, duplicate, "")
    extra_rows = 6  # the blank line is not a row
    # `duplicate` keeps its first row; the second is rejected (same path, so count it).

    # Flip the study label of one study: its row and its images are rejected.
    suffix_label = 1 if mismatch_study.endswith("_positive") else 0
    lines = train_labels.read_text().splitlines()
    lines = [
        f"{mismatch_study}/,{1 - suffix_label}" if line.startswith(mismatch_study + "/,") else line
        for line in lines
        if not line.startswith(unlabeled_study + "/,")
    ]
    train_labels.write_text("\n".join(lines + ["not a label row"]) + "\n")
    expected_rows[mismatch_study + "/"] = "label_mismatch"
    expected_rows["not a label row"] = "unparseable_csv_line"
    for row in mismatch_rows:
        expected[row] = "label_mismatch"
    for row in unlabeled_rows:
        expected[row] = "no_study_label"

    # A file on disk that no CSV lists: not indexed, counted.
    shutil.copy(root / singles[8], root / f"{study_dir}/image_unlisted.png")
    return expected, expected_rows, decodable, extra_rows, duplicate


@pytest.fixture(scope="module")
def corrupted_run(sample_dataset_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupted") / "input"
    shutil.copytree(sample_dataset_dir, root)
    rows_before = len(csv_image_rows(root / "MURA-v1.1"))
    expected, expected_rows, decodable, extra_rows, duplicate = corrupt(root)
    out = tmp_path_factory.mktemp("corrupted_out")
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        code = run_job(
            [
                "--input_dir",
                root,
                "--output_dir",
                out,
                "--image_size",
                IMAGE_SIZE,
                "--num_shards",
                3,
            ]
        )
    assert code == 0
    rejected = [json.loads(line) for line in (out / REJECTED_FILE).read_text().splitlines()]
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    return {
        "root": root,
        "out": out,
        "rows": rows_before + extra_rows,
        "expected": expected,
        "expected_rows": expected_rows,
        "decodable": decodable,
        "duplicate": duplicate,
        "rejected": rejected,
        "manifest": manifest,
        "console": console.getvalue(),
    }


def test_every_bad_image_row_is_rejected_with_its_reason(corrupted_run):
    image_rejections = [r for r in corrupted_run["rejected"] if r["kind"] == "image"]
    duplicates = [r for r in image_rejections if r["reason"] == "duplicate_path"]
    assert [r["path"] for r in duplicates] == [corrupted_run["duplicate"]]
    got = {r["path"]: r["reason"] for r in image_rejections if r["reason"] != "duplicate_path"}
    assert got == corrupted_run["expected"]
    assert all(r["detail"] and r["source"] for r in image_rejections)


def test_bad_label_rows_are_rejected_too(corrupted_run):
    rows = {r["path"]: r["reason"] for r in corrupted_run["rejected"] if r["kind"] == "study_row"}
    assert rows == corrupted_run["expected_rows"]
    assert corrupted_run["manifest"]["rejected_study_rows"] == len(rows)


def test_counts_add_up(corrupted_run):
    manifest = corrupted_run["manifest"]
    image_rejections = [r for r in corrupted_run["rejected"] if r["kind"] == "image"]
    records = read_records(corrupted_run["out"])
    assert manifest["input_images"] == corrupted_run["rows"]
    assert manifest["written"] == len(records)
    assert manifest["rejected"] == len(image_rejections)
    assert manifest["input_images"] == manifest["written"] + manifest["rejected"]
    assert manifest["rejected_by_reason"] == dict(Counter(r["reason"] for r in image_rejections))
    assert sum(split["images"] for split in manifest["splits"].values()) == manifest["written"]
    assert manifest["unlisted_files"] == 1
    assert manifest["unlisted_file_examples"][0].endswith("image_unlisted.png")


def test_16_bit_palette_and_rgba_images_are_written(corrupted_run):
    records = {r["path"]: r for r in read_records(corrupted_run["out"])}
    for path in corrupted_run["decodable"]:
        record = records[path]
        assert (record["original_height"], record["original_width"]) == (90, 60)
        pixels = np.asarray(Image.open(io.BytesIO(record["image"])))
        assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE)
        # A vertical gradient, padded left and right: bright bottom, dark top, black sides.
        centre = pixels[:, IMAGE_SIZE // 2].astype(int)
        assert centre[-2] - centre[1] > 100, path
        assert pixels[:, 0].max() == 0


def test_the_summary_prints_the_counts_and_points_to_rejected_jsonl(corrupted_run):
    console, manifest = corrupted_run["console"], corrupted_run["manifest"]
    assert (
        f"input_images = written + rejected: {manifest['input_images']} = "
        f"{manifest['written']} + {manifest['rejected']}"
    ) in console
    for reason, count in manifest["rejected_by_reason"].items():
        assert f"rejected {reason}: {count}" in console
    assert f"listed in {corrupted_run['out']}/{REJECTED_FILE}" in console


def test_progress_is_reported_per_split_not_per_shard(corrupted_run):
    console, manifest = corrupted_run["console"], corrupted_run["manifest"]
    for split, entry in manifest["splits"].items():
        done = [line for line in console.splitlines() if f"] {split}: all " in line]
        assert len(done) == 1, console
        assert f"{split}: all 3 shards written: {entry['images']} images" in done[0]
    assert "mura-train.tfrecord-00000" not in console
    assert not (corrupted_run["out"] / PROGRESS_DIR).exists()


def test_the_data_report_lists_the_rejects_by_reason(corrupted_run):
    kinds = {"image": "image", "study_row": "label row"}
    expected = Counter((kinds[r["kind"]], r["reason"]) for r in corrupted_run["rejected"])
    page = (corrupted_run["out"] / DATA_REPORT_FILE).read_text()
    assert report_rejects(page) == dict(expected)
