"""Make the PNGs of docs/figures.md.

    python docs/figures/make_figures.py [--out docs/figures] [--run DIR]

Trains a small CNN + tree CRF on synthetic figures (LSP's 14 joints; about 20 minutes on a busy 2-core CPU)
into ``--run`` (default: a temporary folder; an existing ``best.pt`` there is reused), then draws every
figure of :mod:`crfpose.viz` from it with the library's defaults (print widths, 7 pt text and more);
the PNGs are written at 150 dpi to keep the repository small (``viz.save(fig, "x.pdf")`` gives the
vector version). Each ``figure_*`` function below is the code shown in figures.md. The selection rules
of the example figures are printed, for the captions.

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
from crfpose.data.transforms import affine_points
from crfpose.builders import make_dataset
from crfpose.checkpoint import load_model
from crfpose.engine import train
from crfpose.evaluate import compute_metrics, predict_dataset
from crfpose.figures import crop_pixels
from crfpose.structure import structure_scores

DPI = 150  # docs PNGs: smaller than print (300 dpi), full colour
CONFIG = [
    "skeleton=lsp14", "model.options={width: 16, depth: 2}", "train.mode=separate",
    "data.train={length: 1200, seed: 0}", "data.val={length: 100, seed: 1}", "data.input_size=[64, 64]",
    "data.heatmap_size=[16, 16]", "crf.radius=6", "optim.lr=2.0e-3", "optim.crf_lr=1.0e-2",
    "train.stage1_epochs=8", "train.stage2_epochs=2", "train.batch_size=32", "eval.every=2",
]
STRIDE = 4  # crop pixels per heatmap cell (64 / 16)


def figure_poses(crop, prediction, ground_truth, skeleton):
    # prediction (K, 2|3) and ground truth (K, 3) = (x, y, v) in the crop's pixels: side by side by default
    return viz.plot_poses(crop, prediction, skeleton, ground_truth=ground_truth)


def figure_poses_overlay(crop, prediction, ground_truth, skeleton):
    return viz.plot_poses(crop, prediction, skeleton, ground_truth=ground_truth, compare="overlay")


def figure_gallery(crops, ground_truth, cnn, crf, skeleton):
    # the rule is stated, and its words are the caption's
    selection = viz.select_examples(ground_truth, {"CNN": cnn, "CNN + CRF": crf}, skeleton, 3, "largest-difference")
    print("gallery:", selection.description)
    return viz.plot_gallery(crops, ground_truth, {"CNN": cnn, "CNN + CRF": crf}, skeleton, select=selection)


def figure_heatmaps(model, image, crop, top=4):
    with torch.no_grad():
        out = model.outputs(image[None])  # one backbone pass: out.unary (1, K, H, W), out.pairwise (E, 2R+1, 2R+1)
    marginals = out.distribution().marginals[0]  # (K, H, W)
    return viz.plot_heatmaps(crop, out.unary[0], marginals, model.skeleton, top=top)


def figure_pairwise(model):
    return viz.plot_pairwise(model.head.pairwise(None), model.skeleton)  # a static (E, 2R+1, 2R+1) table


def figure_deformation(model, crop, pose):
    # the pose the pairwise means imply, each joint named; the crop (with its pose) shows the scale
    return viz.plot_deformation(model.head.pairwise(None), model.skeleton, image=crop, pose=pose, stride=STRIDE)


def figure_samples(model, image, crop):
    with torch.no_grad():
        crf = model.outputs(image[None]).distribution()  # a TreeCRF over the 16 x 16 grid
    return viz.plot_samples(crop, crf, model.skeleton, num=200)


def figure_pck(results, per_joint=False):
    # results: what crfpose.evaluate.compute_metrics returns, plus viz.pck_intervals for the error bars
    return (viz.plot_pck_curves(list(results.values()), list(results)),
            viz.plot_joint_pck(list(results.values()), list(results), parts=not per_joint))


def figure_training(run, config):
    return viz.plot_training(Path(run) / "log.jsonl", alpha=config.eval.alpha, normalizer=config.eval.normalizer)


def in_crop(points, item):
    return affine_points(points, item["meta"]["affine"])


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
    model.eval()
    dataset = make_dataset(config, "val", train=False, codec=model.codec)
    skeleton = model.skeleton
    decoded = predict_dataset(model, dataset, decoders=["unary", "marginals"])  # both from one backbone pass
    predictions = {"CNN": decoded["unary"], "CNN + CRF": decoded["marginals"]}
    gt = predictions["CNN"]["gt"]
    results = {}
    for label, p in predictions.items():
        scores = structure_scores(p["pred"], gt, skeleton, alpha=0.2, normalizer="bbox", boxes=p["box"], all_joints=False)
        results[label] = compute_metrics(p, skeleton, alpha=0.2, normalizer="bbox") | viz.pck_intervals(
            scores["correct"], scores["counted"], skeleton, resamples=1000, seed=0)
    items = [dataset[i] for i in range(len(dataset))]
    crops = [crop_pixels(item["image"], dataset) for item in items]
    crop_gt = np.stack([in_crop(gt[i], item) for i, item in enumerate(items)])
    crop_pred = {k: np.stack([in_crop(p["pred"][i][:, :2], item) for i, item in enumerate(items)]) for k, p in predictions.items()}
    typical = viz.select_examples(crop_gt, crop_pred, skeleton, 1, "typical", model="CNN + CRF")
    print("poses:", typical.description)
    t = typical.indices[0]
    curves, parts = figure_pck(results)
    joints = figure_pck(results, per_joint=True)[1]
    figures = {
        "poses": figure_poses(crops[t], crop_pred["CNN + CRF"][t], crop_gt[t], skeleton),
        "poses_overlay": figure_poses_overlay(crops[t], crop_pred["CNN + CRF"][t], crop_gt[t], skeleton),
        "gallery": figure_gallery(crops, crop_gt, crop_pred["CNN"], crop_pred["CNN + CRF"], skeleton),
        "heatmaps_top": figure_heatmaps(model, items[t]["image"], crops[t]),
        "heatmaps": figure_heatmaps(model, items[t]["image"], crops[t], top=None),
        "pairwise": figure_pairwise(model),
        "deformation": figure_deformation(model, crops[t], crop_gt[t]),
        "samples": figure_samples(model, items[t]["image"], crops[t]),
        "pck_curves": curves,
        "joint_pck": parts,
        "joint_pck_joints": joints,
        "training": figure_training(run, config),
    }
    for name, fig in figures.items():
        problems = viz.legibility_problems(fig)
        print(viz.save(fig, Path(args.out) / f"{name}.png", dpi=DPI), *(["PROBLEMS:", *problems] if problems else []))


if __name__ == "__main__":
    main()
