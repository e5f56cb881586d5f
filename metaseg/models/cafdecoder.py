"""CAFDecoder: cross-modal attention fusion of image and text features (paper §II-C, Fig. 3).

It runs on the coarsest encoder stage (stride 32: 16×16 = 256 image tokens at 512², 32×32 at
1024²), so the token count stays small. Four parts, each a small module below:

1. :class:`ImageTextAlignment` — "alignment before fusion": pooled, projected image/text
   embeddings, image and text queues, a contrastive loss and an image-text matching (ITM) head.
2. :class:`ImageQueriesText` + :class:`TextQueriesImage` — the two consecutive cross-attentions
   of eqs 4–7.
3. :class:`JointLearning` — image and text tokens in one position-aware sequence through
   standard ViT blocks.
4. :class:`TextPriorFusion` — text → linear → average pool → channel prior, multiplied into
   the image map, plus a residual.

Attention everywhere uses ``F.scaled_dot_product_attention``; text padding is masked out as keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaseg.models.text_encoder import TextFeatures

EMPTY_ID = -1  #: text id of an unfilled queue slot (real ids are >= 0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over tokens. x: B×L×C, mask: B×L bool (True = real) or None. Returns B×C."""
    if mask is None:
        return x.mean(dim=1)
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


class Mlp(nn.Module):
    """Two-layer GELU MLP."""

    def __init__(self, dim: int, ratio: float = 2.0):
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class CrossAttention(nn.Module):
    """softmax(δ_q(X) ρ_k(Y)^T / sqrt(d)) ρ_v(Y), multi-head (eq 5 / eq 7 without the residual).

    d is the per-head width (SDPA's default scale).

    Following the equations there is no output projection: the heads' outputs are
    concatenated back to ``dim`` channels.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)  # δ_q
        self.k = nn.Linear(dim, dim)  # ρ_k
        self.v = nn.Linear(dim, dim)  # ρ_v

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: B×N×C queries; y: B×M×C keys/values; y_mask: B×M bool (True = attend). Returns B×N×C."""
        b, n, c = x.shape
        m = y.shape[1]
        h = self.heads
        q = self.q(x).view(b, n, h, c // h).transpose(1, 2)
        k = self.k(y).view(b, m, h, c // h).transpose(1, 2)
        v = self.v(y).view(b, m, h, c // h).transpose(1, 2)
        attn_mask = None if y_mask is None else y_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return out.transpose(1, 2).reshape(b, n, c)


class ImageQueriesText(nn.Module):
    """Eqs 5 then 4: image tokens attend to text tokens, then a pre-norm MLP; both residual.

    ``F' = F + Attn(q=F, kv=T)``;  ``F_out = F' + MLP(LN(F'))``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.attn = CrossAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor | None) -> torch.Tensor:
        """img: B×N×C, txt: B×L×C → B×N×C."""
        img = img + self.attn(img, txt, txt_mask)
        return img + self.mlp(self.norm(img))


class TextQueriesImage(nn.Module):
    """Eqs 6 then 7: a pre-norm MLP on the text, then text attends to the UPDATED image tokens.

    Interpretation: eq 6 as printed (``F'_text = F_text + MLP(ϕ(F'_text))``) is circular; we read
    its right-hand MLP input as ``F_text`` and keep the printed order of eq 7, whose query is
    ``F'_text`` and whose keys/values are ``F_img^out`` (the output of :class:`ImageQueriesText`):
    ``T' = T + MLP(LN(T))``;  ``T_out = T' + Attn(q=T', kv=F_img_out)``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)
        self.attn = CrossAttention(dim, heads)

    def forward(self, txt: torch.Tensor, img_out: torch.Tensor) -> torch.Tensor:
        """txt: B×L×C, img_out: B×N×C → B×L×C."""
        txt = txt + self.mlp(self.norm(txt))
        return txt + self.attn(txt, img_out)


class SelfAttentionBlock(nn.Module):
    """Standard pre-norm ViT block (MHSA + MLP, residuals) with a key-padding mask."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: B×S×C; mask: B×S bool (True = real token, attended as key)."""
        b, s, c = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        x = x + self.proj(y.transpose(1, 2).reshape(b, s, c))
        return x + self.mlp(self.norm2(x))


class JointLearning(nn.Module):
    """Image-text joint learning: [image tokens; text tokens] + learned positions → ViT blocks.

    Image positions are a learned ``pos_grid``×``pos_grid`` map bilinearly interpolated to the
    feature size (so any input size works); text positions are learned per token index up to
    ``max_tokens``. Padded text tokens are never attended to.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, depth: int, pos_grid: int, max_tokens: int):
        super().__init__()
        self.pos_img = nn.Parameter(torch.randn(1, dim, pos_grid, pos_grid) * 0.02)
        self.pos_txt = nn.Parameter(torch.randn(1, max_tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim, heads, mlp_ratio) for _ in range(depth))

    def forward(self, img: torch.Tensor, hw: tuple[int, int], txt: torch.Tensor, txt_mask: torch.Tensor | None):
        """img: B×N×C (N = h·w), txt: B×L×C → (B×N×C, B×L×C)."""
        b, n, c = img.shape
        length = txt.shape[1]
        if length > self.pos_txt.shape[1]:
            raise ValueError(f"text has {length} tokens, more than max_tokens={self.pos_txt.shape[1]}")
        pos = F.interpolate(self.pos_img, size=hw, mode="bilinear", align_corners=False)
        seq = torch.cat([img + pos.flatten(2).transpose(1, 2), txt + self.pos_txt[:, :length]], dim=1)
        mask = None
        if txt_mask is not None:
            mask = torch.cat([torch.ones(b, n, dtype=torch.bool, device=img.device), txt_mask], dim=1)
        for blk in self.blocks:
            seq = blk(seq, mask)
        return seq[:, :n], seq[:, n:]


class TextPriorFusion(nn.Module):
    """Text → linear → masked average pool → sigmoid → channel prior g; ``out = F·g + F``.

    The sigmoid keeps the prior a bounded gate in (0, 1), so the product cannot blow up the
    image features; the residual keeps the image path intact (``out = F·(1 + g)``).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def prior(self, txt: torch.Tensor, txt_mask: torch.Tensor | None) -> torch.Tensor:
        """txt: B×L×C → B×C gate in (0, 1)."""
        return torch.sigmoid(masked_mean(self.proj(txt), txt_mask))

    def forward(self, img_map: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor | None) -> torch.Tensor:
        """img_map: B×C×h×w → B×C×h×w."""
        g = self.prior(txt, txt_mask)[:, :, None, None]
        return img_map * g + img_map


def contrastive_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    ids: torch.Tensor,
    img_queue: torch.Tensor,
    txt_queue: torch.Tensor,
    queue_ids: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Symmetric InfoNCE of image vs [batch texts + text queue] and text vs [batch images + image queue].

    The positive of sample i is its own pair (i, i). Every other candidate whose text id equals
    ``ids[i]`` (the same prompt again, in the batch or the queue) is masked out, as are empty
    queue slots, so only genuinely different texts act as negatives. With no valid negative
    the term is 0.

    Args:
        img, txt: B×D L2-normalised embeddings of matching pairs.
        ids: B text ids.
        img_queue, txt_queue: Q×D queued embeddings (detached); row q of both is one pair.
        queue_ids: Q text ids of the queued pairs (``EMPTY_ID`` = unfilled).
        temperature: softmax temperature.

    Returns:
        Scalar: loss_image→text + loss_text→image.
    """
    b = img.shape[0]
    target = torch.arange(b, device=img.device)
    cand_ids = torch.cat([ids, queue_ids])
    is_pos = torch.zeros(b, cand_ids.shape[0], dtype=torch.bool, device=img.device)
    is_pos[target, target] = True
    invalid = ((ids[:, None] == cand_ids[None, :]) & ~is_pos) | (cand_ids == EMPTY_ID)[None, :]
    # Always float32, whatever autocast is active: under bf16/fp16 autocast the matmul would
    # give reduced-precision logits, and masking them with float32's minimum overflows
    # ("value cannot be converted to type c10::BFloat16 without overflow").
    with torch.autocast(device_type=img.device.type, enabled=False):
        img, txt = img.float(), txt.float()
        img_queue, txt_queue = img_queue.float(), txt_queue.float()
        neg_inf = torch.finfo(torch.float32).min
        logits_i2t = (img @ torch.cat([txt, txt_queue]).T / temperature).masked_fill(invalid, neg_inf)
        logits_t2i = (txt @ torch.cat([img, img_queue]).T / temperature).masked_fill(invalid, neg_inf)
        return F.cross_entropy(logits_i2t, target) + F.cross_entropy(logits_t2i, target)


class ImageTextAlignment(nn.Module):
    """Alignment before fusion: embeddings, queues, contrastive loss and ITM head.

    Queues (size ``queue_size``, buffers not saved in checkpoints) hold detached embeddings of
    past pairs with their text ids and a write pointer. They are updated after the loss of the
    current batch is computed. Under DDP (``torch.distributed`` initialised) each rank
    all-gathers the batch before enqueueing, so every rank holds the same global queue
    (batch sizes must match across ranks, as DDP's DistributedSampler ensures); in a single
    process the local batch is enqueued.

    The matching head classifies a fused pair feature ``[i, t, i·t, |i−t|]`` as matched (1)
    or mismatched (0). Mismatched texts come from ``negative`` features the caller passes (e.g.
    prompts of other climate zones); negatives whose text equals the positive's are dropped.
    Without negatives the matching term is skipped (contrastive only).
    """

    def __init__(self, dim: int, embed_dim: int, queue_size: int, temperature: float):
        super().__init__()
        self.temperature = temperature
        self.img_proj = nn.Linear(dim, embed_dim)
        self.txt_proj = nn.Linear(dim, embed_dim)
        self.itm_head = nn.Sequential(nn.Linear(4 * embed_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, 2))
        self.register_buffer("img_queue", torch.zeros(queue_size, embed_dim), persistent=False)
        self.register_buffer("txt_queue", torch.zeros(queue_size, embed_dim), persistent=False)
        self.register_buffer("queue_ids", torch.full((queue_size,), EMPTY_ID, dtype=torch.long), persistent=False)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long), persistent=False)

    def embed(self, img_tokens: torch.Tensor, txt_tokens: torch.Tensor, txt_mask: torch.Tensor | None):
        """Projected, pooled (un-normalised) embeddings. img: B×N×C, txt: B×L×C → (B×D, B×D)."""
        return self.img_proj(img_tokens.mean(dim=1)), self.txt_proj(masked_mean(txt_tokens, txt_mask))

    def match_logits(self, img_vec: torch.Tensor, txt_vec: torch.Tensor) -> torch.Tensor:
        """B×D, B×D → B×2 logits (index 1 = matched)."""
        i, t = F.normalize(img_vec, dim=-1), F.normalize(txt_vec, dim=-1)
        return self.itm_head(torch.cat([i, t, i * t, (i - t).abs()], dim=-1))

    def loss(
        self,
        img_vec: torch.Tensor,
        txt_vec: torch.Tensor,
        ids: torch.Tensor,
        neg_vec: torch.Tensor | None = None,
        neg_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """L_itm = contrastive + matching CE; then enqueues the batch. Returns a scalar."""
        img_e, txt_e = F.normalize(img_vec.float(), dim=-1), F.normalize(txt_vec.float(), dim=-1)
        total = contrastive_loss(img_e, txt_e, ids, self.img_queue, self.txt_queue, self.queue_ids, self.temperature)
        pos_logits = self.match_logits(img_vec, txt_vec)
        keep = None
        if neg_vec is not None:
            keep = neg_ids != ids if neg_ids is not None else torch.ones_like(ids, dtype=torch.bool)
        if keep is None or not bool(keep.any()):
            # No genuinely different negative text: the matching term is skipped. The 0-weighted
            # head output keeps every parameter in the graph, so DDP's gradient reduction
            # completes without find_unused_parameters=True.
            total = total + 0.0 * pos_logits.sum()
        else:
            n_neg = int(keep.sum())
            logits = torch.cat([pos_logits, self.match_logits(img_vec[keep], neg_vec[keep])]).float()
            labels = torch.cat([torch.ones(len(ids), dtype=torch.long, device=ids.device),
                                torch.zeros(n_neg, dtype=torch.long, device=ids.device)])
            total = total + F.cross_entropy(logits, labels)
        self.enqueue(img_e.detach(), txt_e.detach(), ids)
        return total

    @torch.no_grad()
    def enqueue(self, img_e: torch.Tensor, txt_e: torch.Tensor, ids: torch.Tensor) -> None:
        """Write a batch (all-gathered under DDP) into the ring buffers."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            img_e, txt_e, ids = (_all_gather(t) for t in (img_e, txt_e, ids))
        q = self.img_queue.shape[0]
        n = min(img_e.shape[0], q)
        img_e, txt_e, ids = img_e[-n:], txt_e[-n:], ids[-n:]
        idx = (int(self.queue_ptr) + torch.arange(n, device=ids.device)) % q
        self.img_queue[idx] = img_e.to(self.img_queue.dtype)
        self.txt_queue[idx] = txt_e.to(self.txt_queue.dtype)
        self.queue_ids[idx] = ids
        self.queue_ptr.fill_((int(self.queue_ptr) + n) % q)


def _all_gather(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


class CAFDecoder(nn.Module):
    """Cross-modal attention fusion on the stride-32 feature map.

    Args:
        dim: channels C of the incoming image map and of all CAF tokens.
        text_dim: hidden size of the text encoder; text tokens are mapped to C by a
            linear layer + LayerNorm (trainable; the text encoder itself is frozen).
        prior_fusion: keep part 4 (:class:`TextPriorFusion`, the paper's "image-text fusion
            module"). ``False`` gives the "Baseline+Alignment" row of Table IV: alignment
            (L_itm), both cross-attentions and joint learning, and the image tokens go to the
            head without the text prior.
    """

    def __init__(self, dim: int, text_dim: int, heads: int, mlp_ratio: float, joint_depth: int,
                 pos_grid: int, max_tokens: int, embed_dim: int, queue_size: int, temperature: float,
                 prior_fusion: bool = True):
        super().__init__()
        self.text_in = nn.Sequential(nn.Linear(text_dim, dim), nn.LayerNorm(dim))
        self.align = ImageTextAlignment(dim, embed_dim, queue_size, temperature)
        self.img_cross = ImageQueriesText(dim, heads, mlp_ratio)
        self.txt_cross = TextQueriesImage(dim, heads, mlp_ratio)
        self.joint = JointLearning(dim, heads, mlp_ratio, joint_depth, pos_grid, max_tokens)
        self.fusion = TextPriorFusion(dim) if prior_fusion else None
        self.out_norm = nn.GroupNorm(_groups(dim), dim)

    def forward(self, img_map: torch.Tensor, text: TextFeatures, negative: TextFeatures | None = None,
                with_itm: bool = False):
        """Fuse text into the image map.

        Args:
            img_map: B×C×h×w image features (stride 32).
            text: prompt features (tokens B×L×C_text).
            negative: mismatched-prompt features for the matching head (training only).
            with_itm: compute L_itm (and update the queues).

        Returns:
            ``(fused B×C×h×w, img_embed B×D, txt_embed B×D, itm_loss scalar or None)``.
        """
        b, c, h, w = img_map.shape
        if text.tokens.shape[0] != b:
            raise ValueError(f"batch of {b} images but {text.tokens.shape[0]} text prompts")
        img = img_map.flatten(2).transpose(1, 2)  # B×N×C
        if not self.training:
            text = trim_padding(text)
        txt = self.text_in(text.tokens.to(img.dtype))
        mask = text.mask
        if not self.training and _all_real(mask):
            mask = None  # no padding left: the unmasked SDPA kernel is faster (CPU, ~40 % per call)
        # 1) alignment before fusion
        img_vec, txt_vec = self.align.embed(img, txt, mask)
        itm_loss = None
        if with_itm:
            neg_vec = neg_ids = None
            if negative is not None:
                if negative.tokens.shape[0] != b:
                    raise ValueError(f"batch of {b} images but {negative.tokens.shape[0]} negative prompts")
                neg_txt = self.text_in(negative.tokens.to(img.dtype))
                neg_vec = self.align.txt_proj(masked_mean(neg_txt, negative.mask))
                neg_ids = negative.ids
            itm_loss = self.align.loss(img_vec, txt_vec, text.ids, neg_vec, neg_ids)
        # 2) two consecutive cross-attentions (eqs 4-7)
        img = self.img_cross(img, txt, mask)
        txt = self.txt_cross(txt, img)
        # 3) image-text joint learning
        img, txt = self.joint(img, (h, w), txt, mask)
        # 4) text prior fusion (absent in the Table IV "Baseline+Alignment" variants)
        fused = img.transpose(1, 2).reshape(b, c, h, w)
        if self.fusion is not None:
            fused = self.fusion(fused, txt, mask)
        return self.out_norm(fused), F.normalize(img_vec, dim=-1), F.normalize(txt_vec, dim=-1), itm_loss


def trim_padding(text: TextFeatures) -> TextFeatures:
    """Drop the padding columns that every prompt of the batch has at its end (inference speed-up).

    Padded text tokens never reach a real token: they are masked out as attention keys and
    left out of every pooled mean, and the learned text positions are indexed from 0. Cutting
    the all-padding tail therefore leaves the fused image map unchanged (up to float rounding)
    while the text side of the decoder runs on the real tokens only (a ~170-token climate
    prompt instead of 250 padded tokens). Left-padded or unmasked batches are returned as is,
    and so are traced/compiled graphs and GPU tensors: the cut reads the mask on the host,
    which would synchronise the GPU on every forward, while there the decoder is a negligible
    share of the time next to the image encoder.
    """
    mask = text.mask
    if mask is None or mask.dim() != 2 or mask.device.type != "cpu" or torch.compiler.is_compiling():
        return text
    length = mask.shape[1]
    keep = int(mask.sum(dim=1).max())
    if keep <= 0 or keep >= length or bool(mask[:, keep:].any()):
        return text
    return TextFeatures(text.tokens[:, :keep], mask[:, :keep], text.ids)


def _all_real(mask: torch.Tensor | None) -> bool:
    """True when a CPU key mask has no padding at all (then it can be dropped without effect)."""
    if mask is None or mask.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    return bool(mask.all())


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels // g >= 4:
            return g
    return 1


__all__ = [
    "CAFDecoder",
    "CrossAttention",
    "ImageQueriesText",
    "ImageTextAlignment",
    "JointLearning",
    "TextPriorFusion",
    "TextQueriesImage",
    "contrastive_loss",
    "masked_mean",
    "trim_padding",
]
