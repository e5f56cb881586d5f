"""Done-when check of the prompt sweep: same numbers on 1 and 2 local workers and on a separately
started Dask cluster that loses a worker mid-run; ``climate`` equals ``training.evaluate``.

``python scripts/sweep_check.py [--root runs/data/synth_test] [--limit N] [--json-out FILE]``

Runs, as subprocesses from the repository root (``PYTHONPATH=.``):

1. ``python -m training.sweep --model metasegnet_demo --baseline baseline_demo --variant climate
   --variant wrong --variant none --workers 1 --json`` (and ``--workers 2``);
2. ``dask scheduler`` + two ``dask worker ADDR --no-nanny`` processes, the same sweep with
   ``--scheduler ADDR``, and ``SIGKILL`` to one worker once the first tiles are stored;
3. ``python -m training.evaluate --model metasegnet_demo --prompt-mode climate --json`` (and the
   baseline).

Prints one line per run and exits 1 when any number differs. The prompt database is a fresh file
under ``runs/sweep_check/`` (``METASEG_DB``), so the stored experiments can be inspected after.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SWEEP = ["-m", "training.sweep", "--model", "metasegnet_demo", "--baseline", "baseline_demo",
         "--variant", "climate", "--variant", "wrong", "--variant", "none", "--json", "--no-progress"]  # fmt: skip


def _env(db: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), METASEG_DB=str(db), PYTHONUNBUFFERED="1")


def _json(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout), time.perf_counter() - t0


def _tiles_stored(db: Path) -> int:
    """Tiles stored so far over all experiments of the check's database."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT count(*) FROM experiment_tiles").fetchone()
            return int(row[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _remote(args: argparse.Namespace, env: dict[str, str], db: Path, common: list[str]) -> tuple[dict, float, str]:
    """The sweep on a separately started cluster; one worker is SIGKILLed after the first stored tiles."""
    work = db.parent
    sched_file = work / "scheduler.json"
    sched_file.unlink(missing_ok=True)
    wenv = dict(env, METASEG_WORKER_THREADS="1", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([PY, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)], cwd=ROOT, env=wenv,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        workers = [subprocess.Popen([PY, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny",
                                     "--no-dashboard", "--host", "127.0.0.1"], cwd=ROOT, env=wenv,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]  # fmt: skip
        procs += workers
        t0 = time.perf_counter()
        sweep = subprocess.Popen([PY, *SWEEP, *common, "--scheduler", address], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        before = _tiles_stored(db)
        note = "no worker killed (the sweep ended first)"
        while sweep.poll() is None:
            if _tiles_stored(db) > before:  # the first batch of tiles is in: kill a worker mid-run
                os.kill(workers[0].pid, signal.SIGKILL)
                note = f"worker pid {workers[0].pid} SIGKILLed after {_tiles_stored(db) - before} stored tile(s)"
                break
            time.sleep(0.2)
        out, err = sweep.communicate(timeout=args.timeout)
        if sweep.returncode != 0:
            raise SystemExit(f"remote sweep failed ({sweep.returncode}): {err.strip()[-500:]}")
        return json.loads(out), time.perf_counter() - t0, f"{address}; {note}"
    finally:
        stop_processes(procs)


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """Terminate a started Dask scheduler and its workers (last started first); kill what hangs."""
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="runs/data/synth_test", help="held-out SynthEarth set (split test)")
    p.add_argument("--limit", type=int, default=None, help="only the first N tiles")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--json-out", default="runs/sweep_check/check.json")
    args = p.parse_args(argv)
    work = ROOT / "runs" / "sweep_check"
    work.mkdir(parents=True, exist_ok=True)
    db = work / "check.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    env = _env(db)
    common = ["--dataset", "synthearth", "--root", args.root, "--split", "test", "--device", "cpu"]
    limit = ["--limit", str(args.limit)] if args.limit else []
    common += limit
    runs: dict[str, dict] = {}
    rows = []
    for label, extra in (("workers 1", ["--workers", "1"]), ("workers 2", ["--workers", "2"])):
        rep, sec = _json([PY, *SWEEP, *common, *extra], env, args.timeout)
        runs[label] = rep
        rows.append((label, rep, sec, ""))
    rep, sec, note = _remote(args, env, db, common)
    runs["remote"] = rep
    rows.append(("separate cluster", rep, sec, note))
    ev_args = ["--dataset", "synthearth", "--root", args.root, "--split", "test", "--device", "cpu", "--json",
               "--no-progress", *limit]  # fmt: skip
    ev_env = dict(env, OMP_NUM_THREADS="1")  # the sweep's workers run 1 torch thread (training.sweep --threads)
    ev, ev_sec = _json([PY, "-m", "training.evaluate", "--model", "metasegnet_demo", "--prompt-mode", "climate",
                        *ev_args], ev_env, args.timeout)  # fmt: skip
    evb, _ = _json([PY, "-m", "training.evaluate", "--model", "baseline_demo", *ev_args], ev_env, args.timeout)

    ok = True
    ref = runs["workers 1"]
    print(f"{'run':<18}{'tiles':>6}{'climate':>9}{'wrong':>8}{'none':>8}{'baseline':>9}{'seconds':>9}  same")
    for label, rep, sec, note in rows:
        same = rep["variants"] == ref["variants"] and rep["baseline"] == ref["baseline"] and rep["tiles"] == ref["tiles"]
        ok &= same and rep["status"] == "complete"
        v = rep["variants"]
        print(f"{label:<18}{rep['tiles']:>6}{v['climate']['miou']:>9.2f}{v['wrong']['miou']:>8.2f}"
              f"{v['none']['miou']:>8.2f}{rep['baseline']['miou']:>9.2f}{sec:>9.1f}  {same}  {note}")  # fmt: skip
    same_ev = all(ref["variants"]["climate"][k] == ev[k] for k in ("miou", "oa", "mf1", "per_class"))
    same_evb = all(ref["baseline"][k] == evb[k] for k in ("miou", "oa", "mf1", "per_class"))
    ok &= same_ev and same_evb
    print(f"{'evaluate climate':<18}{ev['n_images']:>6}{ev['miou']:>9.2f}{'':>8}{'':>8}{evb['miou']:>9.2f}"
          f"{ev_sec:>9.1f}  {same_ev and same_evb}  (oa {ev['oa']}, mf1 {ev['mf1']}; per-class equal too)")  # fmt: skip
    out = ROOT / args.json_out
    out.write_text(json.dumps({"runs": runs, "evaluate_climate": ev, "evaluate_baseline": evb, "ok": ok}, indent=1))
    print("OK: identical numbers" if ok else "MISMATCH", f"(details in {out.relative_to(ROOT)})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
