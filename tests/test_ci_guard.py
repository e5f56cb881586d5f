"""CI cannot pass with the browser tests skipped (tests/conftest.py hook, .ci/run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    browser: x\n")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.browser\n@pytest.mark.skipif(True, reason='no chromium')\ndef test_ui():\n    pass\n\n"
        "@pytest.mark.skip(reason='not a browser test')\ndef test_other():\n    pass\n\n"
        "def test_ok():\n    pass\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_skipped_browser_test_fails_only_under_ci(tmp_path):
    ci = _run(tmp_path, "true")
    assert ci.returncode == 1, ci.stdout[-2000:]
    assert "skipped under CI=true" in ci.stdout and "no chromium" in ci.stdout
    assert "1 passed, 1 skipped, 1 error" in ci.stdout  # a setup-time skip becomes an error; others stay skips
    local = _run(tmp_path, None)
    assert local.returncode == 0 and "1 passed, 2 skipped" in local.stdout, local.stdout[-2000:]


def test_ci_script_refuses_to_run_without_chromium():
    text = (ROOT / ".ci" / "run").read_text()
    assert "export CI=true" in text and "exit 1" in text.split("apt-get install")[1].split("fi")[0]
