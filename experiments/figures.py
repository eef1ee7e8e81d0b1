"""Figures of an experiment grid's report, drawn with :mod:`crfpose.viz` from the rows' saved test
predictions and checkpoints (nothing is re-run but the CRF of one kernel figure).

Shape legend: N test poses, K joints.

* ``pck_curves.png`` and ``joint_pck.png``: PCK against alpha, and per joint, of the results named in
  ``focus`` (e.g. the MSE CNN, the control, the trees);
* ``gallery_<a>_vs_<b>.png``: the test images where two results differ most, ground truth and both;
* ``kernels_<row>.png`` / ``deformation_<row>.png``: a structured row's learned pairwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from crfpose import viz
from crfpose.checkpoint import load_model
from crfpose.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from crfpose.skeletons import get_skeleton

__all__ = ["draw"]

GALLERY_DPI = 72  # photographs compress poorly: keep the gallery small enough to commit


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
    names = [r["name"] for r in results]
    focus = [n for n in focus if n in names] or [names[0], *[r["name"] for r in results if "gain" in r][-1:]]
    chosen = [r for r in results if r["name"] in focus]
    written = [
        viz.save(
            viz.plot_pck_curves([r | {"normalizer": grid.evaluate["normalizer"]} for r in chosen], [r["name"] for r in chosen]),
            out / "pck_curves.png",
        ),
        viz.save(viz.plot_joint_pck([_fractions(r) for r in chosen], [r["name"] for r in chosen]), out / "joint_pck.png"),
    ]
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


def _tables(model) -> torch.Tensor:
    """The pairwise tables of a model: static ones as they are; an image-conditioned one on a grey image."""
    w, h = model.codec.input_size
    return model.outputs(torch.zeros(1, 3, h, w)).pairwise


def _fractions(result: dict) -> dict:
    """A collected result (percentages) in the fractions :func:`crfpose.viz.plot_joint_pck` reads."""
    return {"pck": result["pck"] / 100, "pck_per_joint": {j: v / 100 for j, v in result["pck_per_joint"].items()}}


def _slug(name: str) -> str:
    return name.replace("/", "-")
