"""`python -m prompts_db` command line: outputs, JSON keys and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prompts_db.cli import main

REPO = Path(__file__).resolve().parents[2]
KEYS = {"id", "zone", "class_set", "text", "source", "parent_id", "token_count", "created_at"}


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_show_generate_edit_history_restore(capsys, tmp_path):
    code, out, _ = run(capsys, "list", "--zone", "Cfb", "--class-set", "potsdam", "--json")
    items = json.loads(out)
    assert code == 0 and len(items) == 1 and set(items[0]) == KEYS
    first = items[0]
    code, out, _ = run(capsys, "show", str(first["id"]), "--json")
    assert json.loads(out) == first
    code, out, _ = run(capsys, "generate", "--zone", "cfb", "--class-set", "potsdam", "--json")
    gen = json.loads(out)
    assert code == 0 and gen["source"] == "template" and gen["parent_id"] == first["id"]
    code, out, _ = run(capsys, "edit", str(gen["id"]), "--text", "my words", "--json")
    ed = json.loads(out)
    assert (ed["source"], ed["parent_id"], ed["text"], ed["zone"]) == ("user", gen["id"], "my words", "Cfb")
    f = tmp_path / "t.txt"
    f.write_text("from a file\nsecond line", encoding="utf-8")
    code, out, _ = run(capsys, "edit", str(ed["id"]), "--file", str(f), "--json")
    assert json.loads(out)["text"] == "from a file\nsecond line"
    code, out, _ = run(capsys, "history", str(first["id"]), "--json")
    hist = json.loads(out)
    assert [h["parent_id"] for h in hist][:3] == [ed["id"], gen["id"], first["id"]]
    assert all(set(h) == KEYS for h in hist) and len(hist) == 4
    code, out, _ = run(capsys, "restore", str(first["id"]))
    assert code == 0 and "version 5" in out
    code, out, _ = run(capsys, "list", "--zone", "Cfb")
    assert code == 0 and len(out.strip().splitlines()) == 3 + 4


def test_export(capsys, tmp_path):
    out_file = tmp_path / "p.csv"
    assert run(capsys, "export", "--format", "csv", "--out", str(out_file))[0] == 0
    assert out_file.read_text().startswith("id,zone,class_set")
    code, out, _ = run(capsys, "export", "--format", "json")
    assert code == 0 and len(json.loads(out)) == 96


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "99999"],
        ["show", "abc"],
        ["history", "99999"],
        ["restore", "99999"],
        ["edit", "99999", "--text", "x"],
        ["edit", "1"],
        ["edit", "1", "--text", "   "],
        ["edit", "1", "--file", "/nonexistent/file.txt"],
        ["list", "--zone", "Zz"],
        ["list", "--class-set", "cityscapes"],
        ["generate", "--zone", "Qq", "--class-set", "loveda"],
        ["generate", "--zone", "Cfa", "--class-set", "nope"],
        ["generate", "--zone", "Cfa", "--class-set", "loveda", "--llm"],  # no key / base URL
        ["export", "--format", "xml"],
        ["frobnicate"],
        [],
    ],
)
def test_user_errors_exit_2_with_one_line(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_real_subprocess_no_traceback():
    out = subprocess.run(
        [sys.executable, "-m", "prompts_db", "show", "424242", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == "error: no prompt with id 424242"


def test_generate_llm_through_env_configured_server(capsys, monkeypatch):
    from tests.fixtures.openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-cli-test")
        code, out, err = run(capsys, "generate", "--zone", "Aw", "--class-set", "potsdam", "--llm", "--json")
    rec = json.loads(out)
    assert code == 0 and set(rec) == KEYS and rec["source"] == "llm:gpt-4o-mini"
    assert len(srv.requests) == 6 and "In Aw the car looks distinctive." in rec["text"]
    assert "sk-cli-test" not in out + err
