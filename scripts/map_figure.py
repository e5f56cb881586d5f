"""Render the vector output of ``metaseg map`` over its tiles (the README picture).

    python -m metaseg map static/examples/iguacu_landsat8.tif static/examples/synth/synth_{af,bwh,cfa,dfb}.tif \
        --out /tmp/map_example --model metasegnet_demo --workers 2
    python scripts/map_figure.py /tmp/map_example --png docs/map_example.png

One panel per tile: the tile's pixels (as the model saw them) in the tile's own CRS, and the
polygons of ``classes.gpkg`` (EPSG:4326, or whatever ``--vector-crs`` was) projected back onto it,
filled with the class colours and outlined, titled with the tile's id and Köppen zone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def render(out_dir: Path, png: Path, max_tiles: int = 6, dpi: int = 100) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shapely
    from matplotlib.patches import Patch, PathPatch
    from matplotlib.path import Path as MplPath
    from pyogrio.raw import read
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    from metaseg.classes import get_class_set
    from metaseg.geo import read_tile

    summary = json.loads((out_dir / "summary.json").read_text())
    class_set = get_class_set(summary.get("class_set") or "openearthmap")
    colours = {n: tuple(c / 255 for c in rgb) for n, rgb in zip(class_set.names, class_set.colors, strict=True)}
    meta, _, geoms, fields = read(str(summary["vector"]))
    names = list(meta["fields"])
    cls, tiles = fields[names.index("class")], fields[names.index("tile")]
    vector_crs = meta["crs"]
    done = [t for t in summary["tiles"] if t["status"] in ("ok", "skipped")][:max_tiles]
    fig, axes = plt.subplots(1, len(done), figsize=(3.3 * len(done), 3.9), squeeze=False)
    for ax, rec in zip(axes[0], done, strict=True):
        tile = read_tile(rec["path"])
        a = tile.info.transform  # GDAL order: x0, dx, rx, y0, ry, dy (north up)
        x0, y0 = a[0], a[3]
        x1, y1 = x0 + a[1] * tile.info.width, y0 + a[5] * tile.info.height
        ax.imshow(tile.rgb, extent=(x0, x1, y1, y0) if a[5] > 0 else (x0, x1, y1, y0), interpolation="nearest")
        sel = np.flatnonzero(tiles == rec["id"])
        local = transform_geom(vector_crs, tile.info.crs, [mapping(shapely.from_wkb(geoms[i])) for i in sel])
        for i, g in zip(sel, local, strict=True):
            geom = shape(g)
            for poly in getattr(geom, "geoms", [geom]):
                rings = [poly.exterior, *poly.interiors]
                verts = np.concatenate([np.asarray(r.coords) for r in rings])
                codes = np.concatenate([[MplPath.MOVETO] + [MplPath.LINETO] * (len(r.coords) - 2) + [MplPath.CLOSEPOLY]
                                        for r in rings])
                ax.add_patch(PathPatch(MplPath(verts, codes), facecolor=(*colours[cls[i]], 0.45),
                                       edgecolor=colours[cls[i]], linewidth=0.6))
        ax.set_xlim(min(x0, x1), max(x0, x1))
        ax.set_ylim(min(y0, y1), max(y0, y1))
        ax.set_title(f"{rec['id']}\nzone {rec['zone'] or '—'}, {len(sel)} polygons", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(tile.info.crs, fontsize=7)
    present = sorted(set(cls), key=list(class_set.names).index)
    fig.legend(handles=[Patch(facecolor=colours[n], edgecolor="k", linewidth=0.3, label=n) for n in present],
               loc="lower center", ncol=min(len(present), 8), fontsize=8, frameon=False)
    fig.suptitle("metaseg map: class polygons (classes.gpkg) over their tiles, each tile with its own zone's prompt",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=dpi)
    plt.close(fig)
    from PIL import Image

    with Image.open(png) as im:  # a palette PNG is a third of the size and looks the same here
        im.convert("RGB").quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    return png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder of a metaseg map job")
    parser.add_argument("--png", type=Path, default=Path("docs/map_example.png"))
    args = parser.parse_args()
    print(render(args.out, args.png))


if __name__ == "__main__":
    main()
