"""Make the PNGs of docs/figures.md.

    python docs/figures/make_figures.py [--out docs/figures] [--run DIR]

Trains a small CNN + tree CRF on synthetic figures (LSP's 14 joints; a few minutes on a 2-core CPU)
into ``--run`` (default: a temporary folder; an existing ``best.pt`` there is reused), then draws every
figure of :mod:`crfpose.viz` from it. Each ``figure_*`` function below is the code shown in figures.md.

Shape legend: N poses, K joints, E edges, H x W heatmap grid.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from crfpose import viz
from crfpose.config import load_config
from crfpose.crf import TreeCRF
from crfpose.data.transforms import affine_points
from crfpose.engine import load_model, make_dataset, train
from crfpose.evaluate import compute_metrics, predict_dataset
from crfpose.viz_cli import crop_pixels

STYLE = viz.Style(width=5.0, font_size=8.0, line_width=1.6, marker_size=4.0, dpi=80.0)  # small PNGs for the docs
CONFIG = [
    "skeleton=lsp14", "model.options={width: 16, depth: 2}", "train.mode=separate",
    "data.train={length: 1200, seed: 0}", "data.val={length: 100, seed: 1}", "data.input_size=[64, 64]",
    "data.heatmap_size=[16, 16]", "crf.radius=6", "optim.lr=2.0e-3", "optim.crf_lr=1.0e-2",
    "train.stage1_epochs=8", "train.stage2_epochs=2", "train.batch_size=32", "eval.every=2",
]


def figure_poses(crop, prediction, ground_truth, skeleton):
    # prediction (K, 2) = (x, y) and ground truth (K, 3) = (x, y, v) in the crop's pixels; given a third
    # column of scores, each joint's opacity would follow its score
    return viz.plot_poses(crop, prediction, skeleton, ground_truth=ground_truth, style=STYLE)


def figure_gallery(crops, ground_truth, cnn, crf, skeleton):
    # the images where the CNN alone and the CNN + CRF differ most, with each one's error
    return viz.plot_gallery(crops, ground_truth, {"CNN": cnn, "CNN + CRF": crf}, skeleton, num=3, style=STYLE)


def figure_heatmaps(model, image, crop, top=None):
    with torch.no_grad():
        maps = model.backbone(image[None])  # (1, K, H, W)
        unary, pairwise = model.unary(maps), model.pairwise(maps)
    marginals = TreeCRF(unary, pairwise, model.skeleton).marginals[0]  # (K, H, W)
    return viz.plot_heatmaps(crop, unary[0], marginals, model.skeleton, top=top, style=STYLE)


def figure_pairwise(model):
    return viz.plot_pairwise(model.pairwise(None), model.skeleton, style=STYLE)  # a static (E, 2R+1, 2R+1) table


def figure_deformation(model, pose):
    # the ellipses hang on a given pose (K, 2) in grid cells; without one, on the pose the edge means imply
    return viz.plot_deformation(model.pairwise(None), model.skeleton, pose, style=STYLE)


def figure_samples(model, image, crop):
    with torch.no_grad():
        crf = model.crf(image[None])  # a TreeCRF over the 16 x 16 grid
    return viz.plot_samples(crop, crf, model.skeleton, num=30, ellipses=True, style=STYLE)


def figure_pck(results):
    # results: what crfpose.evaluate.compute_metrics returns (or `crfpose eval --out` writes)
    return (viz.plot_pck_curves(list(results.values()), list(results), style=STYLE),
            viz.plot_joint_pck(list(results.values()), list(results), style=STYLE))


def figure_training(run):
    return viz.plot_training(Path(run) / "log.jsonl", style=STYLE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent), help="folder for the PNGs (default: docs/figures)")
    parser.add_argument("--run", help="training run folder (default: a temporary folder)")
    args = parser.parse_args()
    run = Path(args.run or tempfile.mkdtemp(prefix="crfpose_figures_"))
    if not (run / "best.pt").is_file():
        torch.manual_seed(0)
        train(load_config(None, CONFIG + [f"output_dir={run}"]))
    model, config = load_model(run / "best.pt")
    dataset = make_dataset(config, "val", train=False)
    skeleton = model.skeleton
    predictions = {label: predict_dataset(model, dataset, decoder=decoder)
                   for label, decoder in (("CNN", "unary"), ("CNN + CRF", "marginals"))}
    results = {label: compute_metrics(p, skeleton, alpha=0.2, normalizer="bbox") for label, p in predictions.items()}
    gt = predictions["CNN"]["gt"]
    chosen = viz.most_different(gt, {k: p["pred"] for k, p in predictions.items()}, skeleton, 3)
    items = [dataset[i] for i in chosen]
    crops = [crop_pixels(item["image"], dataset) for item in items]
    crop_poses = {k: np.stack([affine_points(p["pred"][i], item["meta"]["affine"]) for i, item in zip(chosen, items)])
                  for k, p in predictions.items()}
    crop_gt = np.stack([affine_points(gt[i], item["meta"]["affine"]) for i, item in zip(chosen, items)])
    image, crop = items[0]["image"], crops[0]
    curves, bars = figure_pck(results)
    i = int(np.nanargmin(viz.pose_errors(predictions["CNN + CRF"]["pred"], gt, skeleton)))  # the best CRF pose
    best = dataset[i]
    figures = {
        "poses": figure_poses(crop_pixels(best["image"], dataset), affine_points(predictions["CNN + CRF"]["pred"][i][:, :2],
                              best["meta"]["affine"]), affine_points(gt[i], best["meta"]["affine"]), skeleton),
        "gallery": figure_gallery(crops, crop_gt, crop_poses["CNN"], crop_poses["CNN + CRF"], skeleton),
        "heatmaps": figure_heatmaps(model, image, crop),
        "heatmaps_top": figure_heatmaps(model, image, crop, top=4),
        "pairwise": figure_pairwise(model),
        "deformation": figure_deformation(model, config.data.codec.to_heatmap(crop_gt[0][:, :2])),
        "samples": figure_samples(model, image, crop),
        "pck_curves": curves,
        "joint_pck": bars,
        "training": figure_training(run),
    }
    for name, fig in figures.items():
        print(viz.save(fig, Path(args.out) / f"{name}.png"))


if __name__ == "__main__":
    main()
