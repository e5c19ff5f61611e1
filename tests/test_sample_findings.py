"""The sample generator records where it drew each finding, without changing one image byte."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from PIL import Image

from bonify import sample
from bonify import vocabulary as vocab

#: sha256 over (relative path, bytes) of every file under MURA-v1.1/ of the 60-patient,
#: seed-0 sample (the session fixture), computed before findings were recorded. The demo's
#: result depends on these bytes: recording boxes must never change them.
SEED0_60_PATIENTS_TREE_SHA256 = "b73acb42d8c63e582fdbf403e17634df36bd73c0bc906f24be714403af87e8e2"


def tree_sha256(sample_dir) -> str:
    digest = hashlib.sha256()
    for path in sorted((sample_dir / vocab.MURA_ROOT_NAME).rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(sample_dir)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_recording_findings_leaves_every_image_and_csv_byte_identical(sample_dataset_dir):
    assert tree_sha256(sample_dataset_dir) == SEED0_60_PATIENTS_TREE_SHA256


def test_findings_file_lies_beside_the_mura_tree_not_inside_it(sample_dataset_dir):
    assert (sample_dataset_dir / sample.FINDINGS_FILE).is_file()
    assert not list((sample_dataset_dir / vocab.MURA_ROOT_NAME).rglob(sample.FINDINGS_FILE))


def test_every_abnormal_image_has_one_box_and_no_normal_image_has_one(sample_dataset_dir):
    findings = sample.read_findings(sample_dataset_dir)
    listed = []
    for folder in vocab.MURA_FOLDERS:
        csv = (
            sample_dataset_dir / vocab.MURA_ROOT_NAME / vocab.IMAGE_PATHS_CSV.format(folder=folder)
        )
        listed += csv.read_text().splitlines()
    abnormal = {path for path in listed if "_positive/" in path}
    assert abnormal and set(findings) == abnormal


def test_boxes_are_non_empty_and_inside_their_image(sample_dataset_dir):
    for path, (top, left, bottom, right) in sample.read_findings(sample_dataset_dir).items():
        with Image.open(sample_dataset_dir / path) as image:
            width, height = image.size
        assert 0 <= top < bottom <= height and 0 <= left < right <= width, path


def test_a_plate_box_holds_the_brightest_pixels(sample_dataset_dir):
    # Metal (250-255 before blur and noise) is brighter than any bone (at most 205), so the
    # brightest pixels of an image with a plate are the plate's.
    findings = sample.read_findings(sample_dataset_dir)
    plates = 0
    for study in sample.plan_studies(60, seed=0):
        if study.defect != "hardware":
            continue
        path = f"{study.relative_dir}image1.png"
        gray = np.asarray(Image.open(sample_dataset_dir / path).convert("L"))
        top, left, bottom, right = findings[path]
        inside = np.zeros(gray.shape, bool)
        inside[top:bottom, left:right] = True
        assert gray[~inside].max() < gray[inside].max(), path
        plates += 1
    assert plates > 5


def test_findings_json_maps_csv_paths_to_four_integers(sample_dataset_dir):
    raw = json.loads((sample_dataset_dir / sample.FINDINGS_FILE).read_text())
    for path, box in raw.items():
        assert path.startswith(f"{vocab.MURA_ROOT_NAME}/") and path.endswith(".png")
        assert len(box) == 4 and all(isinstance(value, int) for value in box)
