"""The demo as a visitor sees it: `python app.py` (what a Space runs) served on a free local port, opened in headless
Chromium (Debian's package, installed here when absent) driven by Playwright, with every request off this machine
refused. The page must render, a click on Generate must produce an image, and the page is saved as
docs/demo_screenshot.png for the README."""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlparse

import pytest
from conftest import ROOT

from vq_hub.utils.io import atomic_file

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")  # the `dev` extra installs it (no browser download)

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-quic", "--disable-sync"]  # fmt: skip
SCREENSHOT = ROOT / "docs" / "demo_screenshot.png"


def chromium() -> str:
    """Debian's Chromium, installed with apt-get when it is missing and we are root (as in CI)."""
    path = shutil.which("chromium")
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                                       "chromium"]):  # fmt: skip
            subprocess.run(command, check=True, env=environment, capture_output=True, timeout=900)
        path = shutil.which("chromium")
    if path is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium; the test installs it when run as root)")
    return path


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """`python app.py` from the repository root, as a Space starts it, on a free port."""
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    environment = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                   "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}  # fmt: skip
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=environment, stdout=output,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"app.py did not serve {url} (exit code {process.poll()}):\n{log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_page_renders_offline_and_generate_draws_an_image(app_url, tmp_path):
    executable = chromium()
    outside = []  # requests to anything but this machine: the page must not need them

    def route(request_route):
        host = urlparse(request_route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            request_route.continue_()
        else:
            outside.append(request_route.request.url)
            request_route.abort()

    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            context.route("**/*", route)
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(app_url, wait_until="load", timeout=60_000)
            button = page.locator("#generate-button")
            button.wait_for(state="visible", timeout=60_000)
            assert page.title() == "vq_hub demo"
            for tab in ("Generate", "Reconstruct", "Inpaint / complete"):
                assert page.get_by_role("tab", name=tab).is_visible()

            button.click()
            status = page.locator("#generate-status textarea")
            page.wait_for_function("el => el.value.startsWith('done:')", arg=status.element_handle(), timeout=120_000)
            image = page.locator("#generate-output img")
            image.wait_for(state="visible", timeout=30_000)
            size = image.evaluate("img => img.complete ? [img.naturalWidth, img.naturalHeight] : null")
            assert size == [(4 * 34 + 2) * 4, 36 * 4]  # four 32-pixel samples side by side, enlarged 4×
            assert status.input_value() == "done: 4 images, VQDiscreteDiffusionPipeline"

            with atomic_file(SCREENSHOT) as temporary:
                page.screenshot(path=str(temporary))
        finally:
            context.close()
    assert outside == [] and errors == []
