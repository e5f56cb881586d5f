"""Every hostile file and prompt text through ``metaseg locate``, ``metaseg predict`` and
``prompts_db edit``: a result or one clean error line (exit 2), never a traceback or a hang.

The matrix runs the real CLI entry points in-process (``metaseg.cli.main`` /
``prompts_db.cli.main`` with stdout/stderr captured): the same code path as ``python -m``
minus interpreter start-up (which would cost ~10 s per ``predict`` on this machine). A few
subprocess runs check the contract end to end (exit code, exactly one stderr line, no
"Traceback"), including bytes that are not valid UTF-8 on the command line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import SCOPES, in_scope, short
from tests.reliability.hostile import HOSTILE_TEXTS, QUICK_FILE_KEYS, QUICK_TEXT_KEYS

ROOT = Path(__file__).resolve().parents[2]
CALL_TIMEOUT_S = 60


@contextlib.contextmanager
def _deadline(seconds: int):
    """Raise TimeoutError in the main thread after ``seconds`` (a hang becomes a failure)."""

    def _alarm(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_cli(main, argv: list[str]) -> tuple[object, str, str]:
    """(exit code or 'exception: …', stdout, stderr) of an in-process CLI run."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with _deadline(CALL_TIMEOUT_S), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    except BaseException as exc:  # noqa: BLE001 - anything escaping main() is a traceback for the user
        rc = f"exception: {type(exc).__name__}: {exc}"
    return rc, out.getvalue(), err.getvalue()


def classify(rc: object, stdout: str, stderr: str, expect: str) -> tuple[str, bool]:
    """(outcome text, acceptable?) under the CLI contract."""
    if isinstance(rc, str):
        return f"traceback ({rc})", False
    if "Traceback" in stderr:
        return "traceback on stderr", False
    if rc == 0:
        try:
            json.loads(stdout)
        except ValueError:
            return "exit 0 without a JSON object", False
        return "result", expect in ("result", "either")
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if rc == 2 and len(lines) == 1:
        msg = lines[0].removeprefix("error: ")
        return f"error: {msg}", expect in ("error", "either")
    return f"exit {rc} with {len(lines)} stderr lines: {' / '.join(lines)[:150]}", False


def _predict_argv(image: Path, ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", str(image), "--model", "metasegnet_demo", "--checkpoint", str(ckpt), "--out", str(out),
            "--json", *extra]


@pytest.fixture(scope="module", autouse=True)
def _quiet_torch():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("scope", SCOPES)
def test_hostile_files_locate_and_predict(scope, hostile_dir, random_checkpoints, report, tmp_path):
    """locate: every file, always (metadata only, cheap). predict: the quick subset, or all (slow)."""
    from metaseg.cli import main

    ckpt = random_checkpoints["metasegnet_demo"]
    bad = []
    for h in hostile_dir["files"]:
        report.add_input(h.key, h.description, "file")
        rc, out, err = run_cli(main, ["locate", str(h.path), "--json"])
        outcome, ok = classify(rc, out, err, h.expect)
        report.record(h.key, "locate CLI", outcome, ok)
        if not ok:
            bad.append(f"locate {h.key}: {outcome}")
        if not in_scope(h.key, scope, QUICK_FILE_KEYS):
            continue
        mask = tmp_path / f"{h.key}.tif"
        rc, out, err = run_cli(main, _predict_argv(h.path, ckpt, mask))
        outcome, ok = classify(rc, out, err, h.pixel_expect)
        if ok and rc == 0:
            obj = json.loads(out)
            ok = mask.is_file() and abs(sum(obj["class_fraction"].values()) - 1.0) < 1e-3 or \
                sum(obj["class_fraction"].values()) == 0
            fr = max(obj["class_fraction"].values()) if obj["class_fraction"] else 0
            outcome = f"result (zone {obj['zone']}, {obj['windows']} window(s))" if ok else \
                f"result without a valid mask (fractions sum {fr})"
        report.record(h.key, "predict CLI", outcome, ok)
        if not ok:
            bad.append(f"predict {h.key}: {outcome}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("scope", SCOPES)
def test_hostile_texts_predict_and_prompt_edit(scope, hostile_dir, random_checkpoints, report, tmp_path):
    from metaseg.cli import main
    from prompts_db import PromptStore
    from prompts_db.cli import main as prompts_main

    ckpt = random_checkpoints["metasegnet_demo"]
    tile = hostile_dir["reference"]
    with PromptStore() as store:
        parent = store.current("Cfb", "openearthmap").id
    bad = []
    for t in HOSTILE_TEXTS:
        report.add_input(t.key, t.description, "text")
        if not in_scope(t.key, scope, QUICK_TEXT_KEYS):
            continue
        rc, out, err = run_cli(main, _predict_argv(tile, ckpt, tmp_path / f"{t.key}.png", "--prompt", t.text))
        outcome, ok = classify(rc, out, err, t.predict_expect)
        if ok and rc == 0:
            # The prompt must come back verbatim in the JSON (no silent rewriting).
            ok = json.loads(out)["prompt"] == t.text
            outcome = "result (prompt echoed verbatim)" if ok else "result with a rewritten prompt"
        report.record(t.key, "predict CLI", outcome, ok)
        if not ok:
            bad.append(f"predict {t.key}: {outcome}")

        src = tmp_path / f"{t.key}.txt"
        src.write_bytes(t.text.encode("utf-8", "surrogatepass"))
        with PromptStore() as store:
            before = len(store.history(parent))
        rc, out, err = run_cli(prompts_main, ["edit", str(parent), "--file", str(src), "--json"])
        outcome, ok = classify(rc, out, err, t.save_expect)
        with PromptStore() as store:
            hist = store.history(parent)
        if rc == 0 and ok:
            rec = json.loads(out)
            ok = rec["text"] == t.text and len(hist) == before + 1 and hist[0].text == t.text
            outcome = f"result (v{rec['id'] and hist[0].version}, stored verbatim)" if ok else "result, text altered"
        elif len(hist) != before:
            ok, outcome = False, f"{outcome} but a row was written"
        report.record(t.key, "prompts_db edit", outcome, ok)
        if not ok:
            bad.append(f"prompts_db edit {t.key}: {outcome}")
    assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------- real processes
def _subprocess(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, timeout=180, **kw)


def _assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, (proc.returncode, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_locate_subprocess_contract(hostile_dir):
    by_key = {h.key: h.path for h in hostile_dir["files"]}
    for key in ("corrupt_tiff", "png_100000x100000"):
        proc = _subprocess(["-m", "metaseg", "locate", str(by_key[key]), "--json"])
        _assert_one_line_error(proc)
        assert proc.stdout == b""


@pytest.mark.slow
def test_predict_subprocess_contract(hostile_dir, random_checkpoints, tmp_path):
    """Real ``python -m metaseg predict``: a bomb PNG, and a prompt that is not valid UTF-8 on argv."""
    ckpt = str(random_checkpoints["metasegnet_demo"])
    by_key = {h.key: h.path for h in hostile_dir["files"]}
    proc = _subprocess(["-m", "metaseg", "predict", str(by_key["png_100000x100000"]), "--model", "metasegnet_demo",
                        "--checkpoint", ckpt, "--out", str(tmp_path / "a.png"), "--json"])
    _assert_one_line_error(proc)
    # b"\xff" on argv decodes to the lone surrogate "\udcff" (surrogateescape).
    proc = subprocess.run(
        [os.fsencode(sys.executable), b"-m", b"metaseg", b"predict", os.fsencode(hostile_dir["reference"]),
         b"--model", b"metasegnet_demo", b"--checkpoint", os.fsencode(ckpt), b"--out",
         os.fsencode(tmp_path / "b.png"), b"--json", b"--prompt", b"forest \xff\xfe rivers"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"), capture_output=True, timeout=180,
    )
    err = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    assert proc.returncode in (0, 2), err
    if proc.returncode == 0:
        json.loads(proc.stdout)
    else:
        _assert_one_line_error(proc)


def test_predictor_rejects_lone_surrogate_prompt(random_checkpoints):
    """Regression: a prompt with a lone surrogate crashed the tokenizer with a TypeError traceback."""
    import numpy as np

    from metaseg.errors import MetasegError
    from metaseg.inference import Predictor

    pred = Predictor.from_checkpoint(random_checkpoints["metasegnet_demo"], "cpu")
    with pytest.raises(MetasegError, match="not valid Unicode"):
        pred.predict(np.zeros((32, 32, 3), np.uint8), "forest \udcff rivers")


def test_prompt_store_rejects_lone_surrogate_text(tmp_path):
    """Regression: a lone surrogate reached the tokenizer and raised TypeError (a traceback in
    ``python -m prompts_db edit ID --text $'\\xff'``, the app's catch-all error in /save_prompt)."""
    from prompts_db import PromptStore
    from prompts_db.cli import main as prompts_main
    from prompts_db.errors import PromptTextError

    with PromptStore() as store:
        parent = store.current("Cfb", "openearthmap").id
        n = len(store.history(parent))
        with pytest.raises(PromptTextError, match="not valid Unicode"):
            store.save("Cfb", "openearthmap", "water \ud800 bodies")
        assert len(store.history(parent)) == n
    rc, out, err = run_cli(prompts_main, ["edit", str(parent), "--text", "forest \udcff rivers"])
    assert rc == 2 and out == "" and err.count("\n") == 1 and "not valid Unicode" in err


def test_unwritable_mask_output_is_a_clean_error(tmp_path):
    """Regression: an --out under a file or onto a folder raised FileExistsError / RasterioIOError
    tracebacks from metaseg.export after the model had run."""
    import numpy as np

    from metaseg.classes import get_class_set
    from metaseg.errors import MetasegError
    from metaseg.export import write_mask

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    folder = tmp_path / "folder.tif"
    folder.mkdir()
    mask = np.zeros((8, 8), np.uint8)
    cs = get_class_set("openearthmap")
    for out in (blocker / "m.tif", blocker / "m.png", folder):
        with pytest.raises(MetasegError, match="cannot write the mask") as err:
            write_mask(out, mask, cs)
        assert "\n" not in str(err.value)
    assert blocker.read_text() == "x"


def test_prompts_cli_huge_ids_and_non_database_files(tmp_path):
    """Regression: ids beyond SQLite INTEGER raised OverflowError, and ``--db`` pointing at a file
    that is not a database raised sqlalchemy DatabaseError — both tracebacks."""
    from prompts_db.cli import main as prompts_main

    for argv in (["show", "99999999999999999999999"], ["restore", str(2**63)], ["history", str(-(2**63) - 1)],
                 ["edit", str(2**70), "--text", "x"]):
        rc, out, err = run_cli(prompts_main, argv)
        assert rc == 2 and err.count("\n") == 1 and "no prompt with id" in err, (argv, rc, err)
    not_db = tmp_path / "notes.sqlite"
    not_db.write_text("just some text, long enough to look like a header " * 20)
    before = not_db.read_bytes()
    rc, out, err = run_cli(prompts_main, ["--db", str(not_db), "list"])
    assert rc == 2 and err.count("\n") == 1 and "not a usable prompt database" in err, err
    assert not_db.read_bytes() == before


def test_metaseg_usage_errors_are_one_line():
    """Regression: argparse errors (bad/missing options) printed a multi-line usage block."""
    from metaseg.cli import main

    for argv in (["bench", "--size", "0"], ["predict", "x.tif"], ["climate", "1"], ["nosuchcommand"],
                 ["locate", "a.tif", "--bogus"]):
        rc, out, err = run_cli(main, argv)
        assert rc == 2 and err.count("\n") == 1 and "error:" in err and "usage" not in err, (argv, err)


def test_count_tokens_survives_lone_surrogates():
    """Regression: the app's live token counter (prompt textbox change) raised TypeError on a
    lone surrogate; counting must work on any ``str``."""
    from prompts_db import count_tokens

    assert count_tokens("water \ud800 bodies") == count_tokens("water ? bodies") > 2


@pytest.mark.slow
def test_shipped_demo_weights_on_hostile_inputs(hostile_dir, report, tmp_path):
    """``metaseg predict --model metasegnet_demo`` without ``--checkpoint`` (the shipped weights)."""
    from metaseg.cli import main
    from tests.reliability.conftest import shipped_demo_weights

    assert shipped_demo_weights(), "metaseg/weights/ must hold both demo checkpoints (they ship with the project)"
    by_key = {h.key: h for h in hostile_dir["files"]}
    rows, bad = [], []
    for key in ("png_1x1", "bands_13", "float32_nan", "crs_mars", "png_100000x100000", "corrupt_tiff"):
        h = by_key[key]
        for model in ("metasegnet_demo", "baseline_demo"):
            rc, out, err = run_cli(main, ["predict", str(h.path), "--model", model, "--out",
                                          str(tmp_path / f"{key}_{model}.png"), "--json"])
            outcome, ok = classify(rc, out, err, h.pixel_expect)
            rows.append(f"| `{key}` | {model} | {outcome[:120]} |")
            if not ok:
                bad.append(f"{key} {model}: {outcome}")
    report.section("Shipped demo weights", [
        "`metaseg predict IMAGE --model NAME --out …` without `--checkpoint` (weights from `metaseg/weights/`):",
        "", "| input | model | outcome |", "|---|---|---|", *rows,
    ])
    assert not bad, "\n".join(bad)


def test_file_names_that_are_not_utf8(hostile_dir, tmp_path):
    """Regression: a GeoTIFF whose name is not valid UTF-8 (Latin-1 bytes on Linux) crashed rasterio
    with UnicodeEncodeError (traceback in ``metaseg locate``); a mask --out with such a name did too."""
    import numpy as np

    from metaseg.classes import get_class_set
    from metaseg.errors import MetasegError
    from metaseg.export import write_mask
    from metaseg.geo import read_label, read_tile

    folder = os.fsencode(tmp_path)
    bad = folder + b"/M\xfcller.tif"  # "Müller.tif" in Latin-1
    with open(bad, "wb") as fh:
        fh.write(hostile_dir["reference"].read_bytes())
    name = os.fsdecode(bad)
    assert read_tile(name).rgb.shape == (64, 64, 3)
    assert read_label(name, get_class_set("openearthmap")).shape == (64, 64)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    outputs = []
    for args in ([b"locate", bad, b"--json"], [b"locate", bad]):
        proc = subprocess.run([os.fsencode(sys.executable), b"-m", b"metaseg", *args], cwd=ROOT, env=env,
                              capture_output=True, timeout=120)
        assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr[-500:]
        outputs.append(proc.stdout)
    assert json.loads(outputs[0])["crs"] == "EPSG:32633"
    assert outputs[1].startswith(b"M\\udcfcller.tif: 64")  # the odd byte shown as an escape
    with pytest.raises(MetasegError, match="not valid UTF-8"):
        write_mask(os.fsdecode(folder + b"/out\xfe.tif"), np.zeros((4, 4), np.uint8), get_class_set("openearthmap"))


HOSTILE_LLM_BODIES = {
    "html_page": (b"<html>proxy login</html>", "text/html", "error"),
    "truncated_json": (b'{"choices": [', "application/json", "error"),
    "deeply_nested_json": (b'{"choices":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json", "error"),
    "not_a_completion": (b'{"hello": "world"}', "application/json", "error"),
    "nul_and_escapes": (json.dumps({"choices": [{"message": {"role": "assistant",
                                                             "content": "forest\u0000 road \u001b[31m"}}]}).encode(),
                        "application/json", "result"),
    "lone_surrogate": (b'{"choices":[{"message":{"role":"assistant","content":"forest \\ud800 road"}}]}',
                       "application/json", "result"),
}


def test_hostile_llm_endpoint(tmp_path, report):
    """Regression: an endpoint answering HTML (a proxy page) or truncated JSON raised AttributeError /
    JSONDecodeError tracebacks in ``prompts_db generate --llm``; a NUL in an answer was cached and
    broke every later generation of that question."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prompts_db.cli import main as prompts_main

    current = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body, ctype, _ = HOSTILE_LLM_BODIES[current["key"]]
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    rows, bad = [], []
    try:
        for key, (_, _, expect) in HOSTILE_LLM_BODIES.items():
            current["key"] = key
            db = tmp_path / f"{key}.sqlite"  # fresh QA cache per case
            rc, out, err = run_cli(prompts_main, ["--db", str(db), "generate", "--zone", "Cfb", "--class-set",
                                                  "openearthmap", "--llm", "--timeout", "5"])
            outcome, ok = classify_text_cli(rc, err, expect)
            if ok and rc == 0:  # the stored prompt is clean, and a second run (cached answers) works too
                rc2, _, err2 = run_cli(prompts_main, ["--db", str(db), "generate", "--zone", "Cfb", "--class-set",
                                                      "openearthmap", "--llm"])
                ok = rc2 == 0
                outcome = "result (control characters dropped; cached answers reusable)" if ok else f"2nd run: {err2}"
            rows.append(f"| {key} | {short(outcome)} |")
            if not ok:
                bad.append(f"{key}: {outcome}")
    finally:
        os.environ.pop("OPENAI_BASE_URL", None)
        srv.shutdown()
    report.section("Hostile LLM endpoint", [
        "`python -m prompts_db generate --llm` against a loopback endpoint answering with:", "",
        "| response | outcome |", "|---|---|", *rows,
    ])
    assert not bad, "\n".join(bad)


def classify_text_cli(rc, err: str, expect: str) -> tuple[str, bool]:
    """Like :func:`classify` for commands whose stdout is not JSON."""
    if isinstance(rc, str) or "Traceback" in err:
        return f"traceback ({rc})", False
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    if rc == 0:
        return "result", expect in ("result", "either")
    if rc == 2 and len(lines) == 1:
        return f"error: {lines[0].removeprefix('error: ')}", expect in ("error", "either")
    return f"exit {rc}: {' / '.join(lines)[:150]}", False
