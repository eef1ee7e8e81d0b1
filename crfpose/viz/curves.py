"""Numbers as figures: PCK curves (:func:`plot_pck_curves`), per-part or per-joint PCK bars
(:func:`plot_joint_pck`) with bootstrap intervals (:func:`pck_intervals`), and a training run's log
(:func:`plot_training`).

Shape legend: A thresholds (alphas), K joints, P parts (left and right joints merged), N poses, R runs.

A *result* is what :func:`crfpose.evaluate.compute_metrics` or :func:`crfpose.evaluate.evaluate` returns
(or ``crfpose eval --out`` writes as JSON, given here as its path): ``pck``, ``alpha``, ``normalizer``,
``pck_per_joint`` (joint name -> PCK) and ``pck_curve`` (``alphas`` and pooled ``mean``). A
:class:`crfpose.metrics.PCKCurve` is also accepted by :func:`plot_pck_curves`. Optional keys drawn when
present: ``pck_per_joint_ci``, ``pck_per_part_ci`` (name -> ``[low, high]``) and ``pck_ci`` as
:func:`pck_intervals` returns them, and ``pck_curve["low"]`` / ``["high"]`` (A,) for a band.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from crfpose import metrics
from crfpose.skeletons import Skeleton
from crfpose.viz._base import DOUBLE_COLUMN, SINGLE_COLUMN, Style, figure_of, get_style, legend_rows, new_figure, styled

__all__ = ["load_result", "load_log", "plot_pck_curves", "plot_joint_pck", "plot_training", "pck_intervals", "part_name"]

LINESTYLES = ("solid", (0, (5, 2)), (0, (1, 1.5)), (0, (5, 1.5, 1, 1.5)))
HATCHES = ("", "////", "....", "xxxx", "\\\\\\\\", "oo")
# Okabe and Ito's colour-blind-safe set (without its yellow, too light on white), in order of use.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
NORMALIZER_TEXT = {
    "bbox": "person-box size",
    "torso": "torso size",
    "head": "head-segment length",
    "headbox": "0.6 × head-box diagonal",
}
SIDE_PREFIXES = ("left_", "right_")
# Parts top to bottom, as pose papers order their tables; parts not named here follow in their own order.
PART_ORDER = (
    "head_top",
    "head",
    "nose",
    "eye",
    "ear",
    "upper_neck",
    "neck",
    "thorax",
    "shoulder",
    "elbow",
    "wrist",
    "pelvis",
    "hip",
    "knee",
    "ankle",
)
MISSING = "no value"  # the legend's name of the mark where a bar is missing


# ----------------------------------------------------------------------------- inputs


def load_result(result: Any, name: str = "results") -> Any:
    """A result dict (or :class:`~crfpose.metrics.PCKCurve`) as given, or read from a JSON file path."""
    if isinstance(result, (str, os.PathLike)):
        path = Path(result)
        if not path.is_file():
            raise ValueError(f"{name}: file not found: {str(path)!r}")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{name}: {str(path)!r} is not JSON: {err}") from None
    return result


def _runs(results: Any, labels: Optional[Sequence[str]]) -> tuple[list[Any], list[str]]:
    if isinstance(results, (dict, str, os.PathLike, metrics.PCKCurve)):
        results = [results]
    if not isinstance(results, (list, tuple)) or not results:
        raise ValueError(
            f"results: expected a result (dict, PCKCurve or JSON path) or a non-empty list of them, got {type(results).__name__}"
        )
    runs = [load_result(r, f"results[{i}]") for i, r in enumerate(results)]
    if labels is None:
        labels = [f"run {i + 1}" for i in range(len(runs))]
    if isinstance(labels, str) or len(labels) != len(runs):
        raise ValueError(f"labels: expected {len(runs)} labels, one per result, got {labels!r}")
    return runs, [str(label) for label in labels]


def _curve(result: Any, i: int) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """``(alphas, mean, band)`` of a result; ``band`` (2, A) low and high, or None."""
    if isinstance(result, metrics.PCKCurve):
        return np.asarray(result.alphas, float), np.asarray(result.mean, float), None
    curve = result.get("pck_curve", result) if isinstance(result, dict) else None
    if not isinstance(curve, dict) or "alphas" not in curve or "mean" not in curve:
        got = sorted(result) if isinstance(result, dict) else type(result).__name__
        raise ValueError(
            f"results[{i}]: expected a PCKCurve or a dict with 'pck_curve' ({{'alphas', 'mean'}}, as "
            f"crfpose.evaluate.compute_metrics returns), got {got}"
        )
    alphas, mean = np.asarray(curve["alphas"], float), np.asarray(curve["mean"], float)
    if alphas.ndim != 1 or alphas.shape != mean.shape or len(alphas) < 2:
        raise ValueError(f"results[{i}]: expected 'alphas' and 'mean' of one length >= 2, got {alphas.shape} and {mean.shape}")
    band = None
    if "low" in curve and "high" in curve:
        band = np.array([curve["low"], curve["high"]], dtype=float)
        if band.shape != (2, len(alphas)):
            raise ValueError(f"results[{i}]: expected 'low' and 'high' of the length of 'alphas' ({len(alphas)}), got {band.shape}")
    return alphas, mean, band


def _normalizer_text(runs: list[Any]) -> Optional[str]:
    name = next((r.get("normalizer") for r in runs if isinstance(r, dict) and r.get("normalizer")), None)
    return NORMALIZER_TEXT.get(name, name) if name else None


def _plot_axes(ax: Optional[Axes], st: Style, width: float, aspect: float) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new figure (the style's width, else ``width``) ``aspect`` times as tall, one axes."""
    if ax is not None:
        return figure_of(ax), ax
    w = st.figure_width(width)
    fig = new_figure(st, w * aspect, w, layout="constrained")
    return fig, fig.add_subplot()


def _legend_above(ax: Axes, handles: list, labels: list[str], st: Style) -> None:
    """A legend above ``ax``, read row by row in the order given."""
    width = ax.get_position().width * ax.figure.get_figwidth()
    hs, ls, cols, _ = legend_rows(handles, labels, width, st)
    ax.legend(hs, ls, loc="lower center", bbox_to_anchor=(0.5, 1.01), ncols=cols, frameon=False, borderaxespad=0.0)


# ----------------------------------------------------------------------------- PCK curves


def plot_pck_curves(
    results: Any,
    labels: Optional[Sequence[str]] = None,
    *,
    ax: Optional[Axes] = None,
    style: Union[str, Style, None] = None,
) -> Figure:
    """PCK (%) against the threshold alpha (the x label names the normaliser), one curve per run labelled
    with its AUC; runs differ in colour (colour-blind safe) and in line style (greyscale print); a result's
    ``low``/``high`` curve is drawn as a band. The legend lists the runs from the largest AUC down, the
    order in which the curves lie on the plot."""
    runs, names = _runs(results, labels)
    curves = [_curve(r, i) for i, r in enumerate(runs)]
    st = get_style(style)
    normalizer = _normalizer_text(runs)
    with styled(st):
        fig, ax = _plot_axes(ax, st, SINGLE_COLUMN, 0.72)
        handles, texts, areas = [], [], []
        for i, ((alphas, mean, band), name) in enumerate(zip(curves, names)):
            ok = np.isfinite(mean)
            area = float(metrics.auc(alphas[ok], mean[ok])) if ok.sum() >= 2 else math.nan
            colour = COLORS[i % len(COLORS)]
            if band is not None:
                ax.fill_between(alphas, 100 * band[0], 100 * band[1], color=colour, alpha=0.2, linewidth=0, gid=f"band{i}")
            (line,) = ax.plot(alphas, 100 * mean, color=colour, linestyle=LINESTYLES[i % len(LINESTYLES)], gid=f"curve{i}")
            handles.append(line)
            texts.append(f"{name} (AUC {100 * area:.1f})")
            areas.append(area if np.isfinite(area) else -np.inf)
        order = np.argsort(-np.asarray(areas), kind="stable")
        ax.set_xlabel("threshold α" + (f" (× {normalizer})" if normalizer else ""))
        ax.set_ylabel("PCK (%)")
        ax.set_ylim(0, 100)
        ax.set_xlim(min(c[0][0] for c in curves), max(c[0][-1] for c in curves))
        ax.grid(alpha=0.3, linewidth=0.5)
        ax.legend([handles[i] for i in order], [texts[i] for i in order], loc="lower right", frameon=False)
    return fig


# ----------------------------------------------------------------------------- per part / per joint


def part_name(joint: str) -> str:
    """The part a joint belongs to: its name without a ``left_`` / ``right_`` prefix."""
    for prefix in SIDE_PREFIXES:
        if joint.startswith(prefix):
            return joint[len(prefix) :]
    return joint


def _parts(joints: Sequence[str]) -> dict[str, list[str]]:
    """Part -> its joints, parts ordered top to bottom (:data:`PART_ORDER`), others after in joint order."""
    groups: dict[str, list[str]] = {}
    for j in joints:
        groups.setdefault(part_name(j), []).append(j)
    rank = {p: i for i, p in enumerate(PART_ORDER)}
    first = {p: i for i, p in enumerate(groups)}
    return {p: groups[p] for p in sorted(groups, key=lambda p: (rank.get(p, len(rank)), first[p]))}


def _value(x: Any) -> float:
    return math.nan if x is None else float(x)


def _interval(ci: Any) -> tuple[float, float]:
    if ci is None:
        return math.nan, math.nan
    low, high = ci
    return _value(low), _value(high)


def _group_values(result: dict, groups: dict[str, list[str]]) -> list[float]:
    """A result's PCK per group (the mean of its joints that have a value; NaN when none has), then ``pck``."""
    per_joint = {j: _value(v) for j, v in result["pck_per_joint"].items()}
    values = [
        float(np.nanmean([per_joint[j] for j in members])) if any(np.isfinite(per_joint[j]) for j in members) else math.nan
        for members in groups.values()
    ]
    return values + [_value(result.get("pck"))]


def plot_joint_pck(
    results: Any,
    labels: Optional[Sequence[str]] = None,
    *,
    parts: bool = True,
    ax: Optional[Axes] = None,
    style: Union[str, Style, None] = None,
) -> Figure:
    """PCK (%) as bars grouped by body part (left and right joints averaged, as pose papers report it) or,
    with ``parts=False``, by joint; one bar per run (colour and hatch), the pooled mean as the last group.

    Bootstrap intervals are drawn as error bars where a result carries them (``pck_per_part_ci`` or
    ``pck_per_joint_ci``, and ``pck_ci`` for the mean; :func:`pck_intervals`). A missing value (NaN or None,
    e.g. a joint never labelled) has no bar but a grey cross on the axis, named in the legend: it is never
    drawn as 0. A part is the mean of its joints that have a value. The y label states alpha and the
    normaliser, the x label what the whiskers are (their level: ``ci_level``)."""
    runs, names = _runs(results, labels)
    for i, r in enumerate(runs):
        if not isinstance(r, dict) or not isinstance(r.get("pck_per_joint"), dict):
            got = sorted(r) if isinstance(r, dict) else type(r).__name__
            raise ValueError(f"results[{i}]: expected a dict with 'pck_per_joint' (joint -> PCK), got {got}")
    joints = list(runs[0]["pck_per_joint"])
    for i, r in enumerate(runs[1:], start=1):
        if set(r["pck_per_joint"]) != set(joints):
            raise ValueError(f"results[{i}]: expected the joints of results[0] {joints}, got {list(r['pck_per_joint'])}")
    groups = _parts(joints) if parts else {j: [j] for j in joints}
    alpha = runs[0].get("alpha")
    normalizer = _normalizer_text(runs)
    st = get_style(style)
    width = 0.8 / len(runs)
    values = 100 * np.array([_group_values(r, groups) for r in runs])  # (R, groups + 1), the mean last
    entries = names + ([MISSING] if not np.isfinite(values).all() else [])
    with styled(st):
        tick_labels = [g.replace("_", " ") for g in groups] + ["mean"]
        width_in = st.figure_width(SINGLE_COLUMN if parts else DOUBLE_COLUMN) if ax is None else ax.figure.get_figwidth()
        spacing = 0.85 * width_in / len(tick_labels)
        widest = max(0.55 * st.small * len(t) for t in tick_labels) / 72  # inches
        upright = widest < 0.9 * spacing
        # the plot area, the tick labels (turned upright when they do not fit side by side), the legend rows, a label line on the whiskers
        legend_rows_in = legend_rows(entries, entries, width_in, st)[3] * st.line_height(st.small)
        has_intervals = any(r.get("pck_per_part_ci" if parts else "pck_per_joint_ci") or r.get("pck_ci") for r in runs)
        height = 1.5 + (st.line_height(st.small) if upright else widest + 0.05) + legend_rows_in + (2 + has_intervals) * st.line_height()
        fig, ax = _plot_axes(ax, st, SINGLE_COLUMN if parts else DOUBLE_COLUMN, height / width_in)
        x = np.arange(len(groups) + 1)
        handles, missing, levels = [], [], set()
        for i, (r, heights) in enumerate(zip(runs, values)):
            cis = r.get("pck_per_part_ci" if parts else "pck_per_joint_ci") or {}
            bounds = np.array([_interval(cis.get(g)) for g in groups] + [_interval(r.get("pck_ci"))])  # (groups + 1, 2)
            centres = x - 0.4 + (i + 0.5) * width
            ok = np.isfinite(heights)
            bars = ax.bar(
                centres[ok],
                heights[ok],
                width,
                color=COLORS[i % len(COLORS)],
                hatch=HATCHES[i % len(HATCHES)],
                edgecolor="white",
                linewidth=0.3,
                gid=f"bars{i}",
            )
            handles.append(bars)
            has_ci = ok & np.isfinite(bounds).all(1)
            if has_ci.any():
                levels.add(r.get("ci_level"))
                low, high = 100 * bounds[has_ci, 0], 100 * bounds[has_ci, 1]
                # a percentile interval need not contain the estimate: draw it as it is, not as +/- errors
                cap = 0.25 * width
                ax.vlines(centres[has_ci], low, high, colors="black", linewidth=0.6, zorder=3, gid=f"intervals{i}")
                ax.hlines(
                    np.r_[low, high],
                    np.r_[centres[has_ci], centres[has_ci]] - cap,
                    np.r_[centres[has_ci], centres[has_ci]] + cap,
                    colors="black",
                    linewidth=0.6,
                    zorder=3,
                )
            missing += list(centres[~ok])
        if missing:
            marks = ax.scatter(
                missing, np.zeros(len(missing)), marker="x", s=16, color="0.35", linewidths=0.8, zorder=4, clip_on=False, gid="missing"
            )
            handles.append(marks)
        ax.set_xticks(x, tick_labels, rotation=0 if upright else 90)
        ax.set_xlim(-0.6, len(x) - 0.4)
        ax.set_ylim(0, 100)
        head = f"PCK@{alpha:g} (%)" if isinstance(alpha, (int, float)) else "PCK (%)"
        ax.set_ylabel(head + (f"\nα × {normalizer}" if normalizer else ""))
        whiskers = ""
        if levels:  # say what the whiskers are: their level where every result states the same one
            level = levels.pop() if len(levels) == 1 else None
            stated = f"{100 * level:g}% " if isinstance(level, (int, float)) else ""
            whiskers = f"\nwhiskers: {stated}bootstrap intervals"
        ax.set_xlabel(("body part (left and right averaged)" if parts else "joint") + whiskers)
        ax.grid(axis="y", alpha=0.3, linewidth=0.5)
        ax.set_axisbelow(True)
        _legend_above(ax, handles, entries, st)
    return fig


def pck_intervals(
    correct: Any,
    counted: Any,
    skeleton: Union[Skeleton, Sequence[str]],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Bootstrap intervals of PCK (fractions) for :func:`plot_joint_pck`: ``pck_per_joint_ci``,
    ``pck_per_part_ci`` (name -> ``[low, high]``) and ``pck_ci`` (pooled), by resampling poses
    (:func:`crfpose.structure.paired_bootstrap`).

    Args:
        correct: ``(N, K)`` bools, joint k of pose n within the PCK radius
            (``crfpose.structure.structure_scores(...)["correct"]``).
        counted: ``(N, K)`` bools, joint k of pose n scored (labelled).
        skeleton: the skeleton, or the K joint names.
    """
    from crfpose.structure import paired_bootstrap, pooled_pck

    names = list(skeleton.joints if isinstance(skeleton, Skeleton) else skeleton)
    correct, counted = np.asarray(correct, bool), np.asarray(counted, bool)
    if correct.shape != counted.shape or correct.ndim != 2 or correct.shape[1] != len(names):
        raise ValueError(f"correct, counted: expected two (N, K={len(names)}) arrays, got {correct.shape} and {counted.shape}")
    groups = _parts(names)
    index = {j: k for k, j in enumerate(names)}

    def statistic(idx: np.ndarray) -> dict[str, float]:
        hits, seen = (correct[idx] & counted[idx]).sum(0), counted[idx].sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_joint = np.where(seen > 0, hits / np.maximum(seen, 1), np.nan)
        out = {f"joint:{j}": float(per_joint[index[j]]) for j in names}
        for part, members in groups.items():
            values = [per_joint[index[j]] for j in members]
            out[f"part:{part}"] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        out["pck"] = pooled_pck(correct[idx], counted[idx])
        return out

    with warnings.catch_warnings():  # a joint never labelled has no value in any draw: its interval is NaN, as it should be
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = paired_bootstrap(statistic, len(correct), resamples=resamples, seed=seed, level=level)
    return {
        "pck_per_joint_ci": {j: ci[f"joint:{j}"] for j in names},
        "pck_per_part_ci": {p: ci[f"part:{p}"] for p in groups},
        "pck_ci": ci["pck"],
        "ci_level": level,
    }


# ----------------------------------------------------------------------------- training


def load_log(log: Any) -> list[dict]:
    """The records of a run's ``log.jsonl`` (a path), or a list of record dicts as given."""
    if isinstance(log, (str, os.PathLike)):
        path = Path(log)
        if not path.is_file():
            raise ValueError(f"log: file not found: {str(path)!r}")
        records = []
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"log: line {n} of {str(path)!r} is not JSON: {err}") from None
        log = records
    if not isinstance(log, (list, tuple)) or not log or not all(isinstance(r, dict) for r in log):
        raise ValueError(f"log: expected a log.jsonl path or a non-empty list of record dicts, got {type(log).__name__}")
    for n, r in enumerate(log):
        missing = [k for k in ("global_epoch", "stage", "loss", "lr") if k not in r]
        if missing:
            raise ValueError(f"log: record {n} lacks {missing}; expected the records crfpose.train writes")
    return list(log)


LOSS_KINDS = {"mse": "heatmap MSE", "crf": "CRF NLL (nats)"}
# What crfpose.engine's stages optimise and train, for logs that do not say (records may carry
# ``loss_kind`` and ``trains``; ``lr`` may be a dict parameter group -> rate).
STAGE_LOSS = {"heatmap": "mse", "crf": "crf", "joint": "crf"}
STAGE_GROUP = {"heatmap": "backbone", "crf": "CRF", "joint": "all parameters"}


def _segments(records: list[dict]) -> list[tuple[str, list[dict]]]:
    """Consecutive records of one stage, in epoch order."""
    out: list[tuple[str, list[dict]]] = []
    for r in records:
        if not out or out[-1][0] != r["stage"]:
            out.append((r["stage"], []))
        out[-1][1].append(r)
    return out


def _rates(record: dict) -> dict[str, float]:
    """Parameter group -> learning rate of a record."""
    lr = record["lr"]
    if isinstance(lr, dict):
        return {str(k): float(v) for k, v in lr.items()}
    return {str(record.get("trains") or STAGE_GROUP.get(record["stage"], record["stage"])): float(lr)}


def plot_training(
    log: Any,
    *,
    alpha: Optional[float] = None,
    normalizer: Optional[str] = None,
    style: Union[str, Style, None] = None,
) -> Figure:
    """A training run from its ``log.jsonl`` (path or records) against the epoch: one panel per loss kind
    (heatmap MSE and CRF NLL are not comparable, so never share an axis), the learning rate with one line
    per parameter group (log scale), and the validation PCK (%). Lines are coloured by parameter group,
    named in the legend; stage boundaries are dashed. ``alpha`` and ``normalizer`` (of the run's config)
    complete the PCK label."""
    records = sorted(load_log(log), key=lambda r: r["global_epoch"])
    st = get_style(style)
    segments = _segments(records)
    kinds = list(dict.fromkeys(str(r.get("loss_kind") or STAGE_LOSS.get(r["stage"], "crf")) for r in records))
    groups = list(dict.fromkeys(g for r in records for g in _rates(r)))
    colour = {g: COLORS[i % len(COLORS)] for i, g in enumerate(groups)}
    has_val = any(isinstance(r.get("val"), dict) and r["val"].get("pck") is not None for r in records)
    panels = len(kinds) + 1 + int(has_val)
    cols = 2 if panels > 1 else 1
    rows = math.ceil(panels / cols)
    width = st.figure_width(DOUBLE_COLUMN)
    with styled(st):
        fig = new_figure(st, 0.45 + 1.55 * rows, width, layout="constrained")
        grid = fig.add_gridspec(rows, cols)
        axes = [fig.add_subplot(grid[i // cols, i % cols]) for i in range(panels)]
        loss_axes = dict(zip(kinds, axes))
        lr_ax = axes[len(kinds)]
        val_ax = axes[-1] if has_val else None
        for s, (stage, rs) in enumerate(segments):
            epochs = [r["global_epoch"] for r in rs]
            kind = str(rs[0].get("loss_kind") or STAGE_LOSS.get(stage, "crf"))
            group = next(iter(_rates(rs[0])))
            loss_axes[kind].plot(epochs, [r["loss"] for r in rs], marker="o", markersize=2.5, color=colour[group], gid=f"loss-{s}")
            for g in dict.fromkeys(g for r in rs for g in _rates(r)):
                lrs = [_rates(r).get(g, math.nan) for r in rs]
                lr_ax.plot(epochs, lrs, marker="o", markersize=2.5, color=colour[g], gid=f"lr-{s}-{g}")
            val = [(r["global_epoch"], r["val"]["pck"]) for r in rs if isinstance(r.get("val"), dict) and "pck" in r["val"]]
            if val_ax is not None and val:
                ex, ey = zip(*val)
                val_ax.plot(ex, [100 * _value(v) for v in ey], marker="o", markersize=2.5, color=colour[group], gid=f"val-{s}")
            if s:
                for ax in axes:
                    ax.axvline(epochs[0] - 0.5, color="0.5", linestyle=(0, (3, 2)), linewidth=0.6, gid="stage-boundary")
        for kind, ax in loss_axes.items():
            ax.set_ylabel(LOSS_KINDS.get(kind, f"{kind} loss"))
            values = [r["loss"] for r in records if str(r.get("loss_kind") or STAGE_LOSS.get(r["stage"], "crf")) == kind]
            if all(v > 0 for v in values) and max(values) > 20 * min(values):
                ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate")
        if all(v > 0 for r in records for v in _rates(r).values()):
            lr_ax.set_yscale("log")
        if val_ax is not None:
            head = f"val. PCK@{alpha:g} (%)" if alpha is not None else "val. PCK (%)"
            val_ax.set_ylabel(head + (f"\nα × {NORMALIZER_TEXT.get(normalizer, normalizer)}" if normalizer else ""))
        first, last = records[0]["global_epoch"], records[-1]["global_epoch"]
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.set_xlim(first - 0.6, last + 0.6)
            ax.grid(alpha=0.3, linewidth=0.5)
        fig.align_ylabels(axes)
        stage_of = {next(iter(_rates(rs[0]))): stage for stage, rs in segments}
        handles = [Line2D([], [], marker="o", markersize=2.5, color=colour[g]) for g in groups]
        texts = [f"{g} ({stage_of[g]} stage)" if g in stage_of else g for g in groups]
        hs, ls, columns, _ = legend_rows(handles, texts, width, st)
        fig.legend(hs, ls, loc="outside upper center", ncols=columns, frameon=False)
    return fig
