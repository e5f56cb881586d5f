"""CAFDecoder parts: each block of eqs 4-7, joint learning, fusion, contrastive/ITM losses, queues."""

from __future__ import annotations

import pytest
import torch

from metaseg.models.cafdecoder import (
    EMPTY_ID,
    CAFDecoder,
    ImageQueriesText,
    ImageTextAlignment,
    JointLearning,
    TextPriorFusion,
    TextQueriesImage,
    contrastive_loss,
)
from metaseg.models.text_encoder import TextFeatures

C = 16


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _zero_linear(lin: torch.nn.Linear) -> None:
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()


def test_image_cross_attention_residual_when_value_zeroed():
    blk = ImageQueriesText(C, 4, 2.0).eval()
    img, txt = torch.randn(2, 5, C), torch.randn(2, 7, C)
    _zero_linear(blk.attn.v)
    out = blk(img, txt, None)
    # eq 5 collapses to F' = F, so eq 4 gives F + MLP(LN(F))
    torch.testing.assert_close(out, img + blk.mlp(blk.norm(img)))


def test_image_cross_attention_queries_image_keys_text():
    blk = ImageQueriesText(C, 4, 2.0).eval()
    img, txt = torch.randn(1, 5, C), torch.randn(1, 7, C)
    base = blk(img, txt, None)
    # text is the key/value source: changing it changes every image token
    txt2 = txt.clone()
    txt2[:, 3] += 1.0
    assert (blk(img, txt2, None) - base).abs().amax(dim=-1).min() > 1e-4
    # image tokens are only queries: changing token 0 leaves the others unchanged
    img2 = img.clone()
    img2[:, 0] += 1.0
    diff = (blk(img2, txt, None) - base).abs().amax(dim=-1)[0]
    assert diff[0] > 1e-4 and diff[1:].max() < 1e-6


def test_image_cross_attention_ignores_padded_text():
    blk = ImageQueriesText(C, 4, 2.0).eval()
    img, txt = torch.randn(1, 5, C), torch.randn(1, 7, C)
    mask = torch.tensor([[True, True, True, False, False, False, False]])
    base = blk(img, txt, mask)
    txt2 = txt.clone()
    txt2[:, 3:] = torch.randn(1, 4, C) * 10
    torch.testing.assert_close(blk(img, txt2, mask), base)


def test_text_cross_attention_order_mlp_then_attention_over_updated_image():
    blk = TextQueriesImage(C, 4, 2.0).eval()
    txt, img_out = torch.randn(2, 7, C), torch.randn(2, 5, C)
    # zeroing the attention value projection leaves eq 6 only: T' = T + MLP(LN(T))
    _zero_linear(blk.attn.v)
    torch.testing.assert_close(blk(txt, img_out), txt + blk.mlp(blk.norm(txt)))
    blk2 = TextQueriesImage(C, 4, 2.0).eval()
    _zero_linear(blk2.mlp.fc2)  # MLP branch off: T' == T, output = T + Attn(T, F_img_out)
    torch.testing.assert_close(blk2(txt, img_out), txt + blk2.attn(txt, img_out))
    # keys/values come from the image: changing it changes the text output
    assert not torch.allclose(blk2(txt, img_out + 1.0), blk2(txt, img_out))


def test_decoder_text_branch_sees_updated_image_features():
    dec = CAFDecoder(C, 24, 4, 2.0, 1, 4, 8, C, 4, 0.07).eval()
    seen = {}
    orig = dec.txt_cross.forward

    def spy(txt, img_out):
        seen["img"] = img_out
        return orig(txt, img_out)

    dec.txt_cross.forward = spy
    feats = TextFeatures(torch.randn(1, 8, 24), torch.ones(1, 8, dtype=torch.bool), torch.tensor([1]))
    img_map = torch.randn(1, C, 2, 3)
    dec(img_map, feats)
    tokens = img_map.flatten(2).transpose(1, 2)
    assert not torch.allclose(seen["img"], tokens)  # it is F_img_out, not the raw F_img


def test_joint_learning_mixes_modalities_and_masks_padding():
    joint = JointLearning(C, 4, 2.0, 2, 4, 10).eval()
    img, txt = torch.randn(1, 6, C), torch.randn(1, 10, C)
    mask = torch.tensor([[True] * 4 + [False] * 6])
    out_img, out_txt = joint(img, (2, 3), txt, mask)
    assert out_img.shape == img.shape and out_txt.shape == txt.shape
    txt2 = txt.clone()
    txt2[:, 0] += torch.randn(C)  # (a constant shift would be removed by the pre-norm LayerNorm)
    assert not torch.allclose(joint(img, (2, 3), txt2, mask)[0], out_img)  # text reaches image tokens
    txt3 = txt.clone()
    txt3[:, 6:] = 50.0
    torch.testing.assert_close(joint(img, (2, 3), txt3, mask)[0], out_img)  # padding is invisible
    # position embeddings interpolate to any grid
    assert joint(torch.randn(1, 35, C), (5, 7), txt, mask)[0].shape == (1, 35, C)


def test_fusion_prior_is_a_gate_with_residual():
    fus = TextPriorFusion(C)
    txt = torch.randn(2, 7, C)
    g = fus.prior(txt, None)
    assert g.shape == (2, C) and bool(((g > 0) & (g < 1)).all())
    img = torch.randn(2, C, 3, 4)
    torch.testing.assert_close(fus(img, txt, None), img * (1 + g[:, :, None, None]))
    with torch.no_grad():
        fus.proj.weight.zero_()
        fus.proj.bias.fill_(-30.0)
    torch.testing.assert_close(fus(img, txt, None), img, atol=1e-6, rtol=0)  # gate closed: residual only


def _norm(x):
    return torch.nn.functional.normalize(x, dim=-1)


def test_contrastive_masks_identical_texts_in_batch_and_queue():
    img, txt = _norm(torch.randn(2, 8)), _norm(torch.randn(2, 8))
    q = 4
    empty_q = torch.zeros(q, 8)
    empty_ids = torch.full((q,), EMPTY_ID)
    same = torch.tensor([5, 5])
    # both samples carry the same prompt and the queue is empty: no genuine negative -> 0
    assert float(contrastive_loss(img, txt, same, empty_q, empty_q, empty_ids, 0.07)) == pytest.approx(0.0, abs=1e-6)
    diff = torch.tensor([5, 6])
    assert float(contrastive_loss(img, txt, diff, empty_q, empty_q, empty_ids, 0.07)) > 0.0
    # queue entries with the positive's own text are ignored, whatever their embeddings
    qi, qt = _norm(torch.randn(q, 8)), _norm(torch.randn(q, 8))
    ids_same = torch.full((q,), 5)
    assert float(contrastive_loss(img, txt, same, qi, qt, ids_same, 0.07)) == pytest.approx(0.0, abs=1e-6)
    ids_other = torch.full((q,), 9)
    assert float(contrastive_loss(img, txt, same, qi, qt, ids_other, 0.07)) > 0.0


def test_queue_ring_buffer_and_ids():
    al = ImageTextAlignment(C, 8, queue_size=3, temperature=0.07)
    for step in range(2):
        e = _norm(torch.randn(2, 8))
        al.enqueue(e, e, torch.tensor([10 * step, 10 * step + 1]))
    assert int(al.queue_ptr) == 1
    assert al.queue_ids.tolist() == [11, 1, 10]
    assert not al.img_queue.requires_grad


def test_itm_loss_falls_on_toy_pairing():
    torch.manual_seed(0)
    concepts = 4
    img_proto, txt_proto = torch.randn(concepts, 6, C), torch.randn(concepts, 5, C)
    al = ImageTextAlignment(C, 8, queue_size=16, temperature=0.1)
    opt = torch.optim.Adam(al.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        k = torch.randperm(concepts)[:2]
        neg = (k + 1) % concepts
        img_vec, txt_vec = al.embed(img_proto[k] + 0.1 * torch.randn(2, 6, C), txt_proto[k], None)
        neg_vec = al.txt_proj(txt_proto[neg].mean(1))
        loss = al.loss(img_vec, txt_vec, k.long(), neg_vec, neg.long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_itm_matching_term_skipped_without_negatives():
    al = ImageTextAlignment(C, 8, queue_size=4, temperature=0.07)
    img_vec, txt_vec = torch.randn(2, 8), torch.randn(2, 8)
    ids = torch.tensor([1, 1])  # identical prompts, empty queue: contrastive is 0
    assert al.loss(img_vec, txt_vec, ids).item() == pytest.approx(0.0, abs=1e-6)
    al2 = ImageTextAlignment(C, 8, queue_size=4, temperature=0.07)
    assert al2.loss(img_vec, txt_vec, ids, torch.randn(2, 8), torch.tensor([2, 3])).item() > 0.0


def test_matching_skipped_when_negatives_repeat_the_prompt():
    al = ImageTextAlignment(C, 8, queue_size=4, temperature=0.07)
    img_vec, txt_vec = torch.randn(2, 8, requires_grad=True), torch.randn(2, 8)
    ids = torch.tensor([1, 1])
    loss = al.loss(img_vec, txt_vec, ids, torch.randn(2, 8), torch.tensor([1, 1]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()  # the head is still in the graph (DDP-safe), with zero gradient
    assert al.itm_head[0].weight.grad is not None and al.itm_head[0].weight.grad.abs().sum() == 0


def _ddp_worker(rank: int, world: int, init: str, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        al = ImageTextAlignment(C, 8, queue_size=8, temperature=0.07)
        e = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
        al.enqueue(e, e, torch.tensor([10 * rank, 10 * rank + 1]))
        results[rank] = al.queue_ids.tolist()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_queue_all_gathers_under_ddp(tmp_path):
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    init = f"file://{tmp_path / 'pg'}"
    mp.spawn(_ddp_worker, args=(2, init, results), nprocs=2, join=True)
    assert results[0] == results[1]
    assert sorted(i for i in results[0] if i != EMPTY_ID) == [0, 1, 10, 11]
