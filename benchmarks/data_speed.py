"""Samples per second of each dataset on one CPU core (main process, torch.set_num_threads(1)).

Shape legend: K joints; items are (3, H_in, W_in) crops with (K, H, W) targets.

Usage: python benchmarks/data_speed.py [--shared ../shared/data] [--n 300]

COCO and LSP read ../shared/data (skipped when absent). MPII has no data there: its row uses an
HRNet-format JSON written to a temporary folder over the LSP images (same JPEG decoding and crop
work as real MPII, whose images are larger). Each row times ``n`` items after one warm-up item.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from crfpose.data import build_dataset
from crfpose.data.lsp import load_lsp_joints
from crfpose.data.transforms import TopDownTransform
from crfpose.skeletons import COCO17, LSP14, MPII16


def rate(dataset, n: int) -> float:
    """Items per second over the first ``n`` items (cycling), after one warm-up item."""
    dataset[0]
    start = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    return n / (time.perf_counter() - start)


def mpii_over_lsp(lsp_root: Path, folder: Path) -> Path:
    """An HRNet-format MPII folder whose records point at LSP images (LSP joints as 16 MPII slots)."""
    (folder / "annot").mkdir(parents=True)
    (folder / "images").symlink_to((lsp_root / "images").resolve())
    records = []
    for i, kp in enumerate(load_lsp_joints(lsp_root / "joints.mat")[:1000]):
        joints = np.zeros((16, 2))
        joints[:14] = kp[:, :2] + 1
        lo, hi = kp[:, :2].min(0), kp[:, :2].max(0)
        records.append(
            {
                "image": f"im{i + 1:04d}.jpg",
                "center": ((lo + hi) / 2 + 1).tolist(),
                "scale": float(hi[1] - lo[1]) / 200,
                "joints": joints.tolist(),
                "joints_vis": [1] * 14 + [0, 0],
            }
        )
    (folder / "annot" / "train.json").write_text(json.dumps(records))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        run(args, Path(folder))


def run(args: argparse.Namespace, tmp: Path) -> None:
    """Build each dataset and print its rate; temporary fixtures go under ``tmp``."""
    rows = [
        ("synthetic lsp14 128x128 -> 32x32", lambda: build_dataset("synthetic", skeleton=LSP14)),
        ("synthetic coco17 128x128 -> 32x32", lambda: build_dataset("synthetic", skeleton=COCO17)),
    ]
    lsp, coco = args.shared / "lsp", args.shared / "coco_mini"
    for train in (False, True):
        mode = "train aug" if train else "eval"
        if coco.exists():
            tf = TopDownTransform(COCO17, train=train, half_body_prob=0.3 if train else 0.0)
            rows.append((f"coco 256x192 -> 64x48 {mode}", lambda tf=tf: build_dataset("coco", root=coco, transform=tf)))
        if lsp.exists():
            tf = TopDownTransform(LSP14, train=train)
            rows.append((f"lsp 256x192 -> 64x48 {mode}", lambda tf=tf: build_dataset("lsp", root=lsp, transform=tf)))
            tf = TopDownTransform(MPII16, input_size=(256, 256), heatmap_size=(64, 64), train=train)
            rows.append(
                (
                    f"mpii* 256x256 -> 64x64 {mode}",
                    lambda tf=tf, mode=mode: build_dataset("mpii", root=mpii_over_lsp(lsp, tmp / mode.replace(" ", "_")), transform=tf),
                )
            )
    print(f"{'dataset':40s} {'samples/s':>10s}")
    for name, make in rows:
        print(f"{name:40s} {rate(make(), args.n):10.1f}", flush=True)


if __name__ == "__main__":
    main()
