"""bonify-serve: the HTTP API's routes, errors and batching (FastAPI's TestClient), and a real
uvicorn server under a bounded load."""

from __future__ import annotations

import base64
import io
import json
import os
import pathlib
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from bonify.vocabulary import CLASS_NAMES
from serve.api import ServeOptions, create_app, main
from serve.loadtest import free_port

REPO = pathlib.Path(__file__).resolve().parents[2]


def _pngs(sample_dataset_dir, count: int) -> list:
    return sorted((sample_dataset_dir / "MURA-v1.1" / "valid").rglob("*.png"))[:count]


@pytest.fixture(scope="module")
def predictor(trained_job):
    from serve.core import Predictor

    return Predictor.load([str(trained_job)], batch_size=8)


@pytest.fixture(scope="module")
def client(trained_job, predictor):
    from fastapi.testclient import TestClient

    options = ServeOptions(models=(str(trained_job),), max_upload_mb=1.0, batch_size=8)
    with TestClient(create_app(options, predictor), raise_server_exceptions=False) as test_client:
        yield test_client


def test_healthz_is_ok_once_the_model_is_loaded(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_healthz_is_503_while_the_model_loads(trained_job):
    from fastapi.testclient import TestClient

    from serve.api import ServeState

    app = create_app(ServeOptions(models=(str(trained_job),)), predictor=object())
    state: ServeState = app.state.serve
    state.predictor = None  # what the routes see before the background load finishes
    response = TestClient(app).get("/healthz")
    assert response.status_code == 503 and "loading" in response.json()["error"]


def test_model_route_returns_the_model_card(client, trained_job):
    card = json.loads((trained_job / "model" / "model_card.json").read_text())
    response = client.get("/model")
    assert response.status_code == 200
    assert response.json() == card


def test_predict_one_file_gives_the_14_probabilities_region_status_and_top3(
    client, sample_dataset_dir
):
    png = _pngs(sample_dataset_dir, 1)[0]
    response = client.post("/predict", files=[("files", (png.name, png.read_bytes()))])
    assert response.status_code == 200
    body = response.json()
    (image,) = body["images"]
    assert image["file"] == png.name
    assert list(image["probabilities"]) == list(CLASS_NAMES)
    assert image["status"] in ("normal", "abnormal") and image["region"]
    assert len(image["top3"]) == 3 and "gradcam_png" not in image
    assert "study" not in body and body["rejected"] == []


def test_probabilities_equal_bonify_predicts_for_the_same_files(
    client, trained_job, sample_dataset_dir, tmp_path
):
    from bonify.predictions import PROB_COLUMNS
    from serve.predict import main as predict_main

    pngs = _pngs(sample_dataset_dir, 3)
    output = tmp_path / "preds.csv"
    assert (
        predict_main(["--model", str(trained_job), "--output", str(output), *map(str, pngs)]) == 0
    )
    table = pd.read_csv(output).set_index("image_path")
    for png in pngs:
        response = client.post("/predict", files=[("files", (png.name, png.read_bytes()))])
        served = response.json()["images"][0]["probabilities"]
        np.testing.assert_allclose(
            [served[name] for name in CLASS_NAMES],
            table.loc[str(png), list(PROB_COLUMNS)].to_numpy(dtype=float),
            atol=1e-5,
        )


def test_several_files_get_the_study_block(client, sample_dataset_dir):
    pngs = _pngs(sample_dataset_dir, 3)
    response = client.post("/predict", files=[("files", (p.name, p.read_bytes())) for p in pngs])
    body = response.json()
    assert [image["file"] for image in body["images"]] == [p.name for p in pngs]
    mean = np.mean([image["p_abnormal"] for image in body["images"]])
    assert body["study"]["images"] == 3 and body["study"]["left_out"] == 0
    assert body["study"]["p_abnormal"] == pytest.approx(mean)
    assert body["study"]["verdict"] in ("normal", "abnormal")


def test_raw_body_upload_is_answered_like_multipart(client, sample_dataset_dir):
    png = _pngs(sample_dataset_dir, 1)[0]
    raw = client.post(
        "/predict?filename=x.png", content=png.read_bytes(), headers={"content-type": "image/png"}
    ).json()["images"][0]
    form = client.post("/predict", files=[("files", ("x.png", png.read_bytes()))]).json()
    assert raw["file"] == "x.png"
    assert raw["probabilities"] == pytest.approx(form["images"][0]["probabilities"], abs=1e-6)


def test_gradcam_true_adds_the_overlay_as_base64_png(client, sample_dataset_dir):
    from PIL import Image

    png = _pngs(sample_dataset_dir, 1)[0]
    response = client.post("/predict?gradcam=true", files=[("files", (png.name, png.read_bytes()))])
    overlay = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]["gradcam_png"])))
    assert overlay.format == "PNG"
    assert overlay.size == Image.open(png).size


def test_the_readable_files_are_answered_and_the_bad_ones_listed_as_rejected(
    client, sample_dataset_dir
):
    first, second = (p.read_bytes() for p in _pngs(sample_dataset_dir, 2))
    response = client.post(
        "/predict",
        files=[
            ("files", ("a.png", first)),
            ("files", ("cut.png", first[: len(first) // 2])),
            ("files", ("b.png", second)),
        ],
    )
    assert response.status_code == 200
    body = response.json()
    assert [image["file"] for image in body["images"]] == ["a.png", "b.png"]
    (rejected,) = body["rejected"]
    assert rejected["file"] == "cut.png" and rejected["reason"] == "truncated_image"
    assert rejected["detail"]
    study = body["study"]
    assert study["images"] == 2 and study["left_out"] == 1
    mean = np.mean([image["p_abnormal"] for image in body["images"]])
    assert study["p_abnormal"] == pytest.approx(mean)


def test_one_good_file_in_two_still_gets_a_study_block_saying_one_is_left_out(
    client, sample_dataset_dir
):
    good = _pngs(sample_dataset_dir, 1)[0].read_bytes()
    files = [("files", ("good.png", good)), ("files", ("notes.txt", b"not an x-ray"))]
    body = client.post("/predict", files=files).json()
    assert body["study"]["images"] == 1 and body["study"]["left_out"] == 1
    assert body["study"]["p_abnormal"] == pytest.approx(body["images"][0]["p_abnormal"])


def test_a_request_without_any_readable_file_is_422_naming_each(client, sample_dataset_dir):
    good = _pngs(sample_dataset_dir, 1)[0].read_bytes()
    files = [("files", ("cut.png", good[:300])), ("files", ("notes.txt", b"not an x-ray"))]
    response = client.post("/predict", files=files)
    assert response.status_code == 422
    body = response.json()
    assert body["error"].startswith("no readable image in 2 files: cut.png: truncated_image (")
    assert "; notes.txt: not_an_image (" in body["error"]
    assert [item["file"] for item in body["rejected"]] == ["cut.png", "notes.txt"]


def test_text_that_is_not_an_image_is_4xx_json(client):
    response = client.post("/predict?filename=notes.txt", content=b"hello, not an x-ray")
    assert response.status_code == 422
    assert response.json()["error"].startswith("notes.txt: not_an_image (")


def test_an_empty_request_is_400_saying_what_to_send(client):
    response = client.post("/predict")
    assert response.status_code == 400
    assert "form field 'files'" in response.json()["error"]


def test_a_form_without_files_field_is_400(client):
    response = client.post("/predict", files=[("image", ("a.png", b"x"))])
    assert response.status_code == 400
    assert "fields sent: image" in response.json()["error"]


def test_an_upload_over_the_limit_is_413(client):
    response = client.post("/predict", files=[("files", ("big.png", b"\0" * (1024 * 1024 + 10)))])
    assert response.status_code == 413
    assert "--max_upload_mb" in response.json()["error"]


def test_a_bad_gradcam_value_is_400(client, sample_dataset_dir):
    png = _pngs(sample_dataset_dir, 1)[0]
    response = client.post(
        "/predict?gradcam=maybe", files=[("files", (png.name, png.read_bytes()))]
    )
    assert response.status_code == 400 and "gradcam" in response.json()["error"]


def test_unknown_routes_and_methods_are_json_errors(client):
    missing = client.get("/nothing")
    wrong_method = client.get("/predict")
    assert missing.status_code == 404 and "error" in missing.json()
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_an_internal_failure_is_500_json_without_a_traceback(trained_job, predictor, monkeypatch):
    from fastapi.testclient import TestClient

    app = create_app(ServeOptions(models=(str(trained_job),)), predictor)
    monkeypatch.setattr(predictor, "decode", lambda data, name: 1 / 0)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.post("/predict", content=b"x")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (ZeroDivisionError); see server log"}
    assert "Traceback" not in response.text


def test_concurrent_requests_share_model_calls(trained_job, predictor, sample_dataset_dir):
    from fastapi.testclient import TestClient

    options = ServeOptions(models=(str(trained_job),), batch_size=8, max_wait_ms=200)
    app = create_app(options, predictor)
    data = _pngs(sample_dataset_dir, 1)[0].read_bytes()
    with TestClient(app) as test_client:
        results = []

        def post():
            results.append(test_client.post("/predict", content=data).status_code)

        threads = [threading.Thread(target=post) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batches = app.state.serve.batcher.batches
    assert results == [200] * 8
    assert batches < 8


# ---- the command line -------------------------------------------------------------------


def test_help_ends_with_examples():
    from serve.api import build_parser

    text = build_parser().format_help()
    examples = text.split("Examples:", 1)[1].splitlines()
    assert sum(line.strip().startswith("bonify-serve --model") for line in examples) >= 2
    assert any("--token_file" in line and "--host 0.0.0.0" in line for line in examples)


def test_a_missing_model_is_one_line_before_tensorflow(tmp_path):
    code = (
        "import sys\n"
        "from serve.api import main\n"
        f"code = main(['--model', {str(tmp_path / 'none')!r}])\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"bonify-serve: error: {tmp_path / 'none'}: no such file or folder"
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "0"], "--port must be 1..65535"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--max_upload_mb", "0"], "--max_upload_mb must be positive"),
    ],
)
def test_bad_flags_are_one_line_errors(trained_job, capsys, flags, message):
    assert main(["--model", str(trained_job), *flags]) == 2
    assert message in capsys.readouterr().err


# ---- access with a token ----------------------------------------------------------------

TOKEN = "correct-horse-battery-staple-0123456789"


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("token") / "api.token"
    path.write_text(TOKEN + "\n")  # a trailing newline, as `echo` or an editor leaves it
    return path


@pytest.fixture(scope="module")
def guarded(trained_job, predictor, token_file):
    from fastapi.testclient import TestClient

    options = ServeOptions(models=(str(trained_job),), token_file=str(token_file))
    with TestClient(create_app(options, predictor), raise_server_exceptions=False) as test_client:
        yield test_client


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_without_a_token_every_route_but_healthz_is_401_json(guarded):
    for method, path in [("GET", "/model"), ("POST", "/predict"), ("GET", "/docs"), ("GET", "/x")]:
        response = guarded.request(method, path)
        assert response.status_code == 401, path
        assert response.json()["error"].startswith("missing token")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert guarded.get("/healthz").status_code == 200


def test_a_wrong_token_is_401_and_not_echoed(guarded):
    wrong = guarded.get("/model", headers=_bearer("wrong-token-0123456789"))
    assert wrong.status_code == 401 and wrong.json() == {"error": "wrong token"}
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    no_scheme = guarded.get("/model", headers={"Authorization": TOKEN})
    assert no_scheme.status_code == 401 and no_scheme.json()["error"].startswith("missing token")
    assert TOKEN not in no_scheme.text


def test_the_right_token_is_200_and_the_model_route_does_not_show_it(guarded, sample_dataset_dir):
    png = _pngs(sample_dataset_dir, 1)[0]
    card = guarded.get("/model", headers=_bearer(TOKEN))
    answer = guarded.post(
        "/predict", files=[("files", (png.name, png.read_bytes()))], headers=_bearer(TOKEN)
    )
    assert card.status_code == 200 and TOKEN not in card.text
    assert answer.status_code == 200 and len(answer.json()["images"]) == 1
    scheme_case = guarded.get("/model", headers={"Authorization": f"bearer {TOKEN}"})
    assert scheme_case.status_code == 200


def test_the_token_can_come_from_the_environment(trained_job, predictor, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("BONIFY_API_TOKEN", TOKEN)
    app = create_app(ServeOptions(models=(str(trained_job),)), predictor)
    with TestClient(app) as test_client:
        assert test_client.get("/model").status_code == 401
        assert test_client.get("/model", headers=_bearer(TOKEN)).status_code == 200


def _write(path: pathlib.Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: str(tmp / "absent"), "absent: no such file"),
        (lambda tmp: _write(tmp / "empty", b"\n"), "empty: the token is empty"),
        (lambda tmp: str(tmp), "is a folder, not a token file"),
        (lambda tmp: _write(tmp / "latin", b"\xe9t\xe9" * 10), "cannot be read (not ASCII text)"),
        (lambda tmp: _write(tmp / "short", b"abc123"), "shorter than 16 characters"),
        (lambda tmp: _write(tmp / "spaced", b"two words " * 3), "printable ASCII without"),
    ],
)
def test_a_bad_token_file_is_one_line(trained_job, tmp_path, capsys, monkeypatch, make, message):
    monkeypatch.delenv("BONIFY_API_TOKEN", raising=False)
    assert main(["--model", str(trained_job), "--token_file", make(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bonify-serve: error: --token_file ") and message in line


def test_a_bad_token_file_stops_before_tensorflow(trained_job, tmp_path):
    empty = _write(tmp_path / "api.token", b"")
    code = (
        "import sys\n"
        "from serve.api import main\n"
        f"code = main(['--model', {str(trained_job)!r}, '--token_file', {empty!r}])\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "sys.exit(code)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "BONIFY_API_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"bonify-serve: error: --token_file {empty}: the token is empty"
    ]


@pytest.mark.parametrize(
    ("flags", "environment", "message"),
    [
        (["--host", "0.0.0.0"], {}, "--host 0.0.0.0 without a token would answer anyone"),
        (["--host", "10.1.2.3"], {}, "or --no_auth if an authenticating proxy"),
        (["--token_file", "{token_file}"], {"BONIFY_API_TOKEN": TOKEN}, "both give a token"),
        (["--no_auth", "--token_file", "{token_file}"], {}, "--no_auth and --token_file"),
        (["--no_auth"], {"BONIFY_API_TOKEN": TOKEN}, "--no_auth and BONIFY_API_TOKEN"),
        ([], {"BONIFY_API_TOKEN": ""}, "BONIFY_API_TOKEN: the token is empty"),
    ],
)
def test_access_settings_that_contradict_or_leave_a_public_server_open_are_refused(
    trained_job, token_file, capsys, monkeypatch, flags, environment, message
):
    monkeypatch.delenv("BONIFY_API_TOKEN", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    flags = [flag.replace("{token_file}", str(token_file)) for flag in flags]
    assert main(["--model", str(trained_job), *flags]) == 2
    error = capsys.readouterr().err
    assert message in error and TOKEN not in error


@pytest.mark.parametrize(
    ("flags", "no_auth"),
    [([], False), (["--host", "::1"], False), (["--host", "0.0.0.0", "--no_auth"], True)],
)
def test_loopback_without_a_token_or_an_explicit_no_auth_may_start_open(
    trained_job, monkeypatch, flags, no_auth
):
    from serve.api import check_arguments

    monkeypatch.delenv("BONIFY_API_TOKEN", raising=False)
    options = check_arguments(["--model", str(trained_job), *flags])
    assert options.no_auth is no_auth and options.token_file is None


# ---- a real server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_server(trained_job, token_file, tmp_path_factory):
    """A real bonify-serve (uvicorn) on 127.0.0.1 with a token file; output to a file."""
    from serve.loadtest import running_server

    log = tmp_path_factory.mktemp("server") / "server.log"
    # Without the developer's own BONIFY_API_TOKEN, if any: the token file is the one source.
    environment = {k: v for k, v in os.environ.items() if k != "BONIFY_API_TOKEN"}
    flags = ["--model", str(trained_job), "--token_file", str(token_file)]
    with running_server(flags, log, environment, ready_seconds=180) as server:
        yield server


def _http(url: str, path: str, headers: dict | None = None, data: bytes | None = None):
    request = urllib.request.Request(f"{url}{path}", data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.slow
def test_a_real_server_wants_the_token_and_never_logs_it(real_server, sample_dataset_dir):
    data = _pngs(sample_dataset_dir, 1)[0].read_bytes()
    url = real_server.url
    assert _http(url, "/predict?filename=x.png", data=data)[0] == 401
    wrong = _bearer("wrong-token-" + TOKEN[::-1])
    assert _http(url, "/predict?filename=x.png", wrong, data)[0] == 401
    assert _http(url, "/model", _bearer(TOKEN))[0] == 200
    status, body = _http(url, "/predict?filename=x.png", _bearer(TOKEN), data)
    assert status == 200 and len(json.loads(body)["images"]) == 1
    assert _http(url, "/healthz")[0] == 200
    log = real_server.log.read_text()
    assert 'POST /predict?filename=x.png HTTP/1.1" 401' in log  # the requests were logged
    assert 'POST /predict?filename=x.png HTTP/1.1" 200' in log
    assert TOKEN not in log and TOKEN[::-1] not in log


@pytest.mark.slow
def test_a_real_server_answers_16_concurrent_clients_without_errors(
    real_server, sample_dataset_dir
):
    from serve.loadtest import load_test

    data = _pngs(sample_dataset_dir, 1)[0].read_bytes()
    result = load_test(real_server.url, data, "x.png", clients=16, seconds=3, token=TOKEN)
    assert result["first_errors"] == [] and result["errors"] == 0
    assert result["requests"] >= 16
    assert "Traceback" not in real_server.log.read_text()


@pytest.mark.slow
def test_a_model_that_will_not_load_stops_the_server_with_one_error_line(broken_model):
    broken = broken_model
    result = subprocess.run(
        [sys.executable, "-m", "serve.api", "--model", str(broken), "--port", str(free_port())],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("bonify-serve: error: --model ")
    assert "cannot load" in errors[0] and "Traceback" not in result.stderr
