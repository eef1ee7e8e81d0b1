"""Decoding time of trained tree-CRF checkpoints on real images: the marginals against the MAP pose.

Runs each checkpoint's network once on the first ``--images`` items of a data set (prepared as the
checkpoint's config prepares its validation data), then times the CRF alone on those potentials:
``TreeCRF.marginals`` (log Z and the per-joint marginals) and ``TreeCRF.argmax`` (the exact MAP pose),
best of ``--repeats``. It prints the grid, the pairwise kind and the times, e.g. for the LSP grid's
``tree_gaussian_joint`` and ``tree_axis_gaussian_joint`` (a full and a diagonal precision) on
potentials a real training left:

    python benchmarks/decode_speed.py runs/lsp_ablation/main/tree_gaussian_joint/last.pt \\
        runs/lsp_ablation/main/tree_axis_gaussian_joint/last.pt --dataset lsp --root ../shared/data/lsp
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from crfpose.builders import evaluation_dataset
from crfpose.checkpoint import load_model
from crfpose.crf import TreeCRF
from crf_speed import best_time  # benchmarks/ is on the path when run as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="tree-CRF checkpoints (last.pt of a run)")
    parser.add_argument("--dataset", default="lsp", help="data set name (default lsp)")
    parser.add_argument("--split", default="test", help="its split (default test)")
    parser.add_argument("--root", required=True, help="its folder")
    parser.add_argument("--images", type=int, default=64, help="items decoded in one batch (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is kept)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.images} {args.dataset} {args.split} images")
    print(f"{'checkpoint':<48}{'pairwise':>15}{'grid':>9}{'R':>4}{'marginals ms':>14}{'MAP ms':>9}{'MAP/marg':>10}")
    for path in args.checkpoints:
        model, config = load_model(path)
        if config.crf.structure != "tree":
            raise ValueError(f"{path}: expected a tree-CRF checkpoint, got structure {config.crf.structure!r}")
        data = evaluation_dataset(config, args.dataset, model.codec, args.split, {"root": args.root})
        images = torch.stack([data[i]["image"] for i in range(min(args.images, len(data)))])
        with torch.no_grad():
            out = model.outputs(images)
            unary, table = out.unary, out.pairwise
        marginals = best_time(lambda: TreeCRF(unary, table, model.skeleton).marginals, args.repeats)
        map_pose = best_time(lambda: TreeCRF(unary, table, model.skeleton).argmax, args.repeats)
        grid = "x".join(str(n) for n in unary.shape[-2:])
        name = f"{path.parent.name}/{path.name}"
        times = f"{marginals:>14.0f}{map_pose:>9.0f}{map_pose / marginals:>10.2f}"
        print(f"{name:<48}{config.crf.pairwise:>15}{grid:>9}{config.crf.radius:>4}{times}")


if __name__ == "__main__":
    main()
