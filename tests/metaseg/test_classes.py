"""Class sets: names, official colours and the three official label encodings."""

from __future__ import annotations

import numpy as np
import pytest

from metaseg.classes import CLASS_SETS, IGNORE_INDEX, get_class_set
from metaseg.errors import MetasegError, TileReadError, UnknownNameError


def test_three_sets_with_expected_sizes_and_zones():
    assert set(CLASS_SETS) == {"openearthmap", "loveda", "potsdam"}
    oem, lov, pot = (get_class_set(n) for n in ("openearthmap", "loveda", "potsdam"))
    assert oem.num_classes == 8 and lov.num_classes == 7 and pot.num_classes == 6
    assert oem.names[0] == "bareland" and oem.names[-1] == "building"
    assert lov.names == ("background", "building", "road", "water", "barren", "forest", "agriculture")
    assert pot.names[-1] == "clutter"
    assert (oem.default_zone, lov.default_zone, pot.default_zone) == (None, "Cfa", "Cfb")
    assert pot.scored == (0, 1, 2, 3, 4)  # clutter not in the means
    assert oem.scored == tuple(range(8)) and lov.scored == tuple(range(7))
    assert all(cs.ignore_index == IGNORE_INDEX == 255 for cs in CLASS_SETS.values())


def test_official_colours():
    oem = get_class_set("openearthmap")
    assert oem.colors[0] == (0x80, 0, 0) and oem.colors[7] == (0xDE, 0x1F, 0x07)
    assert get_class_set("loveda").colors[4] == (0x9F, 0x81, 0xB7)
    pot = get_class_set("potsdam")
    assert pot.colors == (
        (255, 255, 255),
        (0, 0, 255),
        (0, 255, 255),
        (0, 255, 0),
        (255, 255, 0),
        (255, 0, 0),
    )
    assert pot.legend()[1] == ("building", "#0000FF")


def test_unknown_set_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        get_class_set("cityscapes")
    msg = str(err.value)
    assert "cityscapes" in msg and "openearthmap" in msg and "loveda" in msg and "potsdam" in msg
    assert isinstance(err.value, MetasegError) and "\n" not in msg
    assert get_class_set(" LoveDA ").name == "loveda"


def test_openearthmap_decode_encode():
    oem = get_class_set("openearthmap")
    raw = np.array([[0, 1, 2], [8, 9, 255]], dtype=np.uint8)
    idx = oem.decode(raw)
    assert idx.dtype == np.uint8
    assert idx.tolist() == [[255, 0, 1], [7, 255, 255]]
    assert oem.encode(idx).tolist() == [[0, 1, 2], [8, 0, 0]]
    # (H, W, 1) from a single-band reader
    assert oem.decode(raw[..., None]).tolist() == idx.tolist()


def test_loveda_decode_encode_roundtrip():
    lov = get_class_set("loveda")
    raw = np.arange(0, 9, dtype=np.uint8).reshape(3, 3)
    idx = lov.decode(raw)
    assert idx.ravel().tolist() == [255, 0, 1, 2, 3, 4, 5, 6, 255]
    back = lov.encode(idx)
    assert back.ravel().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0]
    rng = np.random.default_rng(0)
    r = rng.integers(1, 8, size=(16, 16)).astype(np.uint8)
    assert np.array_equal(lov.encode(lov.decode(r)), r)


def test_potsdam_rgb_decode_boundary_and_unknown_colours_ignored():
    pot = get_class_set("potsdam")
    rgb = np.array(
        [
            [[255, 255, 255], [0, 0, 255], [0, 255, 255]],
            [[0, 255, 0], [255, 255, 0], [255, 0, 0]],
            [[0, 0, 0], [12, 34, 56], [254, 255, 255]],
        ],
        dtype=np.uint8,
    )
    idx = pot.decode(rgb)
    assert idx.tolist() == [[0, 1, 2], [3, 4, 5], [255, 255, 255]]
    enc = pot.encode(idx)
    assert enc.shape == (3, 3, 3)
    assert np.array_equal(enc[:2], rgb[:2])
    assert (enc[2] == 0).all()  # ignore -> black, the eroded-boundary colour
    rgba = np.concatenate([rgb, np.full((3, 3, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(pot.decode(rgba), idx)


def test_potsdam_rejects_single_band():
    with pytest.raises(TileReadError):
        get_class_set("potsdam").decode(np.zeros((4, 4), np.uint8))
    with pytest.raises(TileReadError):
        get_class_set("loveda").decode(np.zeros((2, 4, 5), np.uint8))


def test_colour_label_of_single_band_set_decodes_by_palette():
    oem = get_class_set("openearthmap")
    idx = np.array([[0, 5], [7, 255]], dtype=np.uint8)
    assert oem.decode(oem.colorize(idx))[0].tolist() == [0, 5]
    assert oem.decode(oem.colorize(idx))[1, 0] == 7


def test_colorize_ignore_is_black():
    lov = get_class_set("loveda")
    idx = np.array([[0, 1], [255, 42]], dtype=np.uint8)
    rgb = lov.colorize(idx)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[0, 1].tolist() == [255, 0, 0]
    assert rgb[1].tolist() == [[0, 0, 0], [0, 0, 0]]


def test_index_of():
    assert get_class_set("potsdam").index_of("car") == 4
    with pytest.raises(UnknownNameError, match="valid"):
        get_class_set("potsdam").index_of("boat")


def test_module_is_torch_free():
    import subprocess
    import sys

    code = "import sys, metaseg.classes; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
