"""One nodata rule through every path that reads a tile (metaseg.geo is the one reader).

A georeferenced OpenEarthMap tile whose left quarter is nodata (GeoTIFF nodata value) is read by
the training dataset reader, ``training.sweep.read_tile``, the ``metaseg map`` job and the app:
the dataset and the sweep label those pixels 255 (never learned from, never scored), the map
leaves them out of the mask (255), and the app's reader marks them invalid. If any path ignored
nodata, its assertion below would fail.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import rasterio

from metaseg.classes import IGNORE_INDEX
from tests.fixtures.datasets import make_openearthmap

SIZE = 64
NODATA_COLS = 16


def _tile_with_nodata(tmp_path):
    root = make_openearthmap(tmp_path / "oem", n=4, size=SIZE, seed=3)
    name = (root / "train.txt").read_text().split()[0]
    image = next(root.glob(f"*/images/{name}"))
    with rasterio.open(image) as src:
        pixels, profile = src.read(), src.profile
    pixels = np.maximum(pixels, 1)  # no accidental nodata elsewhere
    pixels[:, :, :NODATA_COLS] = 0
    profile.update(nodata=0)
    with warnings.catch_warnings(), rasterio.open(image, "w", **profile) as dst:
        warnings.simplefilter("ignore")
        dst.write(pixels)
    region = np.zeros((SIZE, SIZE), dtype=bool)
    region[:, :NODATA_COLS] = True
    label = image.parent.parent / "labels" / name
    return root, image, label, region


def test_every_reader_treats_the_same_pixels_as_nodata(tmp_path):
    from metaseg.cli import main as metaseg_main
    from studio import services
    from training.datasets import build_dataset
    from training.sweep import read_tile as sweep_read

    root, image, label, region = _tile_with_nodata(tmp_path)
    with rasterio.open(label) as src:
        raw = src.read(1)
    assert (raw[region] != 0).any(), "the fixture must label some nodata pixels, or the test proves nothing"

    ds = build_dataset("openearthmap", root, "train", prompt_mode="none")
    index = next(i for i, s in enumerate(ds.samples) if s.image == image)
    _, ds_label = ds.load_arrays(index)
    assert (ds_label[region] == IGNORE_INDEX).all()
    assert (ds_label[~region] != IGNORE_INDEX).any()

    _, sweep_label = sweep_read(str(image), str(label), "openearthmap")
    np.testing.assert_array_equal(sweep_label, ds_label)

    tile = services.read_tile(image)
    assert tile.valid is not None
    np.testing.assert_array_equal(~tile.valid, region)

    out = tmp_path / "map"
    assert metaseg_main(["map", str(image), "--out", str(out), "--model", "metasegnet_demo",
                         "--workers", "1", "--json"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [t["status"] for t in summary["tiles"]] == ["ok"]
    with rasterio.open(next((out / "masks").glob("*.tif"))) as src:
        mask = src.read(1)
    assert (mask[region] == IGNORE_INDEX).all()
    assert (mask[~region] != IGNORE_INDEX).all()
