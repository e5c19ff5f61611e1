"""What `bonify-predict` reads from its PATH arguments, and what it answers on a bad command
line before TensorFlow is loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bonify.cli import BonifyError
from bonify.vocabulary import CLASS_NAMES
from serve.inputs import collect_images, overlay_file_name
from serve.predict import build_parser, check_arguments
from tests.support.trainer_runs import REPO_ROOT, stage_env

DICOM_PREAMBLE = b"\0" * 128 + b"DICM"


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _fake_model(folder, image_size=64, resize="pad", threshold=0.5):
    """A model file with a card beside it (argument checks never load the model itself)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "final.keras").write_bytes(b"not loaded by argument checks")
    card = {
        "input_spec": {
            "image_size": image_size,
            "resize": resize,
            "class_names": list(CLASS_NAMES),
        },
        "threshold": threshold,
    }
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder / "final.keras"


def test_folder_is_walked_recursively_for_images_and_extensionless_dicoms(tmp_path):
    scans = tmp_path / "scans"
    _touch(scans / "a" / "one.png")
    _touch(scans / "a" / "b" / "two.JPG")
    _touch(scans / "three.dcm")
    _touch(scans / "IM0001", DICOM_PREAMBLE + b"rest")
    _touch(scans / "notes.txt")
    _touch(scans / "README")
    _touch(scans / "a" / "._one.png")

    images = collect_images([str(scans)])

    assert sorted(image.relative for image in images) == [
        "scans/IM0001", "scans/a/b/two.JPG", "scans/a/one.png", "scans/three.dcm",
    ]  # fmt: skip


def test_image_paths_csv_is_read_relative_to_the_folder_holding_mura(tmp_path):
    relative = "MURA-v1.1/valid/XR_WRIST/patient00001/study1_positive/image1.png"
    _touch(tmp_path / relative)
    csv_file = tmp_path / "MURA-v1.1" / "valid_image_paths.csv"
    csv_file.write_text(relative + "\n\n")

    (image,) = collect_images([str(csv_file)])

    assert image.path == relative
    assert image.file == str(tmp_path / relative)


def test_a_file_named_twice_is_predicted_once(tmp_path):
    file = _touch(tmp_path / "x" / "image1.png")
    images = collect_images([str(file), str(tmp_path / "x"), str(file)])
    assert len(images) == 1


def test_overlays_are_pngs_named_after_their_image():
    assert overlay_file_name("study/image1.png") == "study/image1.png"
    assert overlay_file_name("study/scan.dcm") == "study/scan.dcm.png"


def test_help_says_what_it_does_first_and_ends_with_examples():
    text = build_parser().format_help()
    description = text.split("\n\n")[1]
    assert description.startswith("Run a trained bonify model on radiographs")
    tail = text.rstrip().splitlines()
    assert "Examples:" in text and tail[-1].strip().startswith("bonify-eval --predictions")


def test_missing_path_is_one_line(tmp_path):
    model = _fake_model(tmp_path / "model")
    with pytest.raises(BonifyError, match="nowhere: no such file or folder"):
        check_arguments(["--model", str(model), "--output", str(tmp_path / "p.csv"), "nowhere"])


def test_ensemble_of_models_with_different_inputs_is_refused(tmp_path):
    first = _fake_model(tmp_path / "a", image_size=64)
    second = _fake_model(tmp_path / "b", image_size=128)
    _touch(tmp_path / "in" / "image1.png")
    with pytest.raises(BonifyError, match="an ensemble needs models with the same input"):
        check_arguments(
            ["--model", str(first), "--model", str(second), "--output", str(tmp_path / "p.csv"),
             str(tmp_path / "in")]
        )  # fmt: skip


def test_model_without_card_needs_image_size_and_resize(tmp_path):
    model = _fake_model(tmp_path / "model")
    (tmp_path / "model" / "model_card.json").unlink()
    _touch(tmp_path / "in" / "image1.png")
    base = ["--model", str(model), "--output", str(tmp_path / "p.csv"), str(tmp_path / "in")]
    with pytest.raises(BonifyError, match="--image_size and --resize"):
        check_arguments(base)
    options = check_arguments([*base, "--image_size", "64", "--resize", "pad"])
    assert (options.spec.image_size, options.spec.resize, options.threshold) == (64, "pad", 0.5)


def test_card_threshold_is_the_operating_point(tmp_path):
    model = _fake_model(tmp_path / "model", threshold=0.3)
    _touch(tmp_path / "in" / "image1.png")
    options = check_arguments(
        [
            "--model",
            str(tmp_path / "model"),
            "--output",
            str(tmp_path / "p.csv"),
            str(tmp_path / "in"),
        ]
    )
    assert options.model_files == (str(model),)
    assert options.threshold == 0.3


def test_folder_without_images_is_one_line(tmp_path):
    model = _fake_model(tmp_path / "model")
    _touch(tmp_path / "in" / "notes.txt")
    with pytest.raises(BonifyError, match="no images under"):
        check_arguments(
            ["--model", str(model), "--output", str(tmp_path / "p.csv"), str(tmp_path / "in")]
        )


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--output", "OUT/p.csv", "IN"], "--model"),
        (["--model", "MODEL", "--output", "OUT/p.csv", "--batch_size", "0", "IN"], "--batch_size"),
        (["--model", "MODEL", "--output", "OUT/p.csv", "--tta", "rotate", "IN"], "--tta"),
        (["--model", "MODEL", "--output", "OUT/no/p.csv", "IN"], "does not exist"),
        (["--model", "OUT/missing.keras", "--output", "OUT/p.csv", "IN"], "missing.keras"),
    ],
)
def test_bad_flags_answer_in_one_line_before_tensorflow(tmp_path, arguments, message):
    model = _fake_model(tmp_path / "model")
    _touch(tmp_path / "in" / "image1.png")
    replace = {"MODEL": str(model), "IN": str(tmp_path / "in")}
    argv = [replace.get(a, a.replace("OUT", str(tmp_path))) for a in arguments]
    script = (
        "import sys\n"
        "from serve.predict import main\n"
        f"code = main({argv!r})\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=stage_env(), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bonify-predict: error: ")
    assert message in lines[0]
