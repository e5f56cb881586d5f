"""Why our paper variant has 201.5 M parameters where the paper reports 399.7 M (issue 23).

The paper (§III-C): "The total number of parameters of our MetaSegNet is 399.7 M, of which only a
quarter are trainable parameters." ``python -m metaseg info --model metasegnet_swin_b`` counts
201.5 M with 92.0 M trainable (46 %), with the paper's named parts: Swin-B (window 12) 86.9 M,
CAFDecoder 4.0 M, neck + FPN head 1.2 M, all trainable, and a frozen ``bert-base-uncased``
109.5 M.

Only the frozen text encoder can move the total that far without moving the trainable part (our
trainable part depends on the text encoder only through one linear layer, ``text_in``:
hidden × ``caf_dim``). :func:`paper_comparison` counts, from each encoder's configuration
(:func:`bert_params`, exact for ``transformers.BertModel``), what the model would total
with other BERT sizes:

======================  ========  ==========  ========  ===========
text encoder            layers    hidden      total     trainable
======================  ========  ==========  ========  ===========
bert-base-uncased       12        768         201.5 M   92.0 M (46 %)
bert-large-uncased      24        1024        427.2 M   92.1 M (22 %)
======================  ========  ==========  ========  ===========

So a frozen BERT-large gives "about a quarter" trainable (22 %) but 27.5 M more than 399.7 M;
no standard BERT size gives 399.7 M exactly (a hidden-1024 BERT would need 21.8 layers, a
hidden-768 one 40.0, and no published BERT has that shape). Our reading: the paper's model is the Swin-B + BERT-large configuration,
or its count includes parts the paper does not describe; the text does not let us tell. The
BERT-large configuration is no new code: it is registered as ``metasegnet_swin_b_bert_large``
(``bert-large-uncased`` when it is in the Hugging Face cache or downloadable, else the MiniLM
fallback with a warning, as for ``metasegnet_swin_b``).
"""

from __future__ import annotations

from typing import Any

#: The paper's reported total and trainable share (§III-C).
PAPER_TOTAL_PARAMS = 399.7e6
PAPER_TRAINABLE_SHARE = 0.25

#: Standard BERT sizes (uncased vocabulary of 30522 tokens, 512 positions).
BERT_SIZES: dict[str, dict[str, int]] = {
    "bert-base-uncased": {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072},
    "bert-large-uncased": {"layers": 24, "hidden": 1024, "heads": 16, "intermediate": 4096},
}


def bert_params(layers: int, hidden: int, heads: int, intermediate: int, vocab: int = 30522,
                positions: int = 512) -> int:
    """Parameters of ``transformers.BertModel`` of this size, pooler included (exact; torch-free).

    Embeddings (word, position, 2 token types, LayerNorm), per layer the q/k/v/output projections,
    two LayerNorms and the two feed-forward matrices with biases, then the pooler. ``heads``
    does not change the count. ``tests/metaseg/test_cli_info.py`` checks it against a built ``BertModel``.
    """
    del heads  # the heads split the hidden width; they add no parameters
    h, i = int(hidden), int(intermediate)
    embeddings = (int(vocab) + int(positions) + 2) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    pooler = h * h + h
    return embeddings + int(layers) * layer + pooler


def paper_comparison(model: Any, sizes: dict[str, dict[str, int]] | None = None) -> dict[str, Any] | None:
    """Totals of ``model`` with other frozen BERT sizes, next to the paper's 399.7 M (``None``: no text).

    The trainable part is the model's own, with the text projection ``text_in`` resized to each
    encoder's hidden size; the frozen part is that encoder's own count (:func:`bert_params`).
    """
    if not getattr(model, "uses_text", False) or model.decoder is None:
        return None
    sizes = BERT_SIZES if sizes is None else sizes
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    proj = model.decoder.text_in[0]  # Linear(text hidden, caf_dim): the only part sized by the text encoder
    rows = []
    for name, size in sizes.items():
        frozen = bert_params(**size)
        train_h = trainable + (size["hidden"] - proj.in_features) * proj.out_features
        rows.append({"text_encoder": name, **size, "frozen_params": frozen, "trainable_params": train_h,
                     "total_params": frozen + train_h, "trainable_share": round(train_h / (frozen + train_h), 3)})
    zero = {h: bert_params(0, h, 16, 4 * h) for h in (768, 1024)}  # hidden 768 and 1024, 4h intermediate
    per_layer = {h: bert_params(1, h, 16, 4 * h) - zero[h] for h in zero}
    layers_needed = {str(h): round((PAPER_TOTAL_PARAMS - trainable - (h - proj.in_features) * proj.out_features
                                    - zero[h]) / per_layer[h], 1) for h in zero}
    closest = min(rows, key=lambda r: abs(r["total_params"] - PAPER_TOTAL_PARAMS))
    return {
        "paper_total_params": PAPER_TOTAL_PARAMS,
        "paper_trainable_share": PAPER_TRAINABLE_SHARE,
        "this_model": {"text_encoder": model.config.text_encoder, "total_params": total,
                       "trainable_params": trainable, "trainable_share": round(trainable / total, 3)},
        "with_text_encoder": rows,
        "bert_layers_for_paper_total": layers_needed,
        "closest": closest["text_encoder"],
        "explanation": (
            "only the frozen text encoder differs in size between plausible builds; with "
            f"{closest['text_encoder']} the model totals {closest['total_params'] / 1e6:.1f} M "
            f"({100 * closest['trainable_share']:.0f} % trainable) against the paper's 399.7 M (about a quarter "
            "trainable); no standard BERT gives 399.7 M exactly (see metaseg.models.param_count)"),
    }
