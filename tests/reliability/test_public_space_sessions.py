"""Two gradio_client sessions on loopback, end to end through the app's API (issue 21).

Session A uploads a tile, segments it, paints and saves a label and starts an experiment on its
labelled tiles; session B, on the same server at the same time, must not reach any of it: B has
no tile (its Segment asks for one), its labelled set is empty, A's experiment is neither in B's
list nor openable by id. A's hostile model string never shows up in B's answers.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.geotiffs import write_geotiff

LABELLED = "labelled tiles in the store"
MARKUP = '<a href="http://evil.example/x">click</a><img src=x onerror=alert(1)>'


def _msg(exc) -> str:
    return " ".join(str(getattr(exc, "message", None) or exc).split())


def _refused(app, client, *args, api_name: str, timeout: float = 120) -> str:
    with pytest.raises(Exception) as err:  # noqa: PT011 - gradio_client's AppError
        app.call(client, *args, api_name=api_name, timeout=timeout)
    return _msg(err.value)


def _choices(update) -> list:
    return [c[1] if isinstance(c, (list, tuple)) else c for c in (update or {}).get("choices", [])]


def test_two_api_sessions_keep_tiles_labels_and_experiments_apart(running_app, tmp_path, monkeypatch, report):
    from gradio_client import handle_file
    from PIL import Image

    from metaseg.classes import get_class_set

    monkeypatch.delenv("METASEG_SHARE_LABELS", raising=False)
    monkeypatch.delenv("METASEG_SHARE_EXPERIMENTS", raising=False)
    monkeypatch.setenv("METASEG_VISITOR_EXPERIMENTS", "1")
    tile = write_geotiff(tmp_path / "a_tile.tif", 52.39, 13.06, crs="EPSG:32633", size=48, seed=21)
    painted = tmp_path / "painted.png"
    index = np.zeros((48, 48), np.uint8)
    index[:, 24:] = 1
    Image.fromarray(get_class_set("openearthmap").colorize(index)).save(painted)
    a, b = running_app.client(), running_app.client()
    lines = []

    # A's tile is A's: B has none.
    running_app.call(a, handle_file(str(tile)), "openearthmap", api_name="/on_tile", timeout=120)
    running_app.call(a, "fields and a river", 0.5, "openearthmap", False, False, api_name="/on_segment", timeout=180)
    msg = _refused(running_app, b, "fields", 0.5, "openearthmap", False, False, api_name="/on_segment")
    assert "Load a tile first" in msg, msg
    lines.append(f"A uploads and segments a tile; B's Segment (`/on_segment`) answers \"{msg[:60]}\".")

    # A's label is A's: B, on the very same tile, has no labelled set.
    editor = {"background": None, "layers": [], "composite": handle_file(str(painted))}  # an API client's colour mask
    out = running_app.call(a, editor, "openearthmap", "", api_name="/on_label_save", timeout=120)
    assert "Saved label #" in str(out), out
    running_app.call(b, handle_file(str(tile)), "openearthmap", api_name="/on_tile", timeout=120)
    msg = _refused(running_app, b, LABELLED, "synthearth", "", "test", api_name="/on_scan")
    assert "no saved labels" in msg, msg
    running_app.call(a, LABELLED, "synthearth", "", "test", api_name="/on_scan", timeout=120)
    lines.append(f"A saves a painted label (`/on_label_save`); B loads the same tile and scans \"labelled tiles in "
                 f"the store\": \"{msg[:70]}\".")

    # A's experiment is A's.
    out = running_app.call(a, LABELLED, "synthearth", "", "test", ["climate"], [], 0,
                           api_name="/on_start", timeout=300)
    ids_a = _choices(out[-1])
    assert ids_a, out
    exp_id = ids_a[0]
    assert exp_id not in _choices(running_app.call(b, None, api_name="/on_refresh", timeout=60))
    msg = _refused(running_app, b, exp_id, api_name="/on_show")
    # refused by the handler, or already by Gradio (the id is not among B's dropdown choices)
    assert f"No experiment #{exp_id} in this session" in msg or "not in the list of choices: []" in msg, msg
    lines.append(f"A runs an experiment on its labelled tile (#{exp_id}); it is not in B's list (`/on_refresh`) and "
                 f"B's `/on_show` of its id answers \"{msg[:50]}\".")

    # A's hostile model string is refused for A and reaches nothing of B's.
    msg_a = _refused(running_app, a, MARKUP, "", api_name="/on_load_checkpoints")
    assert "<a" not in msg_a and "<img" not in msg_a and "&lt;" in msg_a, msg_a
    table_b = running_app.call(b, api_name="/models_table", timeout=60)
    assert "evil" not in str(table_b) and "<" not in str(table_b)
    fractions = running_app.call(b, handle_file(str(tile)), "fields", api_name="/segment", timeout=180)[2]
    assert "evil" not in str(fractions)
    lines.append("A's Models-tab value holding a link and an `<img onerror>` is refused (escaped in A's pop-up);")
    lines.append("B's Models table and `/segment` answer as before, with nothing of it.")
    report.section("Public Space: two API sessions end to end", lines)
