"""The bonify-app page (Streamlit's AppTest, in process, on a model the trainer wrote) and its
command line: what a person sees after an upload, per image and per study."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest

from bonify.vocabulary import CLASS_NAMES
from serve.app import (
    CONFIG_VARIABLE,
    DISCLAIMER,
    PAGE_SCRIPT,
    region_given_probability,
    streamlit_command,
)
from tests.support.trainer_runs import run_python

streamlit_testing = pytest.importorskip(
    "streamlit.testing.v1", reason="streamlit is not installed (pip install -e '.[test]')"
)


def _pngs(sample_dataset_dir, region: str, count: int) -> list[pathlib.Path]:
    """`count` sample PNGs of `region` (from train/ and valid/: the test sample is small)."""
    found = sorted((sample_dataset_dir / "MURA-v1.1").glob(f"*/XR_{region}/*/*/*.png"))[:count]
    assert len(found) == count, f"the sample has {len(found)} {region} images"
    return found


@pytest.fixture
def page(trained_job, monkeypatch):
    """The page as `bonify-app --model JOB` serves it, before any upload."""
    model = trained_job / "model" / "final.keras"
    monkeypatch.setenv(CONFIG_VARIABLE, json.dumps({"models": [str(model)]}))
    app = streamlit_testing.AppTest.from_file(PAGE_SCRIPT, default_timeout=300)
    app.run()
    assert not app.exception, app.exception
    return app


@pytest.fixture(scope="module")
def predictor(trained_job):
    from serve.core import Predictor

    return Predictor.load([str(trained_job)])


def _upload(app, paths, extra=()):
    files = [(path.name, path.read_bytes(), "image/png") for path in paths]
    app.file_uploader(key="uploads").set_value([*files, *extra])
    app.run()
    assert not app.exception, app.exception
    return app


def _metrics(app) -> list[tuple[str, str]]:
    return [(metric.label, metric.value) for metric in app.metric]


def _probabilities(**mass: float) -> dict[str, float]:
    """All 14 class probabilities by name, 0 except the given ones."""
    return {name: mass.get(name, 0.0) for name in CLASS_NAMES}


def test_region_given_probability_is_the_abnormal_share_of_that_region():
    probabilities = _probabilities(WRIST_Normal=0.1, WRIST_Abnormal=0.3, HAND_Normal=0.6)
    assert region_given_probability(probabilities, "WRIST") == pytest.approx(0.75)


def test_region_given_probability_without_mass_on_the_region_is_undecided():
    assert region_given_probability(_probabilities(WRIST_Normal=1.0), "HAND") == 0.5


def test_sidebar_shows_the_model_card_and_research_use_only(page, predictor):
    sidebar_text = " ".join(element.value for element in page.sidebar.markdown)
    assert "small_cnn" in sidebar_text and "Training data:" in sidebar_text
    assert "Validation" in sidebar_text and f"Threshold:** {predictor.threshold:g}" in sidebar_text
    assert page.sidebar.warning[0].value == DISCLAIMER


def test_each_uploaded_image_gets_region_status_confidence_and_top3(
    page, predictor, sample_dataset_dir
):
    images = _pngs(sample_dataset_dir, "WRIST", 2)
    _upload(page, images)
    expected = [predictor.answer(path.read_bytes(), path.name) for path in images]
    per_image = _metrics(page)[: 3 * len(images)]
    for index, answer in enumerate(expected):
        assert per_image[3 * index : 3 * index + 3] == [
            ("Region", answer.region),
            ("Status", answer.status),
            ("Confidence", f"{answer.confidence:.3f}"),
        ]
    tables = [table.value for table in page.table]
    assert [list(table.index) for table in tables] == [
        [name for name, _ in answer.top3] for answer in expected
    ]


def test_study_block_is_the_mean_abnormal_probability_at_the_card_threshold(
    page, predictor, sample_dataset_dir
):
    images = _pngs(sample_dataset_dir, "ELBOW", 3)
    _upload(page, images)
    study = predictor.study([predictor.answer(path.read_bytes(), path.name) for path in images])
    assert _metrics(page)[-3:] == [
        ("Study P(abnormal)", f"{study['p_abnormal']:.3f}"),
        ("Study verdict", study["verdict"]),
        ("Study region", study["region"]),
    ]


def test_known_body_part_turns_the_call_into_the_region_given_probability(
    page, predictor, sample_dataset_dir
):
    image = _pngs(sample_dataset_dir, "HAND", 1)[0]
    _upload(page, [image])
    page.selectbox(key="known_region").set_value("HAND").run()
    answer = predictor.answer(image.read_bytes(), image.name)
    p_given = region_given_probability(answer.probabilities, "HAND")
    status = "abnormal" if p_given >= predictor.threshold else "normal"
    confidence = p_given if status == "abnormal" else 1.0 - p_given
    assert _metrics(page) == [
        ("Region", "HAND"),
        ("Status", status),
        ("Confidence", f"{confidence:.3f}"),
        ("Study P(abnormal)", f"{p_given:.3f}"),
        ("Study verdict", status),
        ("Study region", "HAND"),
    ]


def test_bad_uploads_are_one_line_each_and_the_good_file_still_gets_its_answer(
    page, sample_dataset_dir
):
    good = _pngs(sample_dataset_dir, "FINGER", 1)[0]
    truncated = good.read_bytes()[:200]
    _upload(
        page,
        [good],
        extra=[
            ("notes.txt", b"this is not an image", "text/plain"),
            ("cut.png", truncated, "image/png"),
        ],
    )
    errors = [element.value for element in page.error]
    assert len(errors) == 2 and all("\n" not in error for error in errors)
    assert errors[0].startswith("notes.txt: ") and errors[1].startswith("cut.png: ")
    assert [label for label, _ in _metrics(page)].count("Region") == 1
    assert page.header[0].value == "Study (1 image; 2 unreadable left out)"


def test_the_model_is_loaded_once_per_process_not_per_upload(
    trained_job, sample_dataset_dir, monkeypatch
):
    from serve import app as app_module
    from serve.core import Predictor

    loads = []
    original = Predictor.load.__func__

    def counting_load(cls, *args, **kwargs):
        loads.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Predictor, "load", classmethod(counting_load))
    app_module._load_predictor.cache_clear()
    model = trained_job / "model" / "final.keras"
    monkeypatch.setenv(CONFIG_VARIABLE, json.dumps({"models": [str(model)]}))
    for image in _pngs(sample_dataset_dir, "SHOULDER", 2):  # two sessions, one upload each
        app = streamlit_testing.AppTest.from_file(PAGE_SCRIPT, default_timeout=300)
        app.run()
        _upload(app, [image])
    assert len(loads) == 1


def test_a_missing_model_is_one_line_before_tensorflow_or_streamlit_start(tmp_path):
    script = (
        "import sys\n"
        "from serve.app import main\n"
        f"code = main(['--model', {str(tmp_path / 'nothing')!r}])\n"
        "assert 'tensorflow' not in sys.modules and 'streamlit' not in sys.modules\n"
        "sys.exit(code)\n"
    )
    result = run_python("-c", script)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"bonify-app: error: {tmp_path / 'nothing'}: no such file or folder"
    ]


def test_help_ends_with_examples():
    result = run_python("-m", "serve.app", "--help")
    assert result.returncode == 0
    assert "Examples:" in result.stdout and "bonify-app --model demo_output/job" in result.stdout


def test_the_server_listens_where_asked_without_opening_a_browser():
    command = streamlit_command({"host": "127.0.0.1", "port": 8765})
    assert command[:5] == [sys.executable, "-m", "serve.app_server", "run", PAGE_SCRIPT]
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "8765"
    assert options["--server.headless"] == "true"
    assert options["--browser.gatherUsageStats"] == "false"


def test_region_given_probability_matches_the_class_vector(predictor, sample_dataset_dir):
    image = _pngs(sample_dataset_dir, "HUMERUS", 1)[0]
    answer = predictor.answer(image.read_bytes(), image.name)
    probs = np.asarray(answer.probs)
    index = 2 * 4  # HUMERUS is region 4: classes 8 (normal) and 9 (abnormal)
    expected = probs[index + 1] / (probs[index] + probs[index + 1])
    assert region_given_probability(answer.probabilities, "HUMERUS") == pytest.approx(expected)


def _dicom_bytes(pixels: np.ndarray, transfer_syntax=None) -> bytes:
    """An 8-bit MONOCHROME2 DICOM file of `pixels` (uncompressed unless transfer_syntax)."""
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.preamble = b"\0" * 128
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.astype(np.uint8).tobytes()
    if transfer_syntax:  # compressed: one encapsulated frame (its bytes are never decoded)
        from pydicom.encaps import encapsulate

        dataset.PixelData = encapsulate([b"\xff\xd8\xff" + bytes(64)])
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_dicom_without_extension_is_answered_and_an_unsupported_one_is_one_line(
    page, predictor, sample_dataset_dir
):
    from PIL import Image
    from pydicom.uid import JPEGLSLossless

    gray = np.asarray(Image.open(_pngs(sample_dataset_dir, "FOREARM", 1)[0]).convert("L"))
    readable = _dicom_bytes(gray)
    unsupported = _dicom_bytes(gray, transfer_syntax=JPEGLSLossless)
    page.file_uploader(key="uploads").set_value(
        [
            ("IM0001", readable, "application/octet-stream"),
            ("IM0002", unsupported, "application/octet-stream"),
        ]
    )
    page.run()
    assert not page.exception, page.exception
    expected = predictor.answer(readable, "IM0001")
    assert _metrics(page)[:2] == [("Region", expected.region), ("Status", expected.status)]
    (error,) = [element.value for element in page.error]
    assert error.startswith("IM0002: unsupported_dicom (") and "\n" not in error


def test_the_server_process_loads_the_model_before_streamlit_opens_its_port(monkeypatch):
    from streamlit.web import cli

    from serve import app_server

    events = []
    monkeypatch.setenv(CONFIG_VARIABLE, json.dumps({"models": ["m.keras"]}))
    monkeypatch.setattr(
        app_server,
        "loaded_predictor",
        lambda config: (
            events.append(("load", config["models"]))
            or type("Loaded", (), {"model_files": ("m.keras",)})()
        ),
    )
    monkeypatch.setattr(cli, "main", lambda: events.append(("streamlit", list(sys.argv))) or 0)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert app_server._run(["run", PAGE_SCRIPT, "--server.port", "8765"]) == 0
    assert events == [
        ("load", ["m.keras"]),
        ("streamlit", ["streamlit", "run", PAGE_SCRIPT, "--server.port", "8765"]),
    ]


@pytest.mark.slow
def test_a_model_that_will_not_load_stops_the_app_before_streamlit_listens(broken_model):
    broken = broken_model
    config = json.dumps({"models": [str(broken / "final.keras")]})
    result = run_python(
        "-m", "serve.app_server", "run", PAGE_SCRIPT, "--server.port", "1",
        env={CONFIG_VARIABLE: config},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert error.startswith(f"bonify-app: error: --model {broken / 'final.keras'}: cannot load")
    assert "Traceback" not in result.stderr and "Streamlit" not in result.stdout + result.stderr
