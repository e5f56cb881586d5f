"""The text side of a run: model config of the variant, ITM negatives, prompt bookkeeping.

ITM negatives: every MetaSegNet step gets, per sample, the prompt of another climate zone for
the same class set (from ``prompts_db``; zone ≠ the sample's zone and text ≠ its prompt, drawn
with a seeded generator). :func:`itm_signal` says what L_itm can learn from them in a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from metaseg.errors import MetasegError

from ..config import TrainConfig

log = logging.getLogger("training.train")


def model_config_for(cfg: TrainConfig, class_set: str | None = None):
    """The ``MetaSegNetConfig`` a run builds: variant defaults, ``model_overrides``, top-level ``pretrained``."""
    from metaseg.errors import ConfigError
    from metaseg.models.registry import variant_config

    overrides = dict(cfg.model_overrides)
    if cfg.pretrained is not None:
        if "pretrained" in overrides and overrides["pretrained"] != cfg.pretrained:
            raise ConfigError(f"pretrained={cfg.pretrained} contradicts model_overrides.pretrained="
                              f"{overrides['pretrained']}; set only the top-level pretrained")
        overrides["pretrained"] = cfg.pretrained
    if class_set is not None:
        overrides.setdefault("class_set", class_set)
    return variant_config(cfg.model, **overrides), overrides


def itm_signal(uses_text: bool, prompts: list[str], negatives: bool, itm_weight: float) -> str:
    """What L_itm can learn in this run (see ``training.train``'s docstring), recorded in checkpoints."""
    if not uses_text or itm_weight == 0:
        return "none"
    distinct = len(set(prompts))
    if distinct <= 1:
        return ("matching only: one prompt for every tile, the contrastive term is 0 and the matching "
                "term separates this prompt from other zones' prompts (text-side only)") if negatives else \
               "none: one prompt for every tile and no negatives, L_itm is 0"
    return f"contrastive + matching over {distinct} distinct prompts" if negatives else \
        f"contrastive only over {distinct} distinct prompts"


class NegativeBank:
    """Other zones' prompt texts for one class set, used as ITM negatives.

    Args:
        texts: zone code → prompt text (all zones the store knows for the class set).
        seed: seed of the generator that picks a negative per sample.
    """

    def __init__(self, texts: dict[str, str], seed: int = 0) -> None:
        import torch

        self.zones = sorted(texts)
        self.texts = [texts[z] for z in self.zones]
        self.gen = torch.Generator().manual_seed(seed)

    @classmethod
    def from_store(cls, store, class_set: str, seed: int = 0) -> NegativeBank:
        from metaseg.climate import ZONES

        texts: dict[str, str] = {}
        for code in ZONES:
            try:
                texts[code] = str(store.current(code, class_set).text)
            except MetasegError as exc:  # a zone without a prompt is simply not a candidate
                log.debug("no prompt for %s/%s: %s", code, class_set, exc)
        return cls(texts, seed)

    def __len__(self) -> int:
        return len(self.texts)

    def sample(self, prompts: list[str], zones: list[str | None]) -> list[str] | None:
        """One negative text per sample: another zone's prompt, different from the sample's text."""
        import torch

        out = []
        for prompt, zone in zip(prompts, zones, strict=True):
            cands = [i for i, (z, t) in enumerate(zip(self.zones, self.texts, strict=True))
                     if z != zone and t != prompt]
            if not cands:
                return None
            out.append(self.texts[cands[int(torch.randint(len(cands), (1,), generator=self.gen))]])
        return out

    def state(self) -> Any:
        return self.gen.get_state()


def prompt_hash(prompts: dict[str, str]) -> str:
    """Short SHA-256 of ``zone → prompt text`` (sorted), to tell whether two runs saw the same texts."""
    blob = json.dumps(sorted((str(k), str(v)) for k, v in prompts.items()), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def dataset_prompts(ds) -> list[str]:
    """Prompts of a dataset or of a ``Subset`` of one."""
    from torch.utils.data import Subset

    if isinstance(ds, Subset):
        return [ds.dataset.prompts[i] for i in ds.indices]
    return list(ds.prompts)


def warm_text_cache(model, train_ds, val_ds, bank: NegativeBank | None, main: bool) -> None:
    """Encode every prompt this run can use once, up front (the model's ``encode_text`` cache)."""
    import time

    warm = list(dict.fromkeys(list(train_ds.prompts) + (bank.texts if bank is not None else [])))
    if val_ds is not None:
        warm += [p for p in dict.fromkeys(dataset_prompts(val_ds)) if p not in set(warm)]
    cache_size = int(getattr(model.text_encoder, "cache_size", 0) or 0)
    if len(warm) > cache_size:
        log.warning("%d distinct prompts but the text cache holds %d: raise model_overrides."
                    "text_cache_size to avoid re-encoding", len(warm), cache_size)
    t_enc = time.time()
    for i in range(0, min(len(warm), cache_size), 8):
        model.encode_text(warm[i:i + 8])
    if main:
        log.info("encoded %d distinct prompts in %.1fs", min(len(warm), cache_size), time.time() - t_enc)
