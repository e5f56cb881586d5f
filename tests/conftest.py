"""Shared test setup: offline, deterministic, CPU-only, nothing written outside tmp dirs."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Never reach a model hub or any network service from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# No real LLM endpoint or key leaks in from the developer's shell.
for _var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "METASEG_LLM_MODEL"):
    os.environ.pop(_var, None)
# No imagery server either: tests that fetch point METASEG_IMAGERY_URL at a loopback XYZ server.
for _var in ("METASEG_IMAGERY_ATTRIBUTION", "METASEG_IMAGERY_CACHE", "METASEG_IMAGERY_SUBDOMAINS"):
    os.environ.pop(_var, None)
os.environ["METASEG_IMAGERY_URL"] = "off"
# The app's session folders: this run's own temp folder, not the system-wide default
# (/tmp/metaseg_sessions is shared with every other process on the machine, whose masks a test
# would then find). Subprocesses inherit it.
os.environ["METASEG_SESSION_DIR"] = tempfile.mkdtemp(prefix="metaseg-test-sessions-")
atexit.register(shutil.rmtree, os.environ["METASEG_SESSION_DIR"], True)


WEIGHTS = Path(__file__).resolve().parents[1] / "metaseg" / "weights"


@pytest.fixture(scope="session", autouse=True)
def _package_weights_stay_as_shipped():
    """Tests write only under tmp dirs: nothing (an ONNX graph, a lock file) may appear in the
    package's weights folder during a run."""
    before = set(os.listdir(WEIGHTS))
    yield
    new = sorted(set(os.listdir(WEIGHTS)) - before)
    assert not new, f"the tests wrote into {WEIGHTS}: {new}"


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path, monkeypatch):
    """Point the prompt store and caches at a per-test temporary folder."""
    monkeypatch.setenv("METASEG_DB", str(tmp_path / "metaseg.sqlite"))
    monkeypatch.setenv("METASEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    # CLIs called in-process run logging.basicConfig, which binds a handler to this test's
    # captured stderr; a later test logging through it would print "--- Logging error ---".
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the browser tests of one module (tests/fixtures/browser.py)."""
    from tests.fixtures.browser import launch_browser

    with launch_browser() as b:
        yield b


@pytest.fixture(scope="session")
def app_server():
    """URL of ``app.demo`` launched once for the whole session (see tests/fixtures/app_server.py)."""
    import app
    from tests.fixtures.app_server import launch_app

    url = launch_app()
    try:
        yield url
    finally:
        app.demo.close()


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``CI=true`` a skipped ``browser`` test is a failure: CI must prove the UI, not skip it."""
    outcome = yield
    report = outcome.get_result()
    if _ci() and report.skipped and item.get_closest_marker("browser") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"browser test skipped under CI=true ({reason}); install Chromium and Playwright"
