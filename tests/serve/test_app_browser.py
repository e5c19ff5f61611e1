"""bonify-app in a real headless Chromium: the server started as a user starts it, a sample
radiograph uploaded through the page's own file input, the answer read off the page.

Needs Debian's `chromium` and `chromium-driver` (nothing is downloaded: selenium is pointed at
/usr/bin/chromedriver) and pip's selenium. Elsewhere it skips with one line; under CI=true a
missing browser is a failure instead (CI installs them, see .ci/run).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from serve.loadtest import free_port

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
MISSING = "needs the Debian packages chromium and chromium-driver and pip's selenium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # Chromium's sandbox cannot start as root (CI, containers)
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1500",
)
SERVER_START_SECONDS = 180
ANSWER_SECONDS = 180


def _require_browser() -> None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing = True
    else:
        missing = not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER))
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{MISSING} (CI=true: not skipping)")
        pytest.skip(MISSING)


def _app_command() -> list[str]:
    script = pathlib.Path(sys.executable).with_name("bonify-app")
    return [str(script)] if script.exists() else [sys.executable, "-m", "serve.app"]


@contextlib.contextmanager
def running_app(model: pathlib.Path, log_file: pathlib.Path):
    """`bonify-app --model MODEL` on 127.0.0.1 at a free port until the block ends; its output
    goes to log_file; yields (url, seconds until the server answered its health check)."""
    port = free_port()
    started = time.monotonic()
    with open(log_file, "wb") as log:
        server = subprocess.Popen(
            [*_app_command(), "--model", str(model), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=pathlib.Path(__file__).resolve().parents[2],
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = started + SERVER_START_SECONDS
        while True:
            if server.poll() is not None:
                raise AssertionError(f"bonify-app exited: {log_file.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer,
            ):
                if answer.status == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer from {url}: {log_file.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url, time.monotonic() - started
    finally:
        os.kill(server.pid, signal.SIGTERM)  # by PID: the server is bonify-app itself (exec)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


@contextlib.contextmanager
def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="bonify-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, seconds: float, condition):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(condition)


def upload_and_read(driver, url: str, image: pathlib.Path) -> dict:
    """Open the page, upload `image` through its file input, read the metrics it shows.
    Returns {"metrics": {label: value}, "images": n, "page_ready_s", "answer_s"}."""
    from selenium.webdriver.common.by import By

    opened = time.monotonic()
    driver.get(url)
    file_input = _wait(
        driver,
        ANSWER_SECONDS,
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "input[type=file]")
            and d.find_elements(By.CSS_SELECTOR, "[data-testid=stSidebar] [data-testid=stMarkdown]")
            and d.find_element(By.CSS_SELECTOR, "input[type=file]")
        ),
    )
    page_ready = time.monotonic() - opened
    uploaded = time.monotonic()
    file_input.send_keys(str(image.resolve()))

    def read_metrics(d):
        labels = [e.text for e in d.find_elements(By.CSS_SELECTOR, "[data-testid=stMetricLabel]")]
        values = [e.text for e in d.find_elements(By.CSS_SELECTOR, "[data-testid=stMetricValue]")]
        return dict(zip(labels, values, strict=True)) if "Study verdict" in labels else None

    metrics = _wait(driver, ANSWER_SECONDS, read_metrics)
    answer_seconds = time.monotonic() - uploaded
    images = len(driver.find_elements(By.CSS_SELECTOR, "[data-testid=stImage] img"))
    return {
        "metrics": metrics,
        "images": images,
        "page_ready_s": page_ready,
        "answer_s": answer_seconds,
    }


def test_upload_in_a_real_browser_shows_region_and_status(
    trained_job, sample_dataset_dir, tmp_path
):
    _require_browser()
    from serve.core import Predictor

    image = sorted((sample_dataset_dir / "MURA-v1.1").glob("*/XR_WRIST/*/*/*.png"))[0]
    expected = Predictor.load([str(trained_job)]).answer(image.read_bytes(), image.name)
    with (
        running_app(trained_job, tmp_path / "server.log") as (url, server_seconds),
        chromium() as driver,
    ):
        seen = upload_and_read(driver, url, image)
        driver.save_screenshot(str(tmp_path / "app.png"))
    assert seen["metrics"]["Region"] == expected.region
    assert seen["metrics"]["Status"] == expected.status
    assert seen["metrics"]["Study region"] == expected.region
    assert seen["images"] == 2  # the original and its Grad-CAM overlay
    assert (tmp_path / "app.png").stat().st_size > 10_000
    timings = {"server_start_s": server_seconds, **{k: seen[k] for k in seen if k.endswith("_s")}}
    (tmp_path / "timings.json").write_text(json.dumps(timings))
