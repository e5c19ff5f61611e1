"""The job on gs:// paths, against a local GCS emulator (gcp-storage-emulator on
127.0.0.1): input and output both in a bucket, read and written through Beam FileSystems."""

from __future__ import annotations

import json
import os
import socket

import pytest

from bonify.vocabulary import MANIFEST_FILE, REJECTED_FILE

from .conftest import read_records, run_job

pytest.importorskip("gcp_storage_emulator", reason="needs gcp-storage-emulator (test extra)")
pytest.importorskip("apache_beam.io.gcp.gcsio", reason="needs apache-beam[gcp]")

BUCKET = "bonify-test"


@pytest.fixture(scope="module")
def emulator():
    """A GCS emulator on 127.0.0.1 with one bucket; STORAGE_EMULATOR_HOST points at it."""
    from gcp_storage_emulator.server import create_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from apache_beam.internal.gcp import auth

    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    # Offline there are no Google credentials; Beam would retry finding them for ~23 s
    # before falling back to an anonymous client (which is what the emulator takes).
    # Record "looked already, none found" in Beam's credentials cache instead.
    saved = (auth._Credentials._credentials_init, auth._Credentials._credentials)
    auth._Credentials._credentials_init, auth._Credentials._credentials = True, None
    try:
        yield f"gs://{BUCKET}"
    finally:
        auth._Credentials._credentials_init, auth._Credentials._credentials = saved
        server.stop()
        if previous is None:
            del os.environ["STORAGE_EMULATOR_HOST"]
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


def _upload(local_root, gcs_root):
    from apache_beam.io.filesystems import FileSystems

    for path in sorted(local_root.rglob("*")):
        if path.is_file():
            with FileSystems.create(
                f"{gcs_root}/{path.relative_to(local_root).as_posix()}"
            ) as handle:
                handle.write(path.read_bytes())


def _download(gcs_dir, local_dir):
    from apache_beam.io.filesystems import FileSystems

    local_dir.mkdir()
    for meta in FileSystems.match([f"{gcs_dir}/*"])[0].metadata_list:
        with FileSystems.open(meta.path) as handle:
            (local_dir / meta.path.rsplit("/", 1)[1]).write_bytes(handle.read())


def test_job_reads_and_writes_gcs(emulator, tmp_path):
    from bonify.sample import generate_sample

    mura = generate_sample(tmp_path / "local", patients=4, seed=1)
    with (mura / "valid_image_paths.csv").open("a") as csv:
        first = (mura / "valid_image_paths.csv").read_text().splitlines()[0]
        csv.write(first.rsplit("/", 1)[0] + "/image77.png\n")  # listed, not on disk
    _upload(tmp_path / "local", f"{emulator}/data")
    out = f"{emulator}/runs/out"
    argv = [
        "--input_dir",
        f"{emulator}/data",
        "--output_dir",
        out,
        "--image_size",
        32,
        "--num_shards",
        2,
        # In-process worker: the credentials shortcut of `emulator` does not reach worker
        # processes, which would each retry Google's credentials lookup for ~23 s.
        "--direct_num_workers",
        1,
    ]
    assert run_job(argv) == 0

    local = tmp_path / "downloaded"
    _download(out, local)
    manifest = json.loads((local / MANIFEST_FILE).read_text())
    rejected = [json.loads(line) for line in (local / REJECTED_FILE).read_text().splitlines()]
    assert [r["reason"] for r in rejected] == ["missing_file"]
    records = read_records(local)
    assert len(records) == manifest["written"] == manifest["input_images"] - 1
    assert sorted(p.name for p in local.glob("mura-*")) == sorted(
        name for split in manifest["splits"].values() for name in split["files"]
    )

    import tensorflow_datasets as tfds

    test_images = sum(1 for _ in tfds.builder_from_directory(str(local)).as_dataset(split="test"))
    assert test_images == manifest["splits"]["test"]["images"]

    # A rerun into the same gs:// folder is refused, then replaced with --overwrite.
    assert run_job(argv) == 2
    assert run_job([*argv, "--overwrite"]) == 0
