"""Numbers as figures: PCK curves (:func:`plot_pck_curves`), per-joint PCK bars (:func:`plot_joint_pck`)
and a training run's log (:func:`plot_training`).

Shape legend: A thresholds (alphas), K joints, R runs compared.

A *result* is what :func:`crfpose.evaluate.compute_metrics` or :func:`crfpose.evaluate.evaluate` returns
(or ``crfpose eval --out`` writes as JSON, given here as its path): ``pck``, ``alpha``, ``pck_per_joint``
(joint name -> PCK) and ``pck_curve`` (``alphas`` and pooled ``mean``). A
:class:`crfpose.metrics.PCKCurve` is also accepted by :func:`plot_pck_curves`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from crfpose import metrics
from crfpose.viz._base import Style, axes_for, get_style, new_figure, styled

__all__ = ["load_result", "load_log", "plot_pck_curves", "plot_joint_pck", "plot_training"]

LINESTYLES = ("solid", (0, (5, 2)), (0, (1, 1.5)), (0, (5, 1.5, 1, 1.5)))
HATCHES = ("", "///", "...", "xx", "\\\\", "oo")
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


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


def _curve(result: Any, i: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(result, metrics.PCKCurve):
        return np.asarray(result.alphas, float), np.asarray(result.mean, float)
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
    return alphas, mean


def _single_axes(ax: Optional[Axes], st: Style, aspect: float) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new figure ``aspect`` times as tall as wide with one axes."""
    if ax is not None:
        return axes_for(ax, st, 1.0)
    fig = new_figure(st, st.width * aspect, layout="constrained")
    return fig, fig.add_subplot()


def plot_pck_curves(
    results: Any,
    labels: Optional[Sequence[str]] = None,
    *,
    ax: Optional[Axes] = None,
    style: Union[str, Style, None] = None,
) -> Figure:
    """PCK (%) against the threshold alpha, one curve per run, labelled with the run's AUC; runs differ in
    colour and in line style (greyscale print)."""
    runs, names = _runs(results, labels)
    curves = [_curve(r, i) for i, r in enumerate(runs)]
    st = get_style(style)
    normalizer = next((r.get("normalizer") for r in runs if isinstance(r, dict) and r.get("normalizer")), None)
    with styled(st):
        fig, ax = _single_axes(ax, st, 0.62)
        for i, ((alphas, mean), name) in enumerate(zip(curves, names)):
            ok = np.isfinite(mean)
            area = float(metrics.auc(alphas[ok], mean[ok])) if ok.sum() >= 2 else math.nan
            ax.plot(
                alphas,
                100 * mean,
                color=COLORS[i % len(COLORS)],
                linestyle=LINESTYLES[i % len(LINESTYLES)],
                label=f"{name} (AUC {100 * area:.1f})",
                gid=f"curve{i}",
            )
        ax.set_xlabel("threshold α" + (f" (fraction of the {normalizer} size)" if normalizer else ""))
        ax.set_ylabel("PCK (%)")
        ax.set_ylim(0, 100)
        ax.set_xlim(min(c[0][0] for c in curves), max(c[0][-1] for c in curves))
        ax.grid(alpha=0.3, linewidth=0.5)
        ax.legend(loc="lower right", frameon=False)
    return fig


def plot_joint_pck(
    results: Any,
    labels: Optional[Sequence[str]] = None,
    *,
    ax: Optional[Axes] = None,
    style: Union[str, Style, None] = None,
) -> Figure:
    """Per-joint PCK (%) as bars grouped by joint, one bar per run (colour and hatch), with the pooled
    mean as the last group. Joints follow the first result's ``pck_per_joint`` order."""
    runs, names = _runs(results, labels)
    for i, r in enumerate(runs):
        if not isinstance(r, dict) or not isinstance(r.get("pck_per_joint"), dict):
            got = sorted(r) if isinstance(r, dict) else type(r).__name__
            raise ValueError(f"results[{i}]: expected a dict with 'pck_per_joint' (joint -> PCK), got {got}")
    joints = list(runs[0]["pck_per_joint"])
    for i, r in enumerate(runs[1:], start=1):
        if set(r["pck_per_joint"]) != set(joints):
            raise ValueError(f"results[{i}]: expected the joints of results[0] {joints}, got {list(r['pck_per_joint'])}")
    alpha = runs[0].get("alpha")
    st = get_style(style)
    groups = joints + ["mean"]
    width = 0.8 / len(runs)
    with styled(st):
        fig, ax = _single_axes(ax, st, 0.5)
        x = np.arange(len(groups))
        for i, (r, name) in enumerate(zip(runs, names)):
            values = [r["pck_per_joint"][j] for j in joints] + [r.get("pck", math.nan)]
            heights = 100 * np.array([math.nan if v is None else float(v) for v in values])
            ax.bar(
                x - 0.4 + (i + 0.5) * width,
                np.nan_to_num(heights),
                width,
                color=COLORS[i % len(COLORS)],
                hatch=HATCHES[i % len(HATCHES)],
                edgecolor="white",
                linewidth=0.3,
                label=name,
                gid=f"bars{i}",
            )
        ax.set_xticks(x, [g.replace("_", " ") for g in groups], rotation=60, ha="right")
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"PCK@{alpha:g} (%)" if isinstance(alpha, (int, float)) else "PCK (%)")
        ax.grid(axis="y", alpha=0.3, linewidth=0.5)
        columns = max(1, min(len(runs), 4, int(80 // max(len(n) + 6 for n in names))))  # long labels: fewer columns
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=columns, frameon=False, borderaxespad=0.2)
    return fig


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


def plot_training(log: Any, *, style: Union[str, Style, None] = None) -> Figure:
    """A training run from its ``log.jsonl`` (path or records): training loss, learning rate and validation
    PCK (%) against the epoch, one colour per stage, stage boundaries marked and named."""
    records = sorted(load_log(log), key=lambda r: r["global_epoch"])
    st = get_style(style)
    stages: list[tuple[str, list[dict]]] = []
    for r in records:
        if not stages or stages[-1][0] != r["stage"]:
            stages.append((r["stage"], []))
        stages[-1][1].append(r)
    with styled(st):
        fig = new_figure(st, st.width * 0.85, layout="constrained")
        axes = list(fig.subplots(3, 1, sharex=True))
        loss_ax, lr_ax, val_ax = axes
        for s, (name, rs) in enumerate(stages):
            colour = COLORS[s % len(COLORS)]
            epochs = [r["global_epoch"] for r in rs]
            loss_ax.plot(epochs, [r["loss"] for r in rs], marker="o", markersize=2.5, color=colour, gid=f"loss-{s}")
            lr_ax.plot(epochs, [r["lr"] for r in rs], marker="o", markersize=2.5, color=colour, gid=f"lr-{s}")
            val = [(r["global_epoch"], r["val"]["pck"]) for r in rs if isinstance(r.get("val"), dict) and "pck" in r["val"]]
            if val:
                ex, ey = zip(*val)
                val_ax.plot(
                    ex,
                    [100 * float(v) if v is not None else math.nan for v in ey],
                    marker="o",
                    markersize=2.5,
                    color=colour,
                    gid=f"val-{s}",
                )
            start = epochs[0] - 0.5
            for ax in axes:
                if s:
                    ax.axvline(start, color="0.5", linestyle=(0, (3, 2)), linewidth=0.6)
            loss_ax.text(
                start + 0.1,
                1.02,
                name,
                transform=loss_ax.get_xaxis_transform(),
                color=colour,
                fontsize=st.font_size - 1,
                ha="left",
                va="bottom",
            )
        if all(r["loss"] > 0 for r in records):
            loss_ax.set_yscale("log")
        if all(r["lr"] > 0 for r in records):
            lr_ax.set_yscale("log")
        loss_ax.set_ylabel("training loss")
        lr_ax.set_ylabel("learning rate")
        val_ax.set_ylabel("val. PCK (%)")
        val_ax.set_xlabel("epoch")
        first, last = records[0]["global_epoch"], records[-1]["global_epoch"]
        for ax in axes:
            ax.set_xlim(first - 0.6, last + 0.6)
            ax.grid(alpha=0.3, linewidth=0.5)
    return fig
