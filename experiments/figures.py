"""Figures of an experiment grid's report, drawn from the rows' kept test predictions, their collected
results and checkpoints (nothing is re-run but the CRF of one kernel figure): with :mod:`crfpose.viz`,
and here with matplotlib for the two the library does not draw (gains, reliability).

Shape legend: N test poses, K joints, B score bins.

* ``gains.png``: every comparison of the grid (each result against its baseline and its ``also``
  results), the PCK gain with its 95% paired bootstrap interval: every compared row in one figure;
* ``pck_curves.png`` and ``joint_pck.png``: PCK against alpha, and per joint, of the results named in
  ``focus`` (e.g. the MSE CNN, the control, the trees); ``python -m experiments.figures GRID.yaml`` redraws
  these two from the report's ``results.json`` alone, for a report whose rows are gone;
* ``reliability.png``: the reliability diagram of the ``focus`` results' keypoint scores (how often a
  joint of each score is correct at PCK@alpha) above the share of joints in each score bin;
* ``gallery_<a>_vs_<b>.png``: the test images where two results differ most, ground truth and both;
* ``kernels_<row>.png`` / ``deformation_<row>.png``: a structured row's learned pairwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crfpose import viz
from crfpose.checkpoint import load_model
from crfpose.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from crfpose.skeletons import get_skeleton
from crfpose.viz.curves import COLORS, LINESTYLES
from experiments import scoring

__all__ = ["draw", "draw_from_results"]

GALLERY_DPI = 72  # photographs compress poorly: keep the gallery small enough to commit
STYLE = viz.STYLES["screen"]
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # with the library's colours and line styles: apart in grey too


def _images(dataset, indices: Sequence[int]) -> list:
    """Each test pose's original image: the file of a record, or (synthetic data, identity affine) the crop."""
    if hasattr(dataset, "records"):
        return [dataset.records[i].file for i in indices]
    mean, std = (torch.tensor(v)[:, None, None] for v in (IMAGENET_MEAN, IMAGENET_STD))
    return [(dataset[i]["image"] * std + mean).clamp(0, 1) for i in indices]


def draw(grid, results: list[dict], load_predictions, test_set, focus: Sequence[str] = (), gallery: int = 3) -> list[Path]:
    """Write the report's figures into ``grid.report / "figures"``; returns their paths.

    ``load_predictions(name)`` gives a result's saved predictions; ``test_set()`` the test dataset;
    ``focus``: result names for the per-joint bars and the gallery (first two compared), default the
    first and the last result with a baseline.
    """
    if not results:
        return []
    out = grid.report / "figures"
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.png"):  # figures of results that changed name or are gone
        stale.unlink()
    focus = _focus(results, focus)
    chosen = [r for r in results if r["name"] in focus]
    written = []
    if any("gain" in r or "also" in r for r in results):
        written.append(viz.save(plot_gains(results, grid.evaluate["alpha"]), out / "gains.png"))
    if all(r.get("calibration") for r in chosen):
        written.append(viz.save(plot_reliability(chosen, grid.evaluate["alpha"]), out / "reliability.png"))
    written += _curves(grid, chosen, out, [_with_intervals(grid, r, load_predictions) for r in chosen])
    if len(focus) >= 2:
        a, b = (load_predictions(n) for n in focus[:2])
        dataset = test_set()
        skeleton = dataset.skeleton
        pick = viz.most_different(a["gt"], {focus[0]: a["pred"], focus[1]: b["pred"]}, skeleton, gallery)
        figure = viz.plot_gallery(
            _images(dataset, [int(a["index"][i]) for i in pick]),
            a["gt"][pick],
            {focus[0]: a["pred"][pick, :, :2], focus[1]: b["pred"][pick, :, :2]},
            skeleton,
            num=len(pick),
        )
        written.append(viz.save(figure, out / f"gallery_{_slug(focus[0])}_vs_{_slug(focus[1])}.png", dpi=GALLERY_DPI))
    for row in dict.fromkeys(r["row"] for r in chosen):  # a row's kernels once, whatever its decoders
        model, config = load_model(grid.folder(row) / "last.pt")
        if model.head is None or config.crf.structure != "tree" or config.crf.pairwise == "flat":
            continue
        skeleton = get_skeleton(config.skeleton)
        with torch.no_grad():
            tables = _tables(model)
        written.append(viz.save(viz.plot_pairwise(tables, skeleton), out / f"kernels_{row}.png"))
        if config.crf.pairwise in ("gaussian", "axis_gaussian"):  # one ellipse per limb reads a Gaussian, not a mixture's rings
            written.append(viz.save(viz.plot_deformation(tables, skeleton), out / f"deformation_{row}.png"))
    return written


def draw_from_results(grid) -> list[Path]:
    """Redraw the two figures of ``grid``'s report that need only its ``results.json`` (PCK curves and
    per-part bars of the ``focus`` results, without intervals), for a report whose rows' checkpoints and
    predictions are no longer there; the report's other figures are left as they are."""
    path = grid.report / "results.json"
    if not path.is_file():
        raise ValueError(f"{path}: no such report (expected the results.json the runner writes)")
    results = json.loads(path.read_text())
    chosen = [r for r in results if r["name"] in _focus(results, grid.evaluate.get("focus", ()))]
    fractions = [_fractions(grid, r) for r in chosen]
    return _curves(grid, chosen, grid.report / "figures", fractions)


def _focus(results: list[dict], focus: Sequence[str]) -> list[str]:
    """The focus results there are, default the first result and the last one with a baseline."""
    names = [r["name"] for r in results]
    return [n for n in focus if n in names] or [names[0], *[r["name"] for r in results if "gain" in r][-1:]]


def _curves(grid, chosen: list[dict], out: Path, joint_results: list[dict]) -> list[Path]:
    """``pck_curves.png`` of the collected results ``chosen`` and ``joint_pck.png`` of their ``joint_results``."""
    labels = [r["name"] for r in chosen]
    return [
        viz.save(viz.plot_pck_curves([r | {"normalizer": grid.evaluate["normalizer"]} for r in chosen], labels), out / "pck_curves.png"),
        viz.save(viz.plot_joint_pck(joint_results, labels), out / "joint_pck.png"),
    ]


def _tables(model) -> torch.Tensor:
    """The pairwise tables of a model: static ones as they are; an image-conditioned one on a grey image."""
    w, h = model.codec.input_size
    return model.outputs(torch.zeros(1, 3, h, w)).pairwise


def _with_intervals(grid, result: dict, load_predictions) -> dict:
    """A collected result (percentages) in the fractions :func:`crfpose.viz.plot_joint_pck` reads, with the
    95% bootstrap intervals (over test poses) of its per-part and mean PCK from its kept predictions."""
    p = load_predictions(result["name"])
    skeleton = get_skeleton(p["meta"]["skeleton"])
    scores = scoring.structure(p, skeleton, grid.evaluate)
    intervals = viz.pck_intervals(scores["correct"], scores["counted"], skeleton, resamples=grid.evaluate["bootstrap"])
    return _fractions(grid, result) | intervals


def _fractions(grid, result: dict) -> dict:
    """A collected result's mean and per-joint PCK (percentages) as the fractions :func:`crfpose.viz.plot_joint_pck` reads."""
    per_joint = {j: v / 100 for j, v in result["pck_per_joint"].items()}
    protocol = {"alpha": grid.evaluate["alpha"], "normalizer": grid.evaluate["normalizer"]}
    return {"pck": result["pck"] / 100, "pck_per_joint": per_joint} | protocol


def _slug(name: str) -> str:
    return name.replace("/", "-")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=STYLE.dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_gains(results: list[dict], alpha: float) -> Figure:
    """Every comparison in ``results`` (a result against its ``baseline`` and each of its ``also``): the
    PCK gain in points as a dot, its 95% paired bootstrap interval as a bar, 0 as a line."""
    rows = [(f"{r['name']}  vs  {r['baseline']}", r["gain"], r["ci"]) for r in results if "gain" in r]
    rows += [(f"{r['name']}  vs  {b}", g["gain"], g["ci"]) for r in results for b, g in r.get("also", {}).items()]
    with matplotlib.rc_context(STYLE.rc()):
        fig = _figure(STYLE.width * 1.25, 0.9 + 0.24 * len(rows))
        ax = fig.add_subplot()
        y = np.arange(len(rows))[::-1]
        gains = np.array([g for _, g, _ in rows])
        low, high = (np.array([c[i] for _, _, c in rows]) for i in (0, 1))
        ax.errorbar(gains, y, xerr=[gains - low, high - gains], fmt="o", color=COLORS[0], markersize=4, capsize=2, linewidth=1)
        ax.axvline(0.0, color="0.4", linewidth=0.8)
        ax.set_yticks(y, [name for name, _, _ in rows])
        ax.set_xlabel(f"PCK@{alpha:g} gain (points; bars: 95% paired bootstrap CI)")
        ax.grid(axis="x", alpha=0.3, linewidth=0.5)
        ax.set_ylim(-0.7, len(rows) - 0.3)
    return fig


def plot_reliability(results: list[dict], alpha: float) -> Figure:
    """Reliability diagram of each result's keypoint scores (``result["calibration"]``: per score bin the
    mean score and the share of joints correct at PCK@``alpha``; the diagonal is perfect calibration,
    the legend gives each ECE), above the share of joints in each bin."""
    with matplotlib.rc_context(STYLE.rc()):
        fig = _figure(STYLE.width, STYLE.width * 0.95)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
        top.plot([0, 1], [0, 100], color="0.6", linewidth=0.8, linestyle=(0, (2, 2)), label="perfect calibration")
        bins = len(results[0]["calibration"]["counts"])
        centres = (np.arange(bins) + 0.5) / bins
        width = 0.8 / bins / len(results)
        for i, r in enumerate(results):
            c = r["calibration"]
            confidence, accuracy = (np.array([np.nan if v is None else v for v in c[k]]) for k in ("confidence", "accuracy"))
            ok = np.isfinite(accuracy)
            style = dict(color=COLORS[i % len(COLORS)], linestyle=LINESTYLES[i % len(LINESTYLES)], marker=MARKERS[i % len(MARKERS)])
            top.plot(confidence[ok], 100 * accuracy[ok], markersize=4, label=f"{r['name']} (ECE {100 * c['ece']:.1f})", **style)
            share = 100 * np.array(c["counts"]) / max(sum(c["counts"]), 1)
            offset = (i - (len(results) - 1) / 2) * width
            bottom.bar(centres + offset, share, width=width, color=style["color"], label=r["name"])
        top.set_ylabel(f"correct at PCK@{alpha:g} (%)")
        top.set_ylim(0, 100)
        top.set_xlim(0, 1)
        top.grid(alpha=0.3, linewidth=0.5)
        top.legend(loc="upper left", frameon=False)
        top.set_title("Keypoint scores: how often a joint of each score is correct")
        bottom.set_xlabel("keypoint score (bin mean; scores outside [0, 1] clipped)")
        bottom.set_ylabel("joints (%)")
        bottom.grid(axis="y", alpha=0.3, linewidth=0.5)
    return fig


if __name__ == "__main__":  # python -m experiments.figures GRID.yaml: redraw a report's curves and bars from its results.json
    from experiments.run import load_grid

    for written in draw_from_results(load_grid(sys.argv[1])):
        print(written)
