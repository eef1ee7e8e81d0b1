"""``crfpose app``: the Gradio page's prediction endpoint through gradio_client, and the page itself
in a real browser (Playwright driving Debian's Chromium), against a server on a free loopback port."""

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from crfpose.cli import main
from crfpose.config import load_config, to_dict
from crfpose.builders import model_from_config
from crfpose.checkpoint import save_checkpoint
from crfpose.predict import Predictor

gradio_client = pytest.importorskip("gradio_client")
pytestmark = [pytest.mark.filterwarnings("ignore:::gradio.queueing"), pytest.mark.slow]  # gradio's own pandas deprecations
CONFIGS = Path(__file__).resolve().parents[1] / "crfpose" / "configs"
CHROMIUM = "/usr/bin/chromium"
K = 14


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained synthetic-sized CNN + tree CRF (the app's plumbing does not depend on training)."""
    import torch

    torch.manual_seed(0)
    config = load_config(CONFIGS / "synthetic_separate.yaml")
    path = tmp_path_factory.mktemp("app") / "model.pt"
    save_checkpoint(path, {"model": model_from_config(config).state_dict(), "config": to_dict(config)})
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 90 x 120 RGB photo (not the model's 64 x 64 input: the crop and the way back are exercised)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("photos") / "person.png"
    Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    from crfpose.app import build_app, launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.MonkeyPatch.context() as patch:  # gradio's file cache of its own: test workers' servers do not share one
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        app = build_app(Predictor.from_checkpoint(checkpoint, device="cpu"), tmp_path_factory.mktemp("work"))
        launch(app, "127.0.0.1", port, block=False)
        yield f"http://127.0.0.1:{port}/"
        app.close()


def test_predict_endpoint_returns_what_the_predictor_gives(server, checkpoint, photo):
    client = gradio_client.Client(server, verbose=False)
    for label, decoder in (("CRF marginals", "marginals"), ("CRF MAP", "map"), ("CNN alone", "unary")):
        overlay, marginals, record, download, message = client.predict(
            gradio_client.handle_file(str(photo)), None, label, 0.0, api_name="/predict"
        )
        expected = Predictor.from_checkpoint(checkpoint, device="cpu", decoder=decoder)(str(photo))
        assert record["decoder"] == decoder and record["image_size"] == [90, 120]
        (person,) = record["instances"]
        assert len(person["keypoints"]) == K and len(record["keypoint_names"]) == K
        np.testing.assert_allclose(person["keypoints"], expected[0]["keypoints"], atol=1e-3)
        np.testing.assert_allclose(person["keypoint_scores"], expected[0]["keypoint_scores"], atol=1e-5)
        assert person["bbox"] == [[0.0, 0.0, 90.0, 120.0]]
        assert json.loads(Path(download).read_text()) == record
        with Image.open(overlay) as image:
            assert image.format == "PNG" and min(image.size) > 50
        assert Path(marginals).is_file()
        shown = int((np.array(person["keypoint_scores"]) >= 0.0).sum())
        assert f"{shown} of {K} joints" in message


def test_threshold_counts_the_joints_drawn(server, photo):
    client = gradio_client.Client(server, verbose=False)
    *_, record, _, message = client.predict(gradio_client.handle_file(str(photo)), None, "CRF marginals", 0.5, api_name="/predict")
    shown = int((np.array(record["instances"][0]["keypoint_scores"]) >= 0.5).sum())
    assert f"{shown} of {K} joints" in message


def test_a_file_that_is_not_an_image_gets_a_message(server, tmp_path):
    client = gradio_client.Client(server, verbose=False)
    fake = tmp_path / "holiday.png"
    fake.write_text("not a picture")
    overlay, marginals, record, download, message = client.predict(
        gradio_client.handle_file(str(fake)), None, "CRF marginals", 0.3, api_name="/predict"
    )
    assert (overlay, marginals, record, download) == (None, None, None, None)
    assert "holiday.png" in message and "not an image" in message
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(gradio_client.exceptions.AppError, match="Invalid file type"):
        client.predict(gradio_client.handle_file(str(text)), None, "CRF marginals", 0.3, api_name="/predict")


def test_app_without_a_checkpoint_trains_nothing_and_says_how_to_get_one(capsys):
    assert main(["app"]) == 2
    err = capsys.readouterr().err
    assert "crfpose demo" in err and "crfpose-demo/model.pt" in err
    from crfpose.cli import build_parser

    assert build_parser().parse_args(["app", "model.pt"]).host == "127.0.0.1"


def _upload(page, photo, timeout_ms=180_000):
    """Give the page's file box the photo once, wait for the server to take it, then for the box to
    show the file (while it uploads the box says "Uploading"; a file given twice restarts the upload)."""
    with page.expect_response(lambda response: "/gradio_api/upload?" in response.url, timeout=timeout_ms) as taken:
        page.locator("#upload input[type=file]").set_input_files(str(photo))
    assert taken.value.ok, f"the upload answered {taken.value.status}: {taken.value.text()[:200]}"
    page.wait_for_function(
        """stem => { const box = document.querySelector('#upload');
                     return box && box.innerText.includes(stem) && !box.innerText.includes('Uploading'); }""",
        arg=Path(photo).stem,
        timeout=timeout_ms,
    )


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")
def test_the_page_in_a_real_browser(server, photo, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    requested, failures = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page()
        page.set_default_timeout(120_000)  # the suite's other worker loads the 2 cores
        page.on("request", lambda request: requested.append(request.url))
        page.on("response", lambda response: response.status >= 400 and failures.append(f"{response.status} {response.url}"))
        page.on("console", lambda message: message.type == "error" and failures.append(f"console: {message.text}"))
        try:
            page.goto(server, wait_until="networkidle")
            page.locator("#upload input[type=file]").wait_for(state="attached")
            _upload(page, photo)
            page.locator("#run").click()
            overlay = page.locator("#overlay img")
            overlay.wait_for(state="visible")
            assert overlay.evaluate("img => img.complete && img.naturalWidth > 50")
            link = page.locator("#download a").first
            link.wait_for()
            record = json.loads(page.request.get(link.get_attribute("href")).text())
            assert len(record["instances"][0]["keypoints"]) == K
            assert "1 person(s)" in page.locator("#message").inner_text()
        except Exception as error:  # say what the page saw: the screenshot and its failed requests
            page.screenshot(path=tmp_path / "page.png")
            box = page.locator("#upload").all_inner_texts()
            uploads = [url for url in requested if "/gradio_api/" in url][-8:]
            raise AssertionError(
                f"{error}\nscreenshot: {tmp_path / 'page.png'}\nfailed on the page: {failures}\n"
                f"the file box showed: {box}\nthe page's last API requests: {uploads}"
            ) from error
        finally:
            browser.close()
    hosts = {urlparse(url).hostname for url in requested if not url.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, f"the page fetched from {hosts - {'127.0.0.1'}}"


def test_a_busy_port_is_one_line_and_nothing_claims_to_serve(checkpoint, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["app", str(checkpoint), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "serving" not in err and f"--port {port}: cannot serve on 127.0.0.1:{port}" in err


def test_the_app_removes_its_temporary_folder_on_exit(checkpoint, photo, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"} | {"TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crfpose", "app", str(checkpoint), "--port", str(port), "--device", "cpu"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: __import__("signal").signal(signal.SIGINT, signal.SIG_DFL),
    )
    line, deadline = "", time.monotonic() + 240
    while "serving" not in line and time.monotonic() < deadline and proc.poll() is None:
        line = proc.stderr.readline()
    assert "serving" in line, line
    client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
    client.predict(gradio_client.handle_file(str(photo)), None, "CRF marginals", 0.3, api_name="/predict")
    assert [p.name for p in scratch.iterdir() if p.name.startswith("crfpose-app-")]  # the request's files were there
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 0  # gradio closes the server on Ctrl-C, and the command ends normally
    assert not [p for p in scratch.iterdir() if p.name.startswith("crfpose-app-")]
