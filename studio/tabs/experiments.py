"""Experiments tab: prompt experiments over whole evaluation sets (``training.sweep`` in the app).

Start one (evaluation set = the tiles with saved labels in the store, or a dataset folder on the
server; built-in variants as checkboxes, stored prompt versions of the zones present as a
multiselect; progress bar), or show any stored one: leaderboard (mIoU, mF1, OA, Δ vs baseline
and vs ``climate``), per-class grouped bar chart, and a tile gallery ranked by ΔIoU for a chosen
class and pair of variants — click a tile to open it in Segment with that variant's prompt.
Export as CSV or JSON. The work is in :mod:`studio.experiments`.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from studio import experiments as svc
from studio import policy
from studio.session import SessionState
from studio.tabs import locate, segment
from studio.tabs.common import EXPERIMENT, UI, Studio, clean_message, session, user_errors

TAB_ID = "experiments"
FOLDER = "dataset folder on the server"
ALL_CLASSES = "(all classes: mIoU)"


def _board(data: Any) -> pd.DataFrame:
    return pd.DataFrame(svc.leaderboard(data), columns=svc.LEADERBOARD_COLS)


# --------------------------------------------------------------------------- visibility
def visible_ids(state: SessionState | None) -> list[int] | None:
    """The experiments a session may see: its own, or all (``None``) when the operator shares them."""
    return None if policy.share_experiments() else list(session(state).experiment_ids)


def own_labels(state: SessionState | None) -> set[int] | None:
    """The saved labels a session's experiments may use: its own, or all (``None``) when shared."""
    return None if policy.share_labels() else set(session(state).label_ids)


def check_visible(experiment_id: Any, state: SessionState | None) -> int:
    """The experiment id if this session may see it (one message for "missing" and "not yours")."""
    try:
        eid = int(experiment_id)
    except (TypeError, ValueError):
        raise gr.Error("Pick an experiment first.") from None
    ids = visible_ids(state)
    if ids is not None and eid not in ids:
        raise gr.Error(f"No experiment #{eid} in this session: start one, or pick one from the list.")
    return eid


# --------------------------------------------------------------------------- handlers
@user_errors
def on_scan(source: str, dataset: str, root: str, split: str, state: SessionState | None):
    """Stored prompt versions of the zones present in the chosen evaluation set."""
    if source == svc.LABELLED:
        folder, _cs, _n = svc.labelled_set(session(state).output_path("experiments") / "labelled_set",
                                           label_ids=own_labels(state))
        zones, cs = svc.zones_of("synthearth", str(folder), "test")
    else:
        if not (root or "").strip():
            raise gr.Error("Type the dataset folder on the server first.")
        zones, cs = svc.zones_of(dataset, str(policy.data_folder(root)), split)
    choices = svc.version_choices(zones, cs)
    present = ", ".join(z or "no zone" for z in zones)
    return gr.update(choices=choices, value=[]), f"Zones present: {present} ({cs} classes)."


@user_errors
def on_start(
    source: str,
    dataset: str,
    root: str,
    split: str,
    variants: list[str],
    versions: list[str],
    limit: float | None,
    state: SessionState | None,
    progress=gr.Progress(),  # noqa: B008 - Gradio injects the progress tracker through the default
):
    state = session(state)
    if not policy.visitor_experiments():
        raise gr.Error("On this server visitors may look at experiments but not start them "
                       "(METASEG_VISITOR_EXPERIMENTS=0).")
    progress(0.0, desc="starting the runner and loading the models")

    def tick(done: int, total: int) -> None:
        progress((done, total), desc="tiles", unit="tile")

    rep = svc.start(source=source, dataset=dataset, root=root, split=split, variants=list(variants or []),
                    versions=list(versions or []), limit=int(limit) if limit else None,
                    work_dir=state.output_path("experiments"), on_progress=tick,
                    sources=state.model_sources, label_ids=own_labels(state))  # fmt: skip
    state.experiment_ids.append(int(rep["experiment_id"]))
    status = f"Experiment **#{rep['experiment_id']}** {rep['status']}: {rep['tiles']}/{rep['n_tiles']} tiles in {rep['seconds']} s."
    if rep["errors"]:
        status += clean_message(f" {len(rep['errors'])} tile(s) failed, e.g. {rep['errors'][0]['tile']}: "
                                f"{rep['errors'][0]['reason']}")
    return state, status, gr.update(choices=svc.experiment_choices(visible_ids(state)), value=rep["experiment_id"])


def on_refresh(current: Any = None, state: SessionState | None = None):
    choices = svc.experiment_choices(visible_ids(state))
    ids = [c[1] for c in choices]
    return gr.update(choices=choices, value=current if current in ids else (ids[0] if ids else None))


@user_errors
def on_show(experiment_id: Any, state: SessionState | None = None):
    if experiment_id in (None, ""):
        empty = pd.DataFrame(columns=svc.LEADERBOARD_COLS)
        return empty, None, gr.update(), gr.update(), gr.update(), ""
    data = svc.load(check_visible(experiment_id, state))
    names = [data.class_names[i] for i in data.scored]
    variants = svc.variant_names(data)
    a = "climate" if "climate" in variants else variants[0]
    b = next(
        (v for v in variants if v != a and v != "baseline"),
        next(v for v in variants if v != a) if len(variants) > 1 else a,
    )
    h = data.header
    info = (f"**#{h['id']}** {h['status']} · {h['model']} ({h['checkpoint_hash']})"
            + (f" vs {h['baseline']} ({h['baseline_checkpoint_hash']})" if h["baseline"] else "")
            + f" · {h['dataset']}/{h['split']} at `{policy.shown_data_path(h['root'])}` · {len(data.tiles)}/{h['n_tiles']} tiles"
            + (f" · {h['seconds']} s" if h["seconds"] else ""))  # fmt: skip
    return (
        _board(data),
        svc.class_chart(data),
        gr.update(choices=[ALL_CLASSES, *names], value=ALL_CLASSES),
        gr.update(choices=variants, value=a),
        gr.update(choices=variants, value=b),
        info,
    )


@user_errors
def on_gallery(experiment_id: Any, class_name: str, a: str, b: str, state: SessionState | None = None,
               progress=gr.Progress()):  # noqa: B008
    eid = check_visible(experiment_id, state)
    progress(0.0, desc="running both variants on the ranked tiles")
    data = svc.load(eid)
    items, picks = svc.gallery(data, None if class_name in (None, "", ALL_CLASSES) else class_name, a, b)
    for p in picks:
        p["class_set"] = data.header["class_set"]
    if not items:
        gr.Info("No tile has this class in its ground truth or predictions.")
    return items, picks


@user_errors
def on_pick(picks: list[dict[str, Any]], state: SessionState | None, evt: gr.SelectData):
    """Open the clicked tile in Segment with the compared variant's prompt filled in."""
    if not picks or evt.index is None or not 0 <= int(evt.index) < len(picks):
        raise gr.Error("Rank the tiles first.")
    pick = picks[int(evt.index)]
    return segment.open_tile(pick["image"], pick["prompt"], pick["class_set"], state)


@user_errors
def on_export(experiment_id: Any, fmt: str, state: SessionState | None):
    if experiment_id in (None, ""):
        raise gr.Error("Pick an experiment first.")
    state = session(state)
    eid = check_visible(experiment_id, state)
    return state, str(svc.export_file(eid, fmt, state.output_path("exports")))


# --------------------------------------------------------------------------- layout
def build(ctx: Studio) -> None:
    with gr.Tab("Experiments", id=TAB_ID):
        gr.Markdown(
            "Prompt experiments over a whole evaluation set: every tile under every prompt variant, "
            "counts stored per tile × variant × class (same runner as `python -m training.sweep`)."
        )
        with gr.Accordion("Start an experiment", open=True):
            exp_source = gr.Radio(
                [svc.LABELLED, FOLDER], value=FOLDER if policy.data_roots() else svc.LABELLED,
                label="Evaluation set", elem_id="exp-source"
            )
            with gr.Row():
                exp_dataset = gr.Dropdown(list(svc.DATASETS), value="synthearth", label="Dataset reader")
                exp_root = gr.Textbox(
                    label="Dataset folder on the server", placeholder="data/synth_test", elem_id="exp-root"
                )
                exp_split = gr.Dropdown(["test", "val", "train"], value="test", label="Split")
            exp_variants = gr.CheckboxGroup(
                list(svc.BUILTIN_VARIANTS),
                value=["climate", "none"],
                label="Variants",
                elem_id="exp-variants",
            )
            with gr.Row():
                exp_scan = gr.Button("List stored prompt versions of the zones present", size="sm")
                exp_versions = gr.Dropdown(
                    choices=[],
                    value=[],
                    multiselect=True,
                    label="Stored prompt versions (each: that version on its zone's tiles)",
                )
            exp_scan_info = gr.Markdown("")
            with gr.Row():
                exp_limit = gr.Number(label="Only the first N tiles (0: all)", precision=0, value=0, minimum=0)
                exp_start = gr.Button("Start experiment", variant="primary", elem_id="exp-start")
            exp_status = gr.Markdown("", elem_id="exp-status")
        with gr.Row():
            exp_pick = gr.Dropdown(choices=[], label="Experiment", elem_id="exp-pick", scale=4)
            exp_refresh = gr.Button("Refresh list", size="sm", scale=1)
        exp_info = gr.Markdown("", elem_id="exp-info")
        exp_board = gr.Dataframe(
            pd.DataFrame(columns=svc.LEADERBOARD_COLS),
            label="Leaderboard (percent)",
            interactive=False,
            elem_id="exp-leaderboard",
        )
        exp_chart = gr.Image(label="Per-class IoU", interactive=False, format="png", elem_id="exp-chart")
        with gr.Row():
            exp_class = gr.Dropdown([ALL_CLASSES], value=ALL_CLASSES, label="Rank tiles by ΔIoU of")
            exp_a = gr.Dropdown([], label="Variant A (left)")
            exp_b = gr.Dropdown([], label="Variant B (right)")
            exp_rank = gr.Button("Rank tiles", elem_id="exp-rank")
        exp_gallery = gr.Gallery(label="Tiles where B gains most over A, then where it loses most (A left, B right); "
                                 "click one to open it in Segment with B's prompt", columns=2, height="auto",
                                 object_fit="contain", allow_preview=False, elem_id="exp-gallery")  # fmt: skip
        exp_picks = gr.State([])
        with gr.Row():
            exp_csv = gr.Button("Export CSV", size="sm")
            exp_json = gr.Button("Export JSON", size="sm")
            exp_file = gr.File(label="Export", interactive=False, height=90)
    ctx.add(exp_source=exp_source, exp_dataset=exp_dataset, exp_root=exp_root, exp_split=exp_split,
            exp_variants=exp_variants, exp_scan=exp_scan, exp_versions=exp_versions, exp_scan_info=exp_scan_info,
            exp_limit=exp_limit, exp_start=exp_start, exp_status=exp_status, exp_pick=exp_pick,
            exp_refresh=exp_refresh, exp_info=exp_info, exp_board=exp_board, exp_chart=exp_chart,
            exp_class=exp_class, exp_a=exp_a, exp_b=exp_b, exp_rank=exp_rank, exp_gallery=exp_gallery,
            exp_picks=exp_picks, exp_csv=exp_csv, exp_json=exp_json, exp_file=exp_file)  # fmt: skip


def wire(ctx: Studio) -> None:
    show_out = [ctx.exp_board, ctx.exp_chart, ctx.exp_class, ctx.exp_a, ctx.exp_b, ctx.exp_info]
    ctx.demo.load(on_refresh, None, [ctx.exp_pick], **UI)
    ctx.exp_refresh.click(on_refresh, [ctx.exp_pick, ctx.state], [ctx.exp_pick], **UI)
    ctx.exp_scan.click(on_scan, [ctx.exp_source, ctx.exp_dataset, ctx.exp_root, ctx.exp_split, ctx.state],
                       [ctx.exp_versions, ctx.exp_scan_info], **UI)  # fmt: skip
    ctx.exp_start.click(on_start, [ctx.exp_source, ctx.exp_dataset, ctx.exp_root, ctx.exp_split, ctx.exp_variants,
                                   ctx.exp_versions, ctx.exp_limit, ctx.state],
                        [ctx.state, ctx.exp_status, ctx.exp_pick], **UI, **EXPERIMENT)  # fmt: skip
    ctx.exp_pick.change(on_show, [ctx.exp_pick, ctx.state], show_out, **UI)
    ctx.exp_rank.click(on_gallery, [ctx.exp_pick, ctx.exp_class, ctx.exp_a, ctx.exp_b, ctx.state],
                       [ctx.exp_gallery, ctx.exp_picks], **UI, **EXPERIMENT)  # fmt: skip
    ev = ctx.exp_gallery.select(on_pick, [ctx.exp_picks, ctx.state], segment.open_tile_outputs(ctx), **UI)
    locate.tile_event(ctx, ev)
    ctx.exp_csv.click(
        lambda e, s: on_export(e, "csv", s), [ctx.exp_pick, ctx.state], [ctx.state, ctx.exp_file], **UI
    )
    ctx.exp_json.click(lambda e, s: on_export(e, "json", s), [ctx.exp_pick, ctx.state], [ctx.state, ctx.exp_file],
                       **UI)  # fmt: skip
