"""Ground-sample-distance notes and resampling a tile to the model's trained GSD."""

from __future__ import annotations

import numpy as np

from metaseg.checkpoints import GSD_FAR, gsd_check  # noqa: F401 - one GSD rule for the app and the CLI
from studio.labels import IGNORE
from studio.models import segment_model
from studio.pair import PairResult, run_pair


def model_gsd_range(role: str = "metasegnet", sources: dict[str, str] | None = None) -> tuple[float, float] | None:
    """``(min, max)`` m/px the model was trained on (recorded in its checkpoint, else its defaults)."""
    from metaseg.checkpoints import gsd_range_m

    p = segment_model(role, sources).predictor
    meta = dict(getattr(p, "meta", {}) or {})
    cs = getattr(getattr(p, "class_set", None), "name", None)
    if cs and "class_set" not in meta:
        meta["class_set"] = cs
    return gsd_range_m(meta)


def gsd_note(tile_gsd: float | None, rng: tuple[float, float] | None, resampled_to: float | None = None,
             resample_asked: bool = False) -> str:
    """One plain sentence about the tile's GSD against the model's (empty when unknown);
    ``resample_asked``: the visitor ticked "Resample" — say so when it did nothing."""
    kind, target = gsd_check(tile_gsd, rng)
    if resample_asked and not resampled_to:
        return resample_skipped_note(kind, tile_gsd, rng) + (" " + gsd_note(tile_gsd, rng) if kind != "unknown" else "")
    if kind == "unknown":
        return ""
    lo, hi = rng
    model = f"{lo:g} m/px" if lo == hi else f"{lo:g}–{hi:g} m/px"
    tile = f"{tile_gsd:.3g} m/px"
    if resampled_to:
        return (f"Ground sample distance: the tile is {tile}; it was resampled to {resampled_to:g} m/px (the model "
                f"was trained on {model}) for prediction, and the masks brought back to the tile's grid.")
    if kind == "coarser":
        return (f"⚠️ Ground sample distance: this tile is {tile}, about {tile_gsd / hi:.0f}× coarser than the "
                f"{model} the model was trained on. Objects are far smaller than the model expects: treat "
                "this result with great caution.")
    if kind == "finer":
        return (f"⚠️ Ground sample distance: this tile is {tile}, about {lo / tile_gsd:.0f}× finer than the "
                f"{model} the model was trained on. Tick “Resample to the model's GSD” and segment again "
                f"to predict at {target:g} m/px.")
    return f"Ground sample distance: {tile} (the model was trained on {model})."


def resample_skipped_note(kind: str, tile_gsd: float | None, rng: tuple[float, float] | None) -> str:
    """Why "Resample to the model's GSD" changed nothing for this tile."""
    if kind == "unknown":
        return ("Resampling did nothing: " + ("the tile's ground sample distance is unknown (no georeference)."
                                             if not tile_gsd else "the model does not record its training GSD."))
    lo, hi = rng
    model = f"{lo:g} m/px" if lo == hi else f"{lo:g}–{hi:g} m/px"
    if kind == "coarser":
        return (f"Resampling did nothing: it only shrinks tiles much finer than the model's {model}; this tile "
                f"({tile_gsd:.3g} m/px) is coarser, and enlarging it adds no detail.")
    return (f"Resampling did nothing: the tile ({tile_gsd:.3g} m/px) is already close to the model's {model}; "
            "it was segmented as it is.")


def resample(rgb: np.ndarray, valid: np.ndarray | None, factor: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Shrink a tile by ``factor`` (> 1; area-averaged pixels, nearest-neighbour validity)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
    if valid is None:
        return small, None
    v = np.asarray(Image.fromarray(np.asarray(valid, np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 127
    return small, v


def upsample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A class mask back onto a ``shape`` grid (nearest neighbour)."""
    from PIL import Image

    return np.asarray(Image.fromarray(mask).resize((shape[1], shape[0]), Image.Resampling.NEAREST))


def run_pair_at_gsd(rgb: np.ndarray, valid: np.ndarray | None, prompt: str, tile_gsd: float | None,
                    target_gsd: float | None, progress=None, allow_empty: bool = False,
                    sources: dict[str, str] | None = None) -> PairResult:
    """:func:`run_pair` at ``target_gsd`` (tile shrunk first, masks brought back to the tile grid)."""
    if not tile_gsd or not target_gsd or target_gsd <= tile_gsd:
        return run_pair(rgb, valid, prompt, progress=progress, allow_empty=allow_empty, sources=sources)
    small, small_valid = resample(rgb, valid, target_gsd / tile_gsd)
    result = run_pair(small, small_valid, prompt, progress=progress, allow_empty=allow_empty, sources=sources)
    shape = rgb.shape[:2]
    result.metasegnet = upsample_mask(result.metasegnet, shape)
    result.baseline = upsample_mask(result.baseline, shape)
    if valid is not None:
        result.metasegnet[~np.asarray(valid, bool)] = IGNORE
        result.baseline[~np.asarray(valid, bool)] = IGNORE
    return result
