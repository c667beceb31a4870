"""The page at ``/``, rendered by a headless system browser against a real uvicorn server."""

import re
import shutil
import socket
import subprocess
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from molpipe.serve.app import create_app  # noqa: E402
from molpipe.serve.build import untrained  # noqa: E402
from tests.serve.conftest import uvicorn_on_loopback  # noqa: E402

SMILES = ["CCO", "c1ccccc1O", "not_a_smiles("]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=8000"]


def _browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip(f"no headless browser ({', '.join(BROWSERS)}) on PATH")


@pytest.fixture
def server_url(tmp_path):
    """http://127.0.0.1:PORT of an untrained logS model served by uvicorn in a thread."""
    model = untrained(["logS"], "regression", tmp_path / "srv").start()
    try:
        with uvicorn_on_loopback(create_app(model, stop_on_exit=False)) as port:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            yield f"http://127.0.0.1:{port}"
    finally:
        model.stop()


def _rows(dom: str) -> list[tuple[list[str], str]]:
    """(classes, inner HTML) of every <tr> of class "result" in ``dom``."""
    out = []
    for attrs, inner in re.findall(r"<tr\b([^>]*)>(.*?)</tr>", dom, re.S):
        classes = re.search(r'class="([^"]*)"', attrs)
        classes = classes.group(1).split() if classes else []
        if "result" in classes:
            out.append((classes, inner))
    return out


def test_page_predicts_the_molecules_of_its_url(server_url, tmp_path):
    browser = _browser()
    url = f"{server_url}/?smiles={quote(','.join(SMILES))}"
    dom = subprocess.run([browser, *HEADLESS, "--dump-dom", url], capture_output=True,
                         text=True, timeout=60, check=True).stdout

    rows = _rows(dom)
    assert len(rows) == len(SMILES), dom[-2000:]
    failed = [inner for classes, inner in rows if "error" in classes]
    assert len(failed) == 1 and "not_a_smiles(" in failed[0]
    for classes, inner in rows:
        if "error" in classes:
            continue
        assert '<img src="/draw?smiles=' in inner
        preds = re.findall(r'<td class="num pred">([^<]*)</td>', inner)
        assert len(preds) == 1 and re.fullmatch(r"-?\d+\.\d+", preds[0]), inner
    version = re.search(r'<strong id="version">([^<]*)</strong>', dom)
    assert version and version.group(1).strip().isdigit(), "model version not shown"

    png = tmp_path / "serve-page.png"
    subprocess.run([browser, *HEADLESS, f"--screenshot={png}", "--window-size=1200,900", url],
                   capture_output=True, timeout=60, check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    shutil.copy(png, "/tmp/serve-page.png")
