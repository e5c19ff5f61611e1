"""Helpers for the Beam job's tests: read written shards back, copy and edit MURA trees."""

from __future__ import annotations

import base64
import io
import pathlib
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from bonify.vocabulary import RECORD_FEATURE_TYPES, SPLITS, shard_pattern

TF_NOISE = ("I0000", "W0000", "E0000", "WARNING: All log messages", "cuda", "oneDNN")


def read_records(output_dir: pathlib.Path, split: str | None = None) -> list[dict]:
    """Every record of one split (or all splits) as plain Python values, read with the
    vocabulary's feature spec exactly as the trainer reads them; adds "split" and "shard"."""
    import tensorflow as tf

    from bonify.vocabulary import tf_feature_spec

    records = []
    for split_name in [split] if split else SPLITS:
        for shard in sorted(output_dir.glob(shard_pattern(split_name))):
            for serialized in tf.data.TFRecordDataset(str(shard)):
                parsed = tf.io.parse_single_example(serialized, tf_feature_spec())
                values = {}
                for key, kind in RECORD_FEATURE_TYPES.items():
                    value = parsed[key].numpy()
                    values[key] = (
                        value
                        if kind == "bytes" and key == "image"
                        else (value.decode() if kind == "bytes" else int(value))
                    )
                values["split"] = split_name
                values["shard"] = shard.name
                records.append(values)
    return records


def csv_image_rows(mura_dir: pathlib.Path) -> list[str]:
    """Non-blank lines of both *_image_paths.csv."""
    rows = []
    for folder in ("train", "valid"):
        text = (mura_dir / f"{folder}_image_paths.csv").read_text()
        rows.extend(line.strip() for line in text.splitlines() if line.strip())
    return rows


def run_job(argv: list[str]) -> int:
    """The Beam job's public entry point, in-process."""
    from beam_preprocess.__main__ import main

    return main([str(arg) for arg in argv])


def shard_bytes(output_dir: pathlib.Path) -> dict[str, bytes]:
    """Shard file name -> content, every split."""
    return {
        path.name: path.read_bytes() for path in sorted(output_dir.glob("mura-*.tfrecord-*-of-*"))
    }


def one_line(text: str) -> list[str]:
    """Lines of stderr that are not TensorFlow/absl start-up noise."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith(TF_NOISE)]


@pytest.fixture
def copied_dataset(sample_dataset_dir, tmp_path) -> pathlib.Path:
    """A private copy of the session's generated tree (folder containing MURA-v1.1/)."""
    target = tmp_path / "input"
    shutil.copytree(sample_dataset_dir, target)
    return target


#: The repository root: subprocesses run from here (the project is not necessarily installed).
REPO_ROOT_FOR_SUBPROCESS = pathlib.Path(__file__).resolve().parents[2]


# --- reading data_report.html back ------------------------------------------------------


def report_split_counts(page: str) -> dict[str, dict[str, int]]:
    """split -> {"images", "studies", "patients", "num_shards"} from the report's split table."""
    counts: dict[str, dict[str, int]] = {}
    for split, row in re.findall(r'<tr data-split="(\w+)">(.*?)</tr>', page, re.S):
        cells = re.findall(r'data-key="(\w+)">([\d,]+)<', row)
        counts[split] = {key: int(value.replace(",", "")) for key, value in cells}
    return counts


def report_samples(page: str) -> list[tuple[str, np.ndarray]]:
    """(class name, pixels) of every sample image embedded in the report."""
    samples = []
    for name, data in re.findall(
        r'<img class="sample" data-class="(\w+)"[^>]*src="data:image/png;base64,([^"]+)"', page
    ):
        samples.append((name, np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))))
    return samples


def report_rejects(page: str) -> dict[tuple[str, str], int]:
    """(kind, reason) -> count from the report's rejects table."""
    rows = re.findall(
        r'<tr data-kind="([\w ]+)" data-reason="([^"]+)">.*?<td class="number">([\d,]+)</td>', page
    )
    return {(kind, reason): int(count.replace(",", "")) for kind, reason, count in rows}
