"""metaseg.visualize: overlays, legends, disagreement maps, area shares (torch-free)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from metaseg import visualize as vz
from metaseg.classes import get_class_set

OEM = get_class_set("openearthmap")


@pytest.fixture()
def mask() -> np.ndarray:
    m = np.zeros((4, 5), dtype=np.uint8)
    m[0, :] = 1
    m[1, :2] = 7
    m[3, 4] = 255
    return m


def test_overlay_blends_and_keeps_ignore(mask):
    rgb = np.full((4, 5, 3), 100, dtype=np.uint8)
    out = vz.overlay(rgb, mask, OEM, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    exp = np.rint(np.array([100, 100, 100]) * 0.5 + np.array(OEM.colors[1]) * 0.5)
    np.testing.assert_array_equal(out[0, 0], exp)
    np.testing.assert_array_equal(out[3, 4], [100, 100, 100])  # ignore: tile untouched
    np.testing.assert_array_equal(vz.overlay(rgb, mask, OEM, alpha=0.0), rgb)
    np.testing.assert_array_equal(vz.overlay(rgb, mask, OEM, alpha=1.0)[1, 0], OEM.colors[7])


def test_overlay_rejects_size_mismatch(mask):
    with pytest.raises(ValueError, match="5x4"):
        vz.overlay(np.zeros((3, 5, 3), np.uint8), mask, OEM)


def test_colorize_ignore_black(mask):
    col = OEM.colorize(mask)
    np.testing.assert_array_equal(col[3, 4], [0, 0, 0])
    np.testing.assert_array_equal(col[0, 0], OEM.colors[1])


def test_legend_image_lists_present_classes():
    full = vz.legend_image(OEM)
    part = vz.legend_image(OEM, present=[0, 3, 255])
    assert isinstance(full, Image.Image) and full.mode == "RGB"
    assert part.height < full.height
    arr = np.asarray(part)
    # the swatch colours of the listed classes appear, an unlisted one does not
    for i in (0, 3):
        assert (arr == np.array(OEM.colors[i], np.uint8)).all(axis=2).any()
    assert not (arr == np.array(OEM.colors[5], np.uint8)).all(axis=2).any()


def test_legend_html_escapes_names():
    from dataclasses import replace

    evil = replace(OEM, names=("<b>x</b>",) + OEM.names[1:])
    html = vz.legend_html(evil)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert html.count("metaseg-legend-item") == OEM.num_classes
    assert "#800000" in vz.legend_html(OEM)  # bareland's official colour


def test_disagreement_map_highlights_only_differences():
    a = np.array([[0, 1], [2, 255]], np.uint8)
    b = np.array([[0, 2], [2, 3]], np.uint8)
    out = vz.disagreement_map(a, b)
    hit = (out == np.array(vz.DISAGREE_COLOR, np.uint8)).all(axis=2)
    np.testing.assert_array_equal(hit, [[False, True], [False, False]])
    rgb = np.full((2, 2, 3), 200, np.uint8)
    out2 = vz.disagreement_map(a, b, rgb)
    assert out2[0, 0, 0] == out2[0, 0, 1] < 200  # dimmed grey background
    assert vz.disagreement_fraction(a, b) == pytest.approx(1 / 3)


def test_only_one_right_map_colours():
    gt = np.array([[1, 1, 1, 1, 255]], np.uint8)
    a = np.array([[1, 1, 0, 0, 1]], np.uint8)
    b = np.array([[1, 0, 1, 0, 1]], np.uint8)
    out = vz.only_one_right_map(a, b, gt)
    expected = [vz.BOTH_RIGHT_COLOR, vz.A_ONLY_COLOR, vz.B_ONLY_COLOR, vz.BOTH_WRONG_COLOR, vz.IGNORE_COLOR]
    np.testing.assert_array_equal(out[0], np.array(expected, np.uint8))
    assert vz.legend_entries_image(vz.ONLY_ONE_RIGHT_LEGEND).width > 40


def test_class_fractions_excludes_ignore(mask):
    fr = vz.class_fractions(mask, OEM)
    assert list(fr) == list(OEM.names)
    valid = 19
    assert fr[OEM.names[1]] == pytest.approx(5 / valid)
    assert fr[OEM.names[7]] == pytest.approx(2 / valid)
    assert fr[OEM.names[0]] == pytest.approx(12 / valid)
    assert sum(fr.values()) == pytest.approx(1.0)
    empty = vz.class_fractions(np.full((3, 3), 255, np.uint8), OEM)
    assert set(empty.values()) == {0.0}


def test_visualize_and_export_do_not_import_torch():
    code = "import sys, metaseg.visualize, metaseg.export; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
