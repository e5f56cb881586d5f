""""Teach both models" (the lower half of the Label tab) and the taught pair's hooks in other tabs.

After saving labels of one or more of the session's tiles, one button fine-tunes the session's
MetaSegNet and its baseline with the same samples, settings and budget (:mod:`studio.teach`, a
background job); a timer shows its progress, and when it is done the session switches to the
taught pair and the tile is segmented again with it. The pair belongs to the session: it can be
kept under a name, picked in the Models tab (:func:`build_models`) and is what the Experiments tab
runs (it uses the session's models). Review compares before and after on a labelled tile the
pair did not learn from (:func:`build_review`).
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import pandas as pd

from studio import models, pair, scoring, teach
from studio.session import SessionState
from studio.tabs.common import UI, Studio, class_set_of, session, user_errors
from training.finetune import MIN_BUDGET_S

DEFAULT_PAIR = "server default (shipped pair)"
BEFORE_AFTER_COLS = ["class", "MetaSegNet before %", "MetaSegNet after %", "Δ MetaSegNet",
                     "baseline before %", "baseline after %", "Δ baseline"]


# --------------------------------------------------------------------------- views
def bar_html(fraction: float | None, text: str = "") -> str:
    if fraction is None:
        return '<div class="ms-teach-bar" data-progress="none"></div>'
    pct = max(0.0, min(100.0, 100.0 * float(fraction)))
    return (f'<div class="ms-teach-bar" data-progress="{pct:.0f}"><progress max="100" value="{pct:.0f}" '
            f'style="width:100%"></progress><div class="ms-hint">{pct:.0f}% · {html.escape(text)}</div></div>')


def labels_summary(state: SessionState) -> str:
    labels = state.session_labels
    c = teach.caps()
    left = max(0.0, c.session_budget_s - state.teach_seconds)
    if not labels:
        head = "No saved label in this session yet."
    else:
        px = sum(int(lab.get("labelled_pixels") or 0) for lab in labels)
        head = (f"{len(labels)} labelled tile(s) in this session, {px:,} labelled pixels "
                f"({', '.join(sorted({lab['class_set'] for lab in labels}))}).")
    return (f"{head} Caps: {c.max_tiles} tiles, {c.max_labelled_pixels:,} labelled pixels and {c.max_budget_s:g} s per "
            f"model per job; {left:.0f} s of this session's {c.session_budget_s:g} s left.")


def pair_text(state: SessionState) -> str:
    name = teach.current_pair(state)
    if name is None:
        return "This session uses " + ("its own model choice." if state.model_sources else "the server's models.")
    rec = state.taught[name]
    steps = " / ".join(str(rec["steps"].get(r)) for r in teach.ROLES)
    return (f"This session uses the taught pair **{html.escape(name)}** ({rec['class_set']}, "
            f"{len(rec['tiles'])} tile(s), {rec['labelled_pixels']:,} labelled pixels, steps MetaSegNet / baseline "
            f"{steps}){' — kept' if rec.get('kept') else ''}.")


def pair_choices(state: SessionState | None) -> list[str]:
    return [DEFAULT_PAIR, *(state.taught if isinstance(state, SessionState) else {})]


# --------------------------------------------------------------------------- handlers
@user_errors
def on_teach(budget: float, prompt: str | None, state: SessionState | None, steps: int | None = None):
    """Queue "Teach both models" for this session; the timer then follows it."""
    state = session(state)
    if not state.session_labels:
        raise gr.Error("Save a label first: paint a few strokes per class on a tile and press “Save as ground truth”.")
    cs = models.class_set_of_models(state.model_sources).name
    prompts = {lab["tile"]: lab["prompt"] for lab in state.session_labels if lab.get("prompt")}
    if prompt and prompt.strip() and state.tile_path:
        for lab in state.session_labels:
            prompts.setdefault(lab["tile"], prompt)
    job = teach.start(state, budget, steps=steps, sources=state.model_sources, class_set=cs, prompts=prompts)
    queued = teach.TEACHER.waiting()
    msg = (f"Teaching both models on {len(job.samples)} tile(s), {job.labelled_pixels:,} labelled pixels, "
           + (f"{job.budget_s:g} s each" if job.budget_s else f"{job.steps} steps each")
           + (f" (waiting behind {queued - 1} other job(s))" if queued > 1 else "") + "…")
    return state, msg, bar_html(0.0, job.message), gr.Timer(active=True)


def on_teach_tick(prompt: str, opacity: float, state: SessionState | None, class_set: str | None = None,
                  resample_gsd: bool = False):
    """Follow the session's job: progress while it runs; when done, use the taught pair and
    segment the tile again with it. Outputs: state, status, bar, timer, the Segment results,
    the pair text, the Models tab's pair choice."""
    from studio.tabs import segment

    state = session(state)
    n_seg = 8
    job = teach.TEACHER.job(state.session_id)
    if job is None:
        return (state, gr.skip(), gr.skip(), gr.Timer(active=False), *(gr.skip(),) * n_seg, gr.skip(), gr.skip())
    if job.active:
        return (state, gr.skip(), bar_html(job.progress, job.message), gr.Timer(active=True),
                *(gr.skip(),) * n_seg, gr.skip(), gr.skip())
    if job.status != "done":
        teach.TEACHER.forget(state.session_id)
        text = f"Teaching stopped: {job.error or job.status}. Nothing changed: the session keeps its models."
        return (state, html.escape(text), bar_html(None), gr.Timer(active=False), *(gr.skip(),) * n_seg,
                gr.skip(), gr.skip())
    name = teach.apply(state, job)
    secs = " / ".join(f"{float(job.results[r].get('seconds') or 0):.0f} s" for r in teach.ROLES)
    text = f"Taught both models (**{html.escape(name or '')}**; MetaSegNet / baseline {secs})."
    seg_out: tuple[Any, ...] = (gr.skip(),) * n_seg
    if state.tile is not None and prompt and prompt.strip():
        try:
            out = segment.on_segment(prompt, opacity, state, class_set, resample_gsd,
                                     progress=lambda *a, **k: None)
            state, seg_out = out[0], tuple(out[1:])
            text += " The tile was segmented again with the taught pair (Segment tab)."
        except gr.Error as exc:
            text += f" Segmenting the tile again failed: {exc.message}"
    return (state, text, bar_html(1.0, "done"), gr.Timer(active=False), *seg_out, pair_text(state),
            gr.update(choices=pair_choices(state), value=name))


@user_errors
def on_keep(name: str, state: SessionState | None):
    """Keep the pair the session uses under a name."""
    state = session(state)
    current = teach.current_pair(state)
    if current is None:
        raise gr.Error("No taught pair in use: teach both models first (or pick a taught pair in the Models tab).")
    new = teach.keep(state, current, name)
    state.model_sources = teach.pair_sources(state, new)
    return state, pair_text(state), gr.update(choices=pair_choices(state), value=new)


@user_errors
def on_pick_pair(name: str, state: SessionState | None):
    """Models tab: use one of the session's taught pairs (or the server's default pair)."""
    from studio.tabs import models as models_tab

    state = session(state)
    if not name or name == DEFAULT_PAIR:
        state.model_sources = {}
    else:
        sources = teach.pair_sources(state, name)
        for role in teach.ROLES:  # load first: a pair that cannot load is not kept
            models.MODELS.get(role, sources[role])
        state.model_sources = sources
    return state, models_tab.models_table(state), pair_text(state)


def on_models_select(state: SessionState | None):
    state = session(state)
    return gr.update(choices=pair_choices(state), value=teach.current_pair(state) or DEFAULT_PAIR), pair_text(state)


@user_errors
def on_before_after(prompt: str, state: SessionState | None):
    """Review: per-class IoU of the pair before and after teaching on this tile's ground truth."""
    state = session(state)
    if state.tile is None:
        raise gr.Error("Load a labelled tile first.")
    name = teach.current_pair(state) or next(reversed(state.taught), None)
    if name is None:
        raise gr.Error("No taught pair yet: teach both models in the Label tab first.")
    rec = state.taught[name]
    if state.tile_hash in rec["tiles"]:
        raise gr.Error("This tile is one the pair learned from; open another labelled tile to measure it fairly.")
    if state.ground_truth is None:
        raise gr.Error("This tile has no ground truth: upload its label (above) or paint one, then compare.")
    if not (prompt or "").strip():
        raise gr.Error("The prompt is empty: pick a location or type one in the Describe tab.")
    cs = class_set_of(rec["class_set"])
    if state.ground_truth.shape != state.tile.rgb.shape[:2]:
        raise gr.Error("The ground truth's size differs from the tile's; load its label again.")
    before = pair.run_pair(state.tile.rgb, state.tile.valid, prompt, sources=rec["base"])
    after = pair.run_pair(state.tile.rgb, state.tile.valid, prompt, sources=teach.pair_sources(state, name))
    gt = state.ground_truth
    s = {(r, when): scoring.scores(getattr(res, r), gt, cs) for when, res in (("before", before), ("after", after))
         for r in teach.ROLES}

    def pct(x):
        return None if x is None else round(100 * x, 1)

    def delta(a, b):
        return None if a is None or b is None else round(100 * (b - a), 1)

    rows = []
    for n in cs.names:
        cells = []
        for r in teach.ROLES:
            a, b = s[(r, "before")]["per_class_iou"][n], s[(r, "after")]["per_class_iou"][n]
            cells += [pct(a), pct(b), delta(a, b)]
        if any(v is not None for v in cells):
            rows.append([n, *cells])
    cells = []
    for r in teach.ROLES:
        a, b = s[(r, "before")]["miou"], s[(r, "after")]["miou"]
        cells += [pct(a), pct(b), delta(a, b)]
    rows.append(["mIoU", *cells])
    text = (f"Before = {html.escape(', '.join(models.shown_source(v) for v in rec['base'].values()))}; after = the "
            f"taught pair **{html.escape(name)}**, on this tile's {html.escape(state.ground_truth_source or 'ground truth')} "
            "(not used for teaching).")
    return pd.DataFrame(rows, columns=BEFORE_AFTER_COLS), text


# --------------------------------------------------------------------------- layout
def build(ctx: Studio) -> None:
    """The teaching section, inside the Label tab."""
    c = teach.caps()
    with gr.Group(elem_id="teach"):
        gr.Markdown("### Teach both models\nFine-tunes MetaSegNet *and* the baseline on the labels this session "
                    "saved, with the same settings and the same time budget each, then segments the tile again "
                    "with the taught pair. The pair is yours: other visitors keep their models.")
        teach_info = gr.Markdown(labels_summary(SessionState()), elem_id="teach-info")
        with gr.Row():
            budget = gr.Slider(MIN_BUDGET_S, c.max_budget_s, value=min(60.0, c.max_budget_s), step=1,
                               label="Budget per model (s)", elem_id="teach-budget", scale=2)
            teach_btn = gr.Button("Teach both models", variant="primary", elem_id="teach-btn", scale=1)
        teach_bar = gr.HTML(bar_html(None), elem_id="teach-progress", js_on_load=None)
        teach_status = gr.Markdown("", elem_id="teach-status")
        pair_md = gr.Markdown("", elem_id="teach-pair")
        with gr.Row():
            keep_name = gr.Textbox(label="Keep the pair in use as", placeholder="e.g. my farm tiles", max_length=40,
                                   elem_id="teach-keep-name", scale=3)
            keep_btn = gr.Button("Keep", elem_id="teach-keep", scale=1)
        timer = gr.Timer(1.0, active=False)
    ctx.add(teach_info=teach_info, teach_budget=budget, teach_btn=teach_btn, teach_bar=teach_bar,
            teach_status=teach_status, teach_pair=pair_md, teach_keep_name=keep_name, teach_keep=keep_btn,
            teach_timer=timer)


def build_models(ctx: Studio) -> None:
    """The taught-pair picker, inside the Models tab."""
    with gr.Row():
        pick = gr.Dropdown([DEFAULT_PAIR], value=DEFAULT_PAIR, label="Model pair of this session",
                           elem_id="taught-pairs", scale=3)
        pick_info = gr.Markdown("", elem_id="models-pair")
    ctx.add(taught_pairs=pick, models_pair=pick_info)


def build_review(ctx: Studio) -> None:
    """Before/after teaching, inside the Review tab."""
    with gr.Accordion("Before / after teaching", open=True):
        btn = gr.Button("Compare the pair before and after teaching on this tile", elem_id="before-after-btn")
        text = gr.Markdown("", elem_id="before-after-text")
        table = gr.Dataframe(pd.DataFrame(columns=BEFORE_AFTER_COLS), label="Per-class IoU before / after",
                             interactive=False, elem_id="before-after")
    ctx.add(before_after_btn=btn, before_after_text=text, before_after=table)


def wire(ctx: Studio) -> None:
    seg_outputs = [ctx.slider, ctx.dis_img, ctx.dis_txt, ctx.frac_df, ctx.downloads, ctx.legend, ctx.seg_status,
                   ctx.gsd_note]
    ctx.teach_btn.click(on_teach, [ctx.teach_budget, ctx.prompt, ctx.state],
                        [ctx.state, ctx.teach_status, ctx.teach_bar, ctx.teach_timer], **UI)
    ctx.teach_timer.tick(on_teach_tick, [ctx.prompt, ctx.opacity, ctx.state, ctx.class_set, ctx.resample],
                         [ctx.state, ctx.teach_status, ctx.teach_bar, ctx.teach_timer, *seg_outputs, ctx.teach_pair,
                          ctx.taught_pairs], **UI)
    ctx.teach_keep.click(on_keep, [ctx.teach_keep_name, ctx.state], [ctx.state, ctx.teach_pair, ctx.taught_pairs],
                         **UI)
    ctx.on("label_saved", lambda s: labels_summary(session(s)), [ctx.state], [ctx.teach_info])
    ctx.taught_pairs.input(on_pick_pair, [ctx.taught_pairs, ctx.state], [ctx.state, ctx.ck_df, ctx.models_pair],
                           **UI)
    ctx.models_tab.select(on_models_select, [ctx.state], [ctx.taught_pairs, ctx.models_pair], **UI)
    ctx.before_after_btn.click(on_before_after, [ctx.prompt, ctx.state], [ctx.before_after, ctx.before_after_text],
                               **UI)
