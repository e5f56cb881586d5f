"""Write the SynthEarth part of the int8 calibration set to ``static/calibration/``.

One 256×256 SynthEarth tile per training zone, generated with seed 4242
(:data:`metaseg.backends.CALIBRATION_SEED`). The held-out test set of the benchmarks is
generated with seed 12345 and is never used for calibration. Together with the five tiles of
``static/examples/`` these are the tiles ``onnx-int8`` is calibrated on (see
:func:`metaseg.backends.calibration_tiles`).

    python scripts/make_calibration_set.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from metaseg.backends import CALIBRATION_DIR, CALIBRATION_SEED
from training.synth import DEFAULT_ZONES, generate_tile

SIZE = 256


def main() -> None:
    CALIBRATION_DIR.mkdir(parents=True, exist_ok=True)
    for i, zone in enumerate(DEFAULT_ZONES):
        tile = generate_tile(zone, SIZE, seed=CALIBRATION_SEED, index=i)
        path = Path(CALIBRATION_DIR) / f"calib_{zone}_{i}.png"
        Image.fromarray(tile.image).save(path, optimize=True)
        print(path)


if __name__ == "__main__":
    main()
