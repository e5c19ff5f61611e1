"""Bad input gives one line `bonify-train: error: ...` and exit code 2, never a traceback."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import pytest

from trainer.__main__ import main

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = [
    "--set", "model.backbone=small_cnn", "--set", "model.weights=none",
    "--set", "model.small_cnn_width=4", "--set", "data.image_size=64",
    "--set", "training.global_batch_size=8", "--set", "training.steps_per_epoch=2",
    "--set", "training.validation_steps=1", "--set", "distribute.mixed_precision=off",
]  # fmt: skip


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("bonify-train: error: ")
    return err[0]


def test_missing_data_dir(tmp_path, capsys):
    assert main(["--data_dir", str(tmp_path / "nope"), "--job_dir", str(tmp_path / "j")]) == 2
    assert "no such directory" in _error_line(capsys)


def test_empty_data_dir(tmp_path, capsys):
    assert main(["--data_dir", str(tmp_path), "--job_dir", str(tmp_path / "j")]) == 2
    assert "manifest.json" in _error_line(capsys)


def test_image_size_different_from_manifest(sample_shards_dir, tmp_path, capsys):
    argv = ["--data_dir", str(sample_shards_dir), "--job_dir", str(tmp_path / "j"), *TINY]
    assert main([*argv, "--set", "data.image_size=32"]) == 2
    line = _error_line(capsys)
    assert "data.image_size" in line and "64" in line


def test_split_without_shards(sample_shards_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(sample_shards_dir, data)
    for shard in data.glob("mura-validation.tfrecord-*"):
        shard.unlink()
    assert main(["--data_dir", str(data), "--job_dir", str(tmp_path / "j"), *TINY]) == 2
    assert "'validation' has no shards" in _error_line(capsys)


def test_unknown_config_key(sample_shards_dir, tmp_path, capsys):
    argv = ["--data_dir", str(sample_shards_dir), "--job_dir", str(tmp_path / "j")]
    assert main([*argv, "--set", "training.epochz=3"]) == 2
    assert "training.epochz" in _error_line(capsys)


def test_unreadable_weights_file(sample_shards_dir, tmp_path, capsys):
    argv = ["--data_dir", str(sample_shards_dir), "--job_dir", str(tmp_path / "j"), *TINY]
    assert main([*argv, "--set", f"model.weights={tmp_path / 'missing.weights.h5'}"]) == 2
    assert "missing.weights.h5" in _error_line(capsys)


def _break_checksums(shard: pathlib.Path) -> None:
    raw = bytearray(shard.read_bytes())
    for index in range(40, min(len(raw), 400)):
        raw[index] ^= 0x5A
    shard.write_bytes(bytes(raw))


def _break_an_image(shard: pathlib.Path) -> None:
    """Well-framed records, but the second one's image bytes are no PNG."""
    import tensorflow as tf

    from bonify.vocabulary import RecordKeys

    records = [bytes(record.numpy()) for record in tf.data.TFRecordDataset(str(shard))]
    example = tf.train.Example.FromString(records[1])
    example.features.feature[RecordKeys.IMAGE].bytes_list.value[:] = [b"not a png at all"]
    records[1] = example.SerializeToString()
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in records:
            writer.write(record)


@pytest.mark.parametrize(
    "corrupt, problem",
    [(_break_checksums, "cannot be read"), (_break_an_image, "record 2 does not decode")],
)
def test_corrupt_shard_is_named(sample_shards_dir, tmp_path, corrupt, problem):
    data = tmp_path / "data"
    shutil.copytree(sample_shards_dir, data)
    victim = sorted(data.glob("mura-train.tfrecord-*"))[3]
    corrupt(victim)
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["image_size"] == 64
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "--data_dir", str(data),
         "--job_dir", str(tmp_path / "j"), *TINY, "--set", "training.steps_per_epoch=30"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bonify-train: error: corrupt shard") and victim.name in last
    assert problem in last
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag", ["--strategy=bogus", "--mixed_precision=fp8"])
def test_bad_flag_values_are_rejected(flag, tmp_path, capsys):
    assert main(["--data_dir", str(tmp_path), "--job_dir", str(tmp_path / "j"), flag]) == 2
    assert flag.split("=")[0] in _error_line(capsys)


def _main_in_fresh_process(argv: list[str]) -> tuple[int, str, bool]:
    """(exit code, stderr, whether TensorFlow got imported) of `trainer.__main__.main(argv)`
    in a new interpreter (this one has imported TensorFlow long ago)."""
    code = (
        "import json, sys\n"
        "from trainer.__main__ import main\n"
        f"exit_code = main({argv!r})\n"
        "print(json.dumps([exit_code, 'tensorflow' in sys.modules]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    exit_code, imported = json.loads(result.stdout.strip().splitlines()[-1])
    return exit_code, result.stderr, imported


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bonify-train: error: "), lines
    return lines[0]


def test_missing_data_dir_is_answered_before_tensorflow_is_imported(tmp_path):
    argv = ["--data_dir", str(tmp_path / "nope"), "--job_dir", str(tmp_path / "j")]
    exit_code, stderr, imported = _main_in_fresh_process(argv)
    assert exit_code == 2
    assert "no such directory" in _one_error_line(stderr)
    assert not imported


def test_unknown_config_key_is_answered_before_tensorflow_is_imported(sample_shards_dir, tmp_path):
    argv = ["--data_dir", str(sample_shards_dir), "--job_dir", str(tmp_path / "j")]
    exit_code, stderr, imported = _main_in_fresh_process([*argv, "--set", "training.epochz=3"])
    assert exit_code == 2
    assert "training.epochz" in _one_error_line(stderr)
    assert not imported


def test_missing_weights_file_is_answered_before_tensorflow_is_imported(
    sample_shards_dir, tmp_path
):
    argv = ["--data_dir", str(sample_shards_dir), "--job_dir", str(tmp_path / "j"), *TINY]
    weights = tmp_path / "missing.weights.h5"
    exit_code, stderr, imported = _main_in_fresh_process(
        [*argv, "--set", f"model.weights={weights}"]
    )
    assert exit_code == 2
    assert f"{weights}: no such file" in _one_error_line(stderr)
    assert not imported


def test_finished_job_is_answered_before_tensorflow_is_imported(sample_shards_dir, tmp_path):
    job = tmp_path / "j"
    job.mkdir()
    row = {"name": "one", "epochs_completed": 2, "best_val_accuracy": 0.5, "stopped_early": False}
    (job / "training_state.json").write_text(json.dumps({"completed": True, "phases": [row]}))
    code = (
        "import sys\n"
        "from trainer.__main__ import main\n"
        f"assert main(['--data_dir', {str(sample_shards_dir)!r}, '--job_dir', {str(job)!r}, "
        f"*{TINY!r}]) == 0\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    first, *rest = result.stdout.strip().splitlines()
    assert first == f"{job} is already finished (training_state.json says completed): " \
        "nothing to train; use a new --job_dir to train again"  # fmt: skip
    assert "Training summary" in rest


def test_corrupt_weights_file(sample_shards_dir, tmp_path, capsys):
    weights = tmp_path / "backbone.weights.h5"
    weights.write_bytes(b"not an HDF5 file at all" * 10)
    argv = ["--data_dir", str(sample_shards_dir), "--job_dir", str(tmp_path / "j"), *TINY]
    assert main([*argv, "--set", f"model.weights={weights}"]) == 2
    line = _error_line(capsys)
    assert "backbone.weights.h5" in line and "cannot load" in line


def test_imagenet_weights_that_cannot_be_fetched_are_one_line(sample_shards_dir, tmp_path):
    """An offline node: the download of the ImageNet weights fails (here: every HTTPS request
    goes to a closed loopback proxy port, so the test never touches the network)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=str(REPO_ROOT),
        KERAS_HOME=str(tmp_path / "keras"),  # an empty cache
        HTTPS_PROXY=f"http://127.0.0.1:{closed_port}",
        https_proxy=f"http://127.0.0.1:{closed_port}",
    )
    # TINY, then a DenseNet with ImageNet weights (the later --set of a key wins).
    tiny_densenet = [
        *TINY,
        "--set",
        "model.backbone=densenet121",
        "--set",
        "model.weights=imagenet",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "--data_dir", str(sample_shards_dir),
         "--job_dir", str(tmp_path / "j"), *tiny_densenet],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "bonify-train: error: model.weights imagenet: cannot get the densenet121"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "counts, message",
    [
        (None, "missing"),
        ({"ELBOW_Normal": 1, "KNEE_Normal": 3}, "unknown class names"),
        ({"ELBOW_Normal": 1}, "do not add up"),
    ],
)
def test_class_counts_that_cannot_weight_the_loss(sample_shards_dir, tmp_path, capsys, counts,
                                                  message):  # fmt: skip
    data = tmp_path / "data"
    shutil.copytree(sample_shards_dir, data)
    manifest = json.loads((data / "manifest.json").read_text())
    if counts is None:
        del manifest["splits"]["train"]["class_counts"]
    else:
        manifest["splits"]["train"]["class_counts"] = counts
    (data / "manifest.json").write_text(json.dumps(manifest))
    argv = ["--data_dir", str(data), "--job_dir", str(tmp_path / "j"), *TINY]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert "splits.train.class_counts" in line and message in line


@pytest.mark.parametrize("tf_config", ["[1, 2]", '{"cluster": 3}', "{not json"])
def test_malformed_tf_config_is_one_line(tf_config, sample_shards_dir, tmp_path, capsys,
                                         monkeypatch):  # fmt: skip
    monkeypatch.setenv("TF_CONFIG", tf_config)
    argv = ["--data_dir", str(sample_shards_dir), "--job_dir", str(tmp_path / "j"), *TINY]
    assert main(argv) == 2
    assert "TF_CONFIG" in _error_line(capsys)


def test_manifest_that_is_not_a_manifest(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"image_size": "big", "splits": {}}))
    assert main(["--data_dir", str(data), "--job_dir", str(tmp_path / "j")]) == 2
    assert "manifest.json: not a valid manifest" in _error_line(capsys)
