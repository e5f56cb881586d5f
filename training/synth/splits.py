"""Train/val/test splits of a SynthEarth set, rounded over the whole set."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from metaseg.errors import ConfigError


def parse_split_fractions(text: str | Sequence[float] | None) -> tuple[float, float, float]:
    """``"0.7,0.15,0.15"`` → normalised (train, val, test) fractions."""
    if text is None:
        return (0.7, 0.15, 0.15)
    try:
        vals = [float(x) for x in (text.split(",") if isinstance(text, str) else text)]
    except ValueError as exc:
        raise ConfigError(
            f"--split-fractions must be three numbers like 0.7,0.15,0.15, got {text!r}"
        ) from exc
    if len(vals) != 3 or min(vals) < 0 or sum(vals) <= 0 or not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"--split-fractions must be three non-negative numbers, got {text!r}")
    s = sum(vals)
    return (vals[0] / s, vals[1] / s, vals[2] / s)


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """(train, val, test) tile counts for ``n`` tiles, rounded over the whole set.

    Largest remainders (each count is within one tile of ``n × fraction``), then every split with
    a non-zero fraction gets at least one tile whenever ``n`` allows (taken from the largest split;
    with fewer tiles than such splits, train comes first, then val, then test).
    """
    n = int(n)
    quotas = [n * f for f in fractions]
    counts = [int(math.floor(q)) for q in quotas]
    order = sorted(range(3), key=lambda k: (-(quotas[k] - counts[k]), k))
    for k in order[: n - sum(counts)]:
        counts[k] += 1
    wanted = [k for k in range(3) if fractions[k] > 0]
    for k in wanted[:n]:
        if counts[k] == 0:
            donor = max(range(3), key=lambda j: (counts[j], -j))
            counts[donor] -= 1
            counts[k] += 1
    return counts[0], counts[1], counts[2]


def assign_splits(n: int, codes: Sequence[str], fractions: tuple[float, float, float], seed: int) -> dict[int, str]:
    """Tile index → ``"train"``/``"val"``/``"test"`` for ``n`` tiles dealt round-robin over ``codes``.

    Counts come from :func:`split_counts` (the whole set, not per zone). The tiles are ordered so
    that zones alternate (each zone's tiles shuffled, zones taken in a shuffled order, first the
    first tile of every zone, then the second, ...), and val, then test take the front of that
    order: small val/test splits draw from as many zones as possible. Deterministic in ``seed``.
    """
    n = int(n)
    rng = np.random.default_rng([int(seed), 2**31 - 1])
    per_zone: dict[str, list[int]] = {c: [] for c in codes}
    for i in range(n):
        per_zone[codes[i % len(codes)]].append(i)
    zone_rank = {c: r for r, c in enumerate(codes[k] for k in rng.permutation(len(codes)))}
    keyed = []
    for c in codes:
        members = per_zone[c]
        for pos, k in enumerate(rng.permutation(len(members))):
            keyed.append(((pos, zone_rank[c]), members[k]))
    ordered = [i for _, i in sorted(keyed)]
    n_train, n_val, n_test = split_counts(n, fractions)
    names = ["val"] * n_val + ["test"] * n_test + ["train"] * n_train
    return dict(zip(ordered, names, strict=True))
