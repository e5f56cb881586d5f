"""SynthEarth: procedural, climate-conditioned training tiles with exact labels.

The generator lives in :mod:`training.synth.generator` (training data, so it sits with
``training/`` and not in the ``metaseg`` library that the app and inference import);
``python -m training.synth`` is its command line (:mod:`training.synth.cli`).
"""

from training.synth.generator import *  # noqa: F401,F403
from training.synth.generator import (  # noqa: F401  (private-looking names that callers use)
    M_BRIGHT,
    M_DARK,
    M_STRIPED,
    PIXEL_SIZE_M,
    SYNTH_VERSION,
    generate_tile,
    georeference,
    parse_split_fractions,
    parse_zones,
    partner_zone,
    read_manifest,
    region_name,
    sample_location,
    tile_rng,
    write_synthearth,
    zone_rule,
)
