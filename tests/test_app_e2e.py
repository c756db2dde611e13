"""The explorer in a real browser (`make e2e`): a live `streamlit run` on 127.0.0.1, every page loaded by Debian's
chromium driven by the PyPI playwright package (never `playwright install`), its content checked and a
screenshot saved under $VTP_E2E_DIR (default /tmp/vtp-e2e/<source>/). Sources: the fake project the AppTest
tests use, and the repository's own runs/ when it has some."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fixtures_app.build import build_project, project_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("VTP_CHROMIUM", "/usr/bin/chromium")
# page URL -> text that must appear once the page has run (a traceback would replace it)
PAGES = {"": "vtp explorer", "Runs": "Selected:", "Reconstructions": "saved by vtp evaluate",
         "Samples": "euler 50 steps", "Training_curves": "Last logged values", "Scaling": "Report fits",
         "Compare": "Parameter diff", "Provenance": "dvc repro pretrain@", "Experiments": "DVC experiments"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(env: dict, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "Home.py"), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"streamlit did not answer on 127.0.0.1:{port}: {proc.stdout.read().decode()[-2000:]}")


@pytest.mark.parametrize("source", ["fixture", "repo"])
def test_every_page_in_chromium(source, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium")
    if source == "repo":
        if not any((REPO / "runs").glob("*/tokenizer")):
            pytest.skip("the repository has no runs yet (make demo)")
        env = {"VTP_RUNS_ROOT": str(REPO / "runs"), "VTP_PROJECT_ROOT": str(REPO),
               "VTP_REPORTS_ROOT": str(REPO / "reports")}
    else:
        build_project(tmp_path)
        env = project_env(tmp_path)
    out = Path(os.environ.get("VTP_E2E_DIR", "/tmp/vtp-e2e")) / source
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    port = free_port()
    proc = serve(env, port)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for i, (path, expected) in enumerate(PAGES.items()):
                page.goto(f"http://127.0.0.1:{port}/{path}")
                page.get_by_text(expected).first.wait_for(timeout=90_000)
                page.wait_for_timeout(1500)  # images and charts render after the text
                assert page.locator('[data-testid="stException"]').count() == 0, f"{path or 'Home'}: exception"
                page.screenshot(path=str(out / f"{i}_{path or 'Home'}.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert len(list(out.glob("*.png"))) == len(PAGES)
