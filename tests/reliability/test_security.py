"""Security checks: escaping in the browser, no pickle, upload names never become paths, API keys
never leak, upload caps configurable and enforced."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
from pathlib import Path

import pytest

from tests.fixtures.geotiffs import write_geotiff
from tests.reliability.conftest import short
from tests.reliability.hostile import LOCAL_WKT

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SECRET = "sk-test-SECRET-7f3a9c1e5b2d4a6f8e0c"


# --------------------------------------------------------------------------- escaping (browser)
XSS_PROMPT = ('<script>window.__xss="script"</script><img src=x onerror="window.__xss=\'img\'">'
              '<svg onload="window.__xss=\'svg\'"></svg> rivers')
XSS_FILE_NAME = "<img src=x onerror=window.__xss='file'>.tif"
XSS_CRS = LOCAL_WKT.replace("site grid", "<img src=x onerror=window.__xss='crs'>")

_PROBE = """() => {
    const frames = [window, ...Array.from(document.querySelectorAll('iframe')).map(f => f.contentWindow)];
    const fired = frames.map(w => { try { return w.__xss || null; } catch (e) { return null; } }).filter(Boolean);
    const live = Array.from(document.querySelectorAll('[onerror],[onload]'))
        .filter(el => (el.getAttribute('onerror') || el.getAttribute('onload') || '').includes('__xss')).length;
    const scripts = Array.from(document.querySelectorAll('script')).filter(s => s.textContent.includes('__xss')).length;
    return {fired, live, scripts};
}"""


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} missing: apt-get install chromium")
def test_injected_markup_does_not_run_in_the_browser(running_app, report, tmp_path):
    """A prompt, an upload name and a GeoTIFF CRS name carrying <script>/<img onerror>/<svg onload>."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from studio import prompt_store

    prompt_store.get_store().save(None, "openearthmap", XSS_PROMPT)  # the generic prompt the page shows first
    tif = write_geotiff(tmp_path / XSS_FILE_NAME, crs=XSS_CRS, size=32,
                        transform=__import__("rasterio.transform").transform.from_origin(10, 20, 1, 1))
    dialogs = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(running_app.url, wait_until="domcontentloaded", timeout=90_000)
            prompt = page.locator("#prompt textarea")
            page.wait_for_function(
                "() => (document.querySelector('#prompt textarea') || {}).value?.includes('onerror')", timeout=90_000)
            assert prompt.input_value() == XSS_PROMPT  # shown verbatim as text
            page.locator("#tile-file input[type=file]").set_input_files(str(tif))
            page.wait_for_function("() => (document.querySelector('#location') || {}).innerText?.includes('px')",
                                   timeout=90_000)
            location_text = page.locator("#location").inner_text()
            page.wait_for_timeout(1000)  # give any injected handler time to fire
            probe = page.evaluate(_PROBE)
            history = page.locator("#history-table")
            history_text = history.inner_text() if history.count() else ""
        finally:
            browser.close()
    assert "onerror=window.__xss='crs'" in location_text  # the CRS name is displayed as text
    if history_text:  # the history table (if the layout has one) shows the payload as text too
        assert "<script>" in history_text or "onerror" in history_text
    assert probe == {"fired": [], "live": 0, "scripts": 0}, probe
    assert not dialogs
    report.section("Security: escaping in the browser", [
        "Headless Debian Chromium (Playwright, `executable_path=/usr/bin/chromium`) loaded the app with",
        "the generic prompt set to `<script>…</script><img src=x onerror=…><svg onload=…>`, then uploaded",
        "a GeoTIFF *named* `<img src=x onerror=…>.tif` whose CRS name is `<img src=x onerror=…>`.",
        "",
        "| check | result |",
        "|---|---|",
        "| prompt editor shows the payload verbatim as text | yes |",
        "| Locate panel shows the CRS payload as text | yes |",
        f"| injected handlers/scripts that ran (`window.__xss` in page and iframes) | {len(probe['fired'])} |",
        f"| live `onerror`/`onload` attributes or `<script>` from user text in the DOM | "
        f"{probe['live'] + probe['scripts']} |",
        f"| dialogs opened | {len(dialogs)} |",
    ])


def test_html_helpers_escape_user_text():
    """Every HTML helper that can carry user/file text escapes it (no browser needed)."""
    from prompts_db import PromptStore
    from studio import views

    with PromptStore() as store:
        rec = store.save("Cfb", "openearthmap", XSS_PROMPT, author="<b>x</b>", notes="<i>n</i>")
    html_snippets = [
        rec.to_html(),
        views.prompt_info_html(rec, "<script>zone</script>"),
        views.location_html({"lat": 1.0, "lon": 2.0, "source": "<img src=x onerror=1>", "width": 3, "height": 4,
                             "bands": "<b>", "dtype": "<svg onload=1>", "crs": XSS_CRS,
                             "zone": {"code": "<s>", "name": "<script>", "group": "<g>", "color": "#000000"}},
                            note="<script>note</script>"),
        views.metrics_html({"metasegnet": {"miou": 0.5, "oa": 0.5, "mf1": 0.5},
                            "baseline": {"miou": 0.4, "oa": 0.4, "mf1": 0.4}}, "<img src=x onerror=1>"),
    ]
    payloads = ["<script", "<img", "<svg", "<s>", "<g>", "<b>x</b>", "<i>n</i>", "<b> band"]
    for snippet in html_snippets:
        raw = [p for p in payloads if p in snippet]
        assert not raw, (raw, snippet)


# --------------------------------------------------------------------------- no pickle
PICKLE_PATTERNS = [
    (re.compile(r"^\s*(import pickle|from pickle|import cPickle|import dill|import joblib)", re.M), "pickle import"),
    (re.compile(r"\bpickle\.(loads?|Unpickler)\b"), "pickle.load"),
    (re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)[^)]*\)"), "torch.load without weights_only=True"),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
]


def test_no_pickle_in_the_code(report):
    files = [ROOT / "app.py", *sorted(p for d in ("metaseg", "prompts_db", "training", "studio")
                                      for p in (ROOT / d).rglob("*.py"))]
    hits = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        for pattern, what in PICKLE_PATTERNS:
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                hits.append(f"{f.relative_to(ROOT)}:{line}: {what}")
    assert not hits, "\n".join(hits)
    report.section("Security: no pickle", [
        f"Scanned {len(files)} files (app.py, metaseg/, prompts_db/, training/, studio/) for pickle imports,",
        "`pickle.load(s)`, `torch.load(` without `weights_only=True` and `allow_pickle=True`: 0 hits.",
    ])


class _Payload:
    """Unpickling this would create ``marker`` (proof that pickle code ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_malicious_pickle_checkpoint_is_rejected(random_checkpoints, tmp_path, report):
    import torch

    from metaseg.checkpoints import load_checkpoint
    from metaseg.errors import CheckpointError

    src = random_checkpoints["metasegnet_demo"]
    meta = src.with_suffix(".json").read_text()
    marker = tmp_path / "PWNED"
    outcomes = []
    for name, blob in (
        ("raw pickle", pickle.dumps(_Payload(marker), protocol=2)),
        ("torch.save zip", None),
    ):
        stem = tmp_path / name.replace(" ", "_")
        weights = stem.with_suffix(".safetensors")
        if blob is None:
            torch.save({"x": _Payload(marker)}, weights)
        else:
            weights.write_bytes(blob)
        stem.with_suffix(".json").write_text(meta)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(weights)
        assert not marker.exists(), "unpickling ran attacker code"
        msg = str(err.value)
        assert "\n" not in msg
        # the same through the CLI: one line, exit 2
        from metaseg.cli import main
        from tests.reliability.test_hostile_cli import run_cli

        tile = write_geotiff(tmp_path / "t.tif", 52.39, 13.06, crs="EPSG:32633", size=32)
        rc, out, stderr = run_cli(main, ["predict", str(tile), "--model", "metasegnet_demo", "--checkpoint",
                                         str(weights), "--out", str(tmp_path / "m.png"), "--prompt", "x"])
        assert rc == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
        assert not marker.exists()
        outcomes.append(f"| {name} renamed `.safetensors` | {short(stderr.strip(), 160)} | no |")
    report.section("Security: malicious checkpoint", [
        "A pickle whose unpickling would create a marker folder, saved as `<stem>.safetensors` next to a",
        "valid `<stem>.json`, loaded with `load_checkpoint` and `metaseg predict --checkpoint`:",
        "",
        "| file | CLI outcome (exit 2) | code ran |",
        "|---|---|---|",
        *outcomes,
    ])


# --------------------------------------------------------------------------- upload names
ODD_NAMES = ["../../evil.tif", "..\\..\\evil2.tif", "/etc/evil3.tif", "a;rm -rf ~ $(id) `x`.tif",
             "\u202egnp.exe.tif", "CON.tif", ".hidden.tif", "x" * 300 + ".tif"]


def test_upload_names_never_become_paths(running_app, tmp_path, report):
    """Raw multipart uploads with hostile file names: stored inside gradio's upload folder under a
    sanitised name, usable by /locate, and nothing is created outside; the app's own copy for the
    session is ``tile-<random>.<suffix>`` in the session folder."""
    import httpx
    from gradio_client import handle_file

    from studio.session import session_root

    tile_bytes = write_geotiff(tmp_path / "ok.tif", 52.39, 13.06, crs="EPSG:32633", size=32).read_bytes()
    upload_root = running_app.gradio_tmp.resolve()
    watch = [upload_root.parent, upload_root.parent.parent, Path("/etc"), ROOT, Path.cwd()]
    before = {d: set(os.listdir(d)) for d in watch if d.is_dir()}
    client = running_app.client()
    rows = []
    for name in ODD_NAMES:
        r = httpx.post(f"{running_app.url}gradio_api/upload", files={"files": (name, tile_bytes, "image/tiff")},
                       timeout=60)
        if r.status_code != 200:
            rows.append(f"| `{short(name, 40)}` | rejected (HTTP {r.status_code}) | — |")
            continue
        stored = Path(r.json()[0]).resolve()
        assert upload_root in stored.parents, f"{name!r} stored at {stored}"
        assert ".." not in stored.relative_to(upload_root).parts
        obj = running_app.call(client, handle_file(str(stored)), None, None, api_name="/locate")
        assert obj["zone"]["code"] == "Cfb"
        rows.append(f"| `{short(name, 40)}` | `…/{short(stored.name, 40)}` inside the upload folder | result (Cfb) |")
    after = {d: set(os.listdir(d)) for d in before}
    created = {str(d): sorted(after[d] - before[d]) for d in before if after[d] - before[d]}
    created.pop(str(upload_root.parent), None) if created.get(str(upload_root.parent)) == [] else None
    suspicious = [f for names in created.values() for f in names if "evil" in f or ";" in f]
    assert not suspicious, created
    for base in (Path("/"), Path("/etc"), upload_root.parent, upload_root.parent.parent):
        assert not list(base.glob("evil*.tif"))

    # The UI handler: the session copy never carries the uploaded name.
    from studio.tabs.locate import on_tile

    odd = tmp_path / "a;b $(id) <x>.tif"
    odd.write_bytes(tile_bytes)
    state = on_tile(str(odd), "openearthmap", None)[0]
    copy = Path(state.tile_path)
    assert copy.parent == session_root() / state.session_id
    assert re.fullmatch(r"tile-[0-9a-f]{8}\.tif", copy.name), copy.name
    report.section("Security: upload file names", [
        "Raw multipart POSTs to `/gradio_api/upload` with hostile names, then `/locate` on the stored file;",
        "directories around the upload folder, `/etc` and the repository were listed before and after.",
        "",
        "| uploaded name | stored as | /locate |",
        "|---|---|---|",
        *rows,
        "",
        "Files created outside the upload folder: none. The Locate handler copies every upload to",
        "`<session dir>/tile-<8 hex>.<allow-listed suffix>`; the user's name never becomes a path.",
    ])


# --------------------------------------------------------------------------- API keys
def test_api_key_never_logged_stored_or_shown(running_app, tmp_path, monkeypatch, capfd, report):
    from prompts_db import PromptStore
    from prompts_db.cli import main as prompts_main
    from tests.fixtures.openai_server import FakeOpenAIServer
    from tests.reliability.test_hostile_cli import run_cli

    log_buf = io.StringIO()
    handler = logging.StreamHandler(log_buf)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    seen: list[str] = []
    try:
        with FakeOpenAIServer() as srv:
            monkeypatch.setenv("OPENAI_API_KEY", SECRET)
            monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
            # 1. library: LLM generation into the store
            with PromptStore() as store:
                rec = store.generate("Cfb", "openearthmap", llm=True)
                seen += [json.dumps(rec.to_full_dict(), default=str), store.export("json"), store.export("csv")]
                seen += [store.export("json", table=t) for t in ("runs", "labels")]
            # 2. the prompts_db CLI (LLM path, then an error path that mentions the configuration)
            rc, out, err = run_cli(prompts_main, ["generate", "--zone", "Dfb", "--class-set", "loveda", "--llm",
                                                  "--json"])
            assert rc == 0, err
            seen += [out, err]
            from prompts_db.errors import LLMError

            with FakeOpenAIServer(fail_next=99) as bad, PromptStore() as store:  # the error text must not carry it
                with pytest.raises(LLMError) as llm_err:
                    store.generate("Af", "openearthmap", llm=True, base_url=bad.base_url, max_retries=0, backoff=0)
                seen.append(str(llm_err.value))
            # 3. the app: regenerate handler (LLM), API endpoints, the page config
            from studio.session import SessionState
            from studio.tabs.describe import on_regenerate

            out = on_regenerate("openearthmap", SessionState(location={"zone": {"code": "Cfb"}}))
            seen.append(repr(out))
            client = running_app.client()
            seen.append(json.dumps(running_app.call(client, "Cfb", "openearthmap", "key test", api_name="/save_prompt")))
            seen.append(json.dumps(running_app.call(client, None, 52.39, 13.06, api_name="/locate")))
            import httpx

            seen.append(httpx.get(f"{running_app.url}config", timeout=30).text)
            seen.append(httpx.get(running_app.url, timeout=30).text)
            assert any(h == f"Bearer {SECRET}" for h in srv.auth_headers)  # the key was really used
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    captured = capfd.readouterr()
    from studio import prompt_store

    db = Path(prompt_store.get_store().path)
    db_bytes = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    places = {
        "log records (DEBUG and up)": log_buf.getvalue(),
        "stdout/stderr": captured.out + captured.err,
        "app responses, page and /config": "\n".join(seen),
        "database bytes (incl. WAL)": db_bytes.decode("latin-1"),
    }
    for where, text in places.items():
        assert SECRET not in text, f"API key found in {where}"
        assert SECRET[8:] not in text, f"part of the API key found in {where}"
    report.section("Security: API keys", [
        "`OPENAI_API_KEY` set to a marker secret, `OPENAI_BASE_URL` to the loopback stand-in",
        "(`tests/fixtures/openai_server.py`); exercised: `PromptStore.generate(llm=True)`, exports,",
        "`python -m prompts_db generate --llm` (success and a failing endpoint), the app's regenerate",
        "handler, `/save_prompt`, `/locate`, the page and `/config`. The stand-in received the key",
        "in its Authorization header (so it was really used).",
        "",
        "| searched | key found |",
        "|---|---|",
        *[f"| {where} | no |" for where in places],
    ])


# --------------------------------------------------------------------------- upload caps
def test_upload_caps_are_configurable_and_enforced(running_app, tmp_path, monkeypatch, report):
    from gradio_client import handle_file

    from metaseg.cli import main
    from tests.reliability.test_hostile_cli import run_cli

    client = running_app.client()
    big = write_geotiff(tmp_path / "big.tif", 52.39, 13.06, crs="EPSG:32633", size=640, dtype="uint16")  # ~2.4 MB
    small = write_geotiff(tmp_path / "small.tif", 52.39, 13.06, crs="EPSG:32633", size=64)
    assert big.stat().st_size > 2 * 2**20
    rows = []

    monkeypatch.setenv("METASEG_MAX_UPLOAD_MB", "1")
    for api, args in (("/locate", (handle_file(str(big)), None, None)), ("/segment", (handle_file(str(big)), "x"))):
        with pytest.raises(Exception, match="limit is 1 MB") as err:
            running_app.call(client, *args, api_name=api)
        rows.append(f"| METASEG_MAX_UPLOAD_MB=1, 2.4 MB GeoTIFF | app {api} | error: {_msg(err.value)} |")
    assert running_app.call(client, handle_file(str(small)), None, None, api_name="/locate")["zone"]["code"] == "Cfb"
    monkeypatch.delenv("METASEG_MAX_UPLOAD_MB")

    monkeypatch.setenv("METASEG_MAX_PIXELS", "1000")
    with pytest.raises(Exception, match="METASEG_MAX_PIXELS") as err:
        running_app.call(client, handle_file(str(small)), "x", api_name="/segment")
    rows.append(f"| METASEG_MAX_PIXELS=1000, 64×64 tile | app /segment | error: {_msg(err.value)} |")
    rc, out, stderr = run_cli(main, ["predict", str(small), "--model", "metasegnet_demo", "--checkpoint", "x",
                                     "--out", str(tmp_path / "m.png")])
    assert rc == 2 and "METASEG_MAX_PIXELS" in stderr and stderr.count("\n") == 1, stderr
    rows.append(f"| METASEG_MAX_PIXELS=1000, 64×64 tile | predict CLI | {_msg(stderr.strip())} (exit 2) |")
    monkeypatch.delenv("METASEG_MAX_PIXELS")
    a, b, fr = running_app.call(client, handle_file(str(small)), "x", api_name="/segment")
    assert set(fr) == {"metasegnet", "baseline"}
    assert running_app.alive(client)
    monkeypatch.setenv("METASEG_MAX_UPLOAD_MB", "3")
    assert running_app.module.launch_kwargs()["max_file_size"] == "3mb"
    rows.append("| METASEG_MAX_UPLOAD_MB=3 at launch | gradio `max_file_size` | 3mb |")
    report.section("Security: upload caps", [
        "| setting and input | surface | outcome |",
        "|---|---|---|",
        *rows,
        "",
        "Both variables are read at request time (the app also passes the upload cap to Gradio's own",
        "`max_file_size` at launch); with them unset the same small tile segments normally.",
    ])


def _msg(exc_or_text) -> str:
    text = str(getattr(exc_or_text, "message", None) or exc_or_text)
    return " ".join(text.split())[:100].replace("|", "/").removeprefix("error: ")


def test_api_cannot_read_arbitrary_server_files(running_app, tmp_path, report):
    """A client naming a server path instead of uploading (FileData with ``path``, posted as raw
    JSON: gradio_client would upload a local file itself) must be refused for files outside
    gradio's upload folder / allowed paths: /etc/passwd, the prompt database, a GeoTIFF elsewhere
    on the server, a ``..`` path out of the upload folder."""
    from studio import prompt_store
    from tests.reliability.test_hostile_app import _raw_call

    secret_tile = write_geotiff(tmp_path / "server_side.tif", 52.39, 13.06, crs="EPSG:32633", size=16)
    rows = []
    for label, path in (("/etc/passwd", "/etc/passwd"), ("the prompt database", str(prompt_store.get_store().path)),
                        ("a GeoTIFF outside the upload folder", str(secret_tile)),
                        ("a `..` path out of the upload folder", f"{running_app.gradio_tmp}/../..{secret_tile}")):
        body = json.dumps({"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, None, None]}).encode()
        answer = _raw_call(running_app.url, "locate", body)
        assert "event: error" in answer and "52.39" not in answer and "root:" not in answer, answer
        rows.append(f"| {label} | refused (`event: error`), nothing read |")
    assert running_app.alive(running_app.client())
    report.section("Security: server files through the API", [
        "`/locate` called with a raw FileData *path* (no upload) pointing at server files:",
        "",
        "| target | outcome |",
        "|---|---|",
        *rows,
    ])


def test_deeply_nested_checkpoint_json_is_rejected(random_checkpoints, tmp_path):
    """Regression: checkpoint metadata nested 200000 levels deep raised RecursionError (traceback)."""
    import shutil

    from metaseg.cli import main
    from tests.reliability.test_hostile_cli import run_cli

    stem = tmp_path / "deep"
    shutil.copy(random_checkpoints["metasegnet_demo"], stem.with_suffix(".safetensors"))
    stem.with_suffix(".json").write_text("[" * 200_000 + "]" * 200_000)
    rc, out, err = run_cli(main, ["info", "--model", "metasegnet_demo", "--checkpoint", str(stem), "--json"])
    assert rc == 2 and err.count("\n") == 1 and "corrupt checkpoint metadata" in err, err
