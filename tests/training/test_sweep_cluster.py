"""training.sweep on real Dask clusters: numbers do not depend on workers, lost workers or the cluster.

All slow (worker processes import torch and load both demo models): ``pytest -m slow
tests/training/test_sweep_cluster.py``. The in-process path is covered by ``tests/training/test_sweep.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from prompts_db import PromptStore
from prompts_db import experiments as ex
from scripts.sweep_check import stop_processes
from training import synth
from training.sweep import run_sweep

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ["climate", "wrong", "none"]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep_cluster")
    synth.write_synthearth(root, n=6, size=64, seed=21, zones="Cfa,BWh,Dfb", split_fractions="0,0,1")
    return root


def _sweep(root: Path, db: Path, **kw) -> tuple[dict, np.ndarray, dict]:
    with PromptStore(db) as store:
        rep = run_sweep(model="metasegnet_demo", checkpoint=None, baseline="baseline_demo", dataset="synthearth",
                        root=str(root), split="test", variants=VARIANTS, store=store, device="cpu",
                        progress=False, **kw)  # fmt: skip
        data = ex.load(store, rep["experiment_id"])
    return rep, data.baseline, data.variants


def _same(a: tuple, b: tuple) -> None:
    rep_a, base_a, var_a = a
    rep_b, base_b, var_b = b
    assert rep_a["tiles"] == rep_b["tiles"] == 6 and rep_a["status"] == rep_b["status"] == "complete"
    assert rep_a["variants"] == rep_b["variants"] and rep_a["baseline"] == rep_b["baseline"]
    assert np.array_equal(base_a, base_b)
    for v in VARIANTS:
        assert np.array_equal(var_a[v], var_b[v])  # every tile's counts, not only the means


@pytest.fixture(scope="module")
def reference(synth_root, tmp_path_factory):
    return _sweep(synth_root, tmp_path_factory.mktemp("ref") / "ref.sqlite", workers=1)


def test_one_and_two_workers_give_identical_numbers(synth_root, tmp_path, reference):
    two = _sweep(synth_root, tmp_path / "two.sqlite", workers=2)
    _same(reference, two)
    assert json.loads(json.dumps(two[0]))["experiment_id"] >= 1


def _kill_one_worker_after_first_tile(runner, killed: list):
    def on_progress(done: int, total: int) -> None:
        if done == 1 and not killed:
            pids = runner.client.run(os.getpid)  # worker address -> process id
            addr, pid = sorted(pids.items())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append((addr, pid))

    return on_progress


def test_worker_killed_mid_run_gives_identical_numbers(synth_root, tmp_path, reference):
    from metaseg.runner import Runner

    killed: list = []
    with Runner(workers=2, progress=False) as runner:
        runner.on_progress = _kill_one_worker_after_first_tile(runner, killed)
        got = _sweep(synth_root, tmp_path / "kill.sqlite", runner=runner)
    assert killed, "no worker was killed"
    _same(reference, got)


def test_separately_started_cluster_that_loses_a_worker(synth_root, tmp_path, reference):
    """`dask scheduler` + two `dask worker ADDR` processes started from the repo root with PYTHONPATH."""
    from metaseg.runner import Runner

    env = dict(os.environ, PYTHONPATH=str(REPO), METASEG_WORKER_THREADS="1", OMP_NUM_THREADS="1")
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        worker = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                  "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"]  # fmt: skip
        for _ in range(2):
            procs.append(subprocess.Popen(worker, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))  # fmt: skip
        killed: list = []
        with Runner(scheduler=address, progress=False) as runner:
            runner.client.wait_for_workers(2, timeout=60)
            runner.on_progress = _kill_one_worker_after_first_tile(runner, killed)
            got = _sweep(synth_root, tmp_path / "remote.sqlite", runner=runner)
            assert runner.n_workers == 1  # no nanny: the killed worker stays lost
        assert killed
        assert got[0]["tiles"] == 6
        _same(reference, got)
    finally:
        stop_processes(procs)


def test_ctrl_c_on_the_command_line_leaves_an_incomplete_experiment(synth_root, tmp_path):
    """A real SIGINT to `python -m training.sweep`: exit 130, one line, finished tiles kept, never corrupt."""
    import sqlite3

    db = tmp_path / "int.sqlite"
    env = dict(os.environ, PYTHONPATH=str(REPO), METASEG_DB=str(db))
    proc = subprocess.Popen([sys.executable, "-m", "training.sweep", "--model", "metasegnet_demo", "--dataset",
                             "synthearth", "--root", str(synth_root), "--split", "test", "--variant", "climate",
                             "--variant", "wrong", "--workers", "0", "--no-progress"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def stored() -> int:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                return int(con.execute("SELECT count(*) FROM experiment_tiles").fetchone()[0])
            finally:
                con.close()
        except sqlite3.Error:
            return 0

    deadline = time.monotonic() + 300
    while stored() == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert out == "" and err.count("\n") == 1 and "stored as incomplete" in err
    with PromptStore(db) as store:
        exp = ex.get_experiment(store, ex.list_experiments(store)[0]["id"])
        data = ex.load(store, exp["id"])
    assert exp["status"] == "incomplete" and 1 <= exp["tiles"] < 6
    assert all(
        data.variants[v][i].sum() == 64 * 64 for v in ("climate", "wrong") for i in range(exp["tiles"])
    )
