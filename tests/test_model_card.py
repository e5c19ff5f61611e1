"""The model card: finding a model, reading its card, the input spec a consumer must use,
and writing a card the trainer builds (TensorFlow-free throughout)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bonify.dataset import manifest_from_json
from bonify.model_card import (
    CARD_FILE,
    CARD_MARKDOWN_FILE,
    DEFAULT_TEMPERATURE,
    DEFAULT_THRESHOLD,
    InputSpec,
    ModelCardError,
    build_card,
    input_spec_for,
    load_card,
    resolve_model,
    set_operating_point,
    text_sha256,
    write_card,
)
from bonify.vocabulary import CLASS_NAMES, SCHEMA_VERSION

PHASE_ROWS = [
    {"name": "head", "epochs_completed": 2, "best_val_accuracy": 0.5, "best_val_loss": 1.25,
     "best_epoch": 2, "stopped_early": False, "learning_rate": 0.01, "finished": True},
    {"name": "all", "epochs_completed": 3, "best_val_accuracy": 0.75, "best_val_loss": 0.5,
     "best_val_study_kappa": 0.625,
     "best_epoch": 1, "stopped_early": True, "learning_rate": 0.001, "finished": True},
]  # fmt: skip


def _manifest(image_size=64, resize="pad"):
    counts = {name: 1 for name in CLASS_NAMES}
    split = {"images": 14, "studies": 7, "patients": 3, "class_counts": counts,
             "region_counts": {}, "num_shards": 1}  # fmt: skip
    raw = {"schema_version": SCHEMA_VERSION, "image_size": image_size, "resize": resize,
           "encoding": "png", "regions": ["ELBOW", "WRIST"], "input_dir": "raw/MURA-v1.1",
           "splits": {"train": split, "validation": split, "test": split}}  # fmt: skip
    return manifest_from_json(raw, "data/manifest.json")


def _job_with_card(tmp_path, image_size=64, resize="pad"):
    model_dir = tmp_path / "job" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "final.keras").write_bytes(b"weights")
    card = build_card(config={"data": {"image_size": image_size}}, config_text="data: {}\n",
                      manifest=_manifest(image_size, resize), phase_rows=PHASE_ROWS)  # fmt: skip
    write_card(str(model_dir), card)
    return tmp_path / "job"


def test_a_job_folder_a_model_folder_and_a_keras_file_resolve_to_the_same_model(tmp_path):
    job = _job_with_card(tmp_path)
    final = str(job / "model" / "final.keras")
    assert resolve_model(str(job)) == final
    assert resolve_model(str(job / "model")) == final
    assert resolve_model(final) == final


@pytest.mark.parametrize("name", ["absent.keras", "empty_folder", "no_such_folder"])
def test_a_path_without_a_model_is_an_error_naming_it(tmp_path, name):
    (tmp_path / "empty_folder").mkdir()
    path = str(tmp_path / name)
    with pytest.raises(ModelCardError, match=path):
        resolve_model(path)


def test_the_written_card_gives_the_training_input_spec_and_default_threshold(tmp_path):
    job = _job_with_card(tmp_path, image_size=96, resize="stretch")
    card = load_card(str(job / "model" / "final.keras"))
    assert card.input_spec == InputSpec(96, "stretch", tuple(CLASS_NAMES), SCHEMA_VERSION)
    assert card.threshold == DEFAULT_THRESHOLD == 0.5
    assert card.temperature == DEFAULT_TEMPERATURE == 1.0
    assert card.raw["operating_point"] is None
    assert card.path == str(job / "model" / CARD_FILE)


def test_the_card_records_config_hash_manifest_phases_use_and_limitations(tmp_path):
    job = _job_with_card(tmp_path)
    raw = json.loads((job / "model" / CARD_FILE).read_text())
    assert raw["config"]["sha256"] == text_sha256("data: {}\n")
    assert raw["training_data"]["manifest"] == "data/manifest.json"
    assert raw["training_data"]["splits"]["train"]["images"] == 14
    assert [(p["phase"], p["best_val_accuracy"], p["best_val_loss"], p["best_epoch"])
            for p in raw["validation"]] == [(1, 0.5, 1.25, 2), (2, 0.75, 0.5, 1)]  # fmt: skip
    assert "not a medical device" in raw["intended_use"]
    assert any("validation-split" in item for item in raw["limitations"])
    assert raw["input_spec"]["dtype"] == "uint8" and raw["input_spec"]["channels"] == 1


def test_the_markdown_card_is_written_beside_the_json_without_temp_files(tmp_path):
    job = _job_with_card(tmp_path)
    text = (job / "model" / CARD_MARKDOWN_FILE).read_text()
    assert "not a medical device" in text and "P(abnormal) >= 0.5" in text
    assert "| 1 | head | 2 | 0.5000 | 1.2500 | n/a | 2 |" in text  # a row from before issue 11
    assert "| 2 | all | 3 | 0.7500 | 0.5000 | 0.6250 | 1 |" in text
    assert sorted(p.name for p in (job / "model").iterdir()) == [
        "final.keras", CARD_FILE, CARD_MARKDOWN_FILE
    ]  # fmt: skip


def test_a_model_without_a_card_has_none():
    assert load_card("/nowhere/final.keras") is None


def test_a_card_that_is_not_json_is_an_error_naming_it(tmp_path):
    (tmp_path / CARD_FILE).write_text("{not json")
    with pytest.raises(ModelCardError, match=f"{tmp_path / CARD_FILE}: not a valid model card"):
        load_card(str(tmp_path / "final.keras"))


def test_explicit_values_equal_to_the_card_are_accepted(tmp_path):
    model = str(_job_with_card(tmp_path) / "model" / "final.keras")
    assert input_spec_for(model, 64, "pad").image_size == 64


@pytest.mark.parametrize(("image_size", "resize", "named"), [
    (128, None, "--image_size 128"), (None, "stretch", "--resize stretch"),
])  # fmt: skip
def test_explicit_values_that_disagree_with_the_card_name_both(tmp_path, image_size, resize, named):
    model = str(_job_with_card(tmp_path) / "model" / "final.keras")
    with pytest.raises(ModelCardError) as error:
        input_spec_for(model, image_size, resize)
    message = str(error.value)
    assert named in message and CARD_FILE in message and len(message.splitlines()) == 1
    assert ("image_size 64" if image_size else "resize pad") in message


@pytest.mark.parametrize(("image_size", "resize"), [(None, None), (64, None), (None, "pad")])
def test_a_model_without_a_card_needs_both_image_size_and_resize(tmp_path, image_size, resize):
    with pytest.raises(ModelCardError, match="give its input with --image_size and --resize"):
        input_spec_for(str(tmp_path / "final.keras"), image_size, resize)


def test_a_model_without_a_card_takes_the_explicit_values(tmp_path):
    spec = input_spec_for(str(tmp_path / "final.keras"), 320, "stretch")
    assert spec == InputSpec(320, "stretch", tuple(CLASS_NAMES), SCHEMA_VERSION)


def test_reading_cards_never_imports_tensorflow(tmp_path):
    _job_with_card(tmp_path)
    code = (
        "import sys\nfrom bonify.model_card import input_spec_for, resolve_model\n"
        f"print(input_spec_for(resolve_model({str(tmp_path / 'job')!r})).image_size)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["64", "False"]


FITTED = {
    "threshold": 0.42, "temperature": 1.7, "kappa_at_threshold": 0.61,
    "youden_threshold": 0.38, "youden_j": 0.55, "aggregation": "mean", "ece_before": 0.12,
    "ece_after": 0.03, "source": "bonify-eval",
    "fitted_on": {"split": "validation", "data_dir": "data", "n_studies": 9, "n_images": 20},
}  # fmt: skip


def test_set_operating_point_rewrites_the_card_and_its_markdown(tmp_path):
    model = str(_job_with_card(tmp_path) / "model" / "final.keras")
    path = set_operating_point(model, FITTED)
    assert path == str(tmp_path / "job" / "model" / CARD_FILE)
    card = load_card(model)
    assert (card.threshold, card.temperature) == (0.42, 1.7)
    assert card.raw["threshold_source"] == "fitted"
    assert card.raw["operating_point"] == FITTED
    assert card.raw["validation"][1]["best_val_accuracy"] == 0.75  # the rest is kept
    text = (tmp_path / "job" / "model" / CARD_MARKDOWN_FILE).read_text()
    assert "P(abnormal) >= 0.42 (fitted)" in text and "log(output) / 1.7" in text
    assert "fitted by bonify-eval on split validation" in text and "0.1200 -> 0.0300" in text
    assert sorted(p.name for p in (tmp_path / "job" / "model").iterdir()) == [
        "final.keras", CARD_FILE, CARD_MARKDOWN_FILE
    ]  # fmt: skip


def test_set_operating_point_without_a_card_creates_nothing(tmp_path):
    (tmp_path / "final.keras").write_bytes(b"weights")
    with pytest.raises(ModelCardError, match="no model_card.json beside it"):
        set_operating_point(str(tmp_path / "final.keras"), FITTED)
    assert [p.name for p in tmp_path.iterdir()] == ["final.keras"]


@pytest.mark.parametrize(("key", "value"), [("threshold", 1.5), ("temperature", 0.0),
                                            ("temperature", -2.0), ("temperature", "hot")])  # fmt: skip
def test_set_operating_point_refuses_values_no_card_can_hold(tmp_path, key, value):
    model = str(_job_with_card(tmp_path) / "model" / "final.keras")
    before = (tmp_path / "job" / "model" / CARD_FILE).read_text()
    with pytest.raises(ModelCardError, match=f"key '{key}'"):
        set_operating_point(model, {**FITTED, key: value})
    assert (tmp_path / "job" / "model" / CARD_FILE).read_text() == before


def test_a_card_without_temperature_reads_as_one(tmp_path):
    job = _job_with_card(tmp_path)
    raw = json.loads((job / "model" / CARD_FILE).read_text())
    del raw["temperature"], raw["operating_point"]  # a card from before issue 11
    (job / "model" / CARD_FILE).write_text(json.dumps(raw))
    assert load_card(str(job / "model" / "final.keras")).temperature == 1.0


def test_set_operating_point_on_a_card_with_only_its_input_spec(tmp_path):
    (tmp_path / "final.keras").write_bytes(b"weights")
    spec = {"image_size": 64, "resize": "pad", "class_names": list(CLASS_NAMES)}
    (tmp_path / CARD_FILE).write_text(json.dumps({"input_spec": spec}))
    set_operating_point(str(tmp_path / "final.keras"), FITTED)
    assert load_card(str(tmp_path / "final.keras")).threshold == 0.42
    text = (tmp_path / CARD_MARKDOWN_FILE).read_text()
    assert "P(abnormal) >= 0.42 (fitted)" in text and "## Training data" not in text
