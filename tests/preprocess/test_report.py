"""data_report.html: written beside the shards by every run, offline, and true to the data."""

from __future__ import annotations

import io
import json
import re
import shutil
from collections import Counter

import numpy as np
from PIL import Image

from beam_preprocess.inspect import main as inspect_main
from beam_preprocess.report import DATA_REPORT_FILE
from bonify.vocabulary import CLASS_NAMES, MANIFEST_FILE

from .conftest import read_records, report_samples, report_split_counts


def _page(output_dir) -> str:
    return (output_dir / DATA_REPORT_FILE).read_text()


def test_the_job_writes_the_report_with_each_splits_counts_from_the_manifest(sample_shards_dir):
    manifest = json.loads((sample_shards_dir / MANIFEST_FILE).read_text())
    expected = {
        split: {key: entry[key] for key in ("images", "studies", "patients", "num_shards")}
        for split, entry in manifest["splits"].items()
    }
    assert report_split_counts(_page(sample_shards_dir)) == expected


def test_sample_images_are_records_of_their_class_from_the_shards(sample_shards_dir):
    pixels_by_class: dict[str, list[np.ndarray]] = {}
    for record in read_records(sample_shards_dir):
        pixels = np.asarray(Image.open(io.BytesIO(record["image"])))
        pixels_by_class.setdefault(CLASS_NAMES[record["label"]], []).append(pixels)
    samples = report_samples(_page(sample_shards_dir))
    assert {name for name, _ in samples} == set(pixels_by_class)  # every class in the shards
    for name, pixels in samples:
        assert any(np.array_equal(pixels, record) for record in pixels_by_class[name]), name


def test_the_report_needs_no_network(sample_shards_dir):
    page = _page(sample_shards_dir)
    without_embedded_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "://" not in without_embedded_images
    assert "url(" not in without_embedded_images
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)


def test_the_report_shows_sizes_views_per_study_and_rejects(sample_shards_dir):
    page = _page(sample_shards_dir)
    for title in ("Original image sizes", "Views per study", "Rejects", "Classes and regions"):
        assert f"<h2>{title}" in page
    assert len(re.findall(r'<img class="chart"', page)) == 4


def test_inspect_report_rewrites_it(sample_shards_dir, tmp_path, capsys):
    copy = tmp_path / "out"
    shutil.copytree(sample_shards_dir, copy)
    (copy / DATA_REPORT_FILE).unlink()
    assert inspect_main(["--output_dir", str(copy), "--report"]) == 0
    assert f"data report: {copy}/{DATA_REPORT_FILE}" in capsys.readouterr().out
    assert report_split_counts(_page(copy)) == report_split_counts(_page(sample_shards_dir))
    assert Counter(n for n, _ in report_samples(_page(copy))) == Counter(
        n for n, _ in report_samples(_page(sample_shards_dir))
    )
