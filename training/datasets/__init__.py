"""Dataset readers for training and evaluation.

``build_dataset(name, root, split, ...)`` returns a ``torch.utils.data.Dataset`` whose items are
``{"image": float32 3×H×W in [0, 1] RGB, "label": int64 H×W (255 = ignore), "prompt": str,
"zone": str | None, "id": str}``. Batch them with :func:`collate_samples` (the default collate
cannot stack ``zone=None``). Layouts, label choices and prompt rules are documented in each
reader module and in :mod:`training.datasets.prompts`.
"""

from __future__ import annotations

from pathlib import Path

from metaseg.errors import ConfigError, UnknownNameError
from training.config import DATASET_CLASS_SETS
from training.config import DATASET_NAMES as DATASETS

from .base import IGNORE_INDEX, Sample, SegmentationDataset, collate_samples
from .prompts import PROMPT_MODES, PromptResolver, check_prompt_mode, wrong_zone


def build_dataset(
    name: str,
    root: str | Path,
    split: str,
    image_size: int | None = None,
    prompt_mode: str = "climate",
    store=None,
    augment: bool = False,
) -> SegmentationDataset:
    """Build a reader for one split of a dataset in its official layout.

    Args:
        name: ``openearthmap`` | ``loveda`` | ``potsdam`` | ``synthearth``.
        root: dataset root (Potsdam: the output of ``python -m training.potsdam_split``).
        split: ``train`` | ``val`` | ``test``.
        image_size: resize every tile to image_size×image_size (``None`` keeps tile sizes).
        prompt_mode: ``climate`` | ``generic`` | ``none`` | ``wrong`` (see ``prompts.py``).
        store: a ``prompts_db.PromptStore``; ``None`` opens the default store when needed.
        augment: random horizontal and vertical flips.

    Raises:
        UnknownNameError: unknown dataset name.
        DatasetNotFoundError: the root lacks the expected layout (message says what and where).
        ConfigError: bad ``prompt_mode`` or ``image_size``.
    """
    key = str(name).strip().lower()
    if key not in DATASETS:
        raise UnknownNameError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    check_prompt_mode(prompt_mode)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise ConfigError(f"image_size must be a positive integer or null, got {image_size!r}")
    kwargs = dict(image_size=image_size, prompt_mode=prompt_mode, store=store, augment=augment)
    if key == "openearthmap":
        from .openearthmap import OpenEarthMap

        return OpenEarthMap(root, split, **kwargs)
    if key == "loveda":
        from .loveda import LoveDA

        return LoveDA(root, split, **kwargs)
    if key == "potsdam":
        from .potsdam import Potsdam

        return Potsdam(root, split, **kwargs)
    from .synthearth import SynthEarth

    return SynthEarth(root, split, **kwargs)


__all__ = [
    "DATASETS", "DATASET_CLASS_SETS", "IGNORE_INDEX", "PROMPT_MODES", "PromptResolver", "Sample",
    "SegmentationDataset", "build_dataset", "check_prompt_mode", "collate_samples", "wrong_zone",
]
