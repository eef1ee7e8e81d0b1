"""``crfpose eval CHECKPOINT --data NAME [--split S] [--set key=value ...] [--flip] [--decoder D ...] [--out FILE]``.

Shape legend: K joints (rows of the printed per-joint table), N poses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from crfpose.cli.common import add_set_option, device, parse_set_options, positive
from crfpose.config import CHOICES

__all__ = ["SUMMARY", "add_arguments", "run"]

SUMMARY = "evaluate a checkpoint on a dataset: per-joint table, PCK, AUC, EPE (COCO AP on COCO-format data)"

_PRINTED = (
    "decoder",
    "metric",
    "normalizer",
    "joints",
    "pck",
    "auc",
    "epe",
    "coco",
    "coco_unavailable",
    "num_poses",
    "missed",
    "unmatched",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crfpose eval``."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by 'crfpose train'")
    parser.add_argument("--data", required=True, choices=CHOICES["data.name"], help="dataset name")
    parser.add_argument("--split", help="dataset split (e.g. test, val2017); default: the config's validation options")
    add_set_option(parser)
    parser.add_argument("--flip", action="store_true", help="flip test: average with the mirrored crop's maps")
    parser.add_argument(
        "--decoder",
        nargs="+",
        choices=CHOICES["eval.decoder"],
        metavar="D",
        help="marginals (arg-max of CRF marginals), map (joint MAP pose) or unary (backbone maps only); "
        "several in one call share each batch's backbone pass (e.g. --decoder unary marginals map); "
        "default: the config's eval.decoder for a CRF model, unary for a backbone alone",
    )
    parser.add_argument("--refine", choices=CHOICES["eval.refine"], help="sub-pixel refinement; default: the config's")
    parser.add_argument("--alpha", type=float, help="PCK threshold, a fraction of the normaliser; default: the config's eval.alpha")
    parser.add_argument("--normalizer", choices=CHOICES["eval.normalizer"], help="PCK normaliser; default: the config's")
    parser.add_argument(
        "--sigmas",
        type=float,
        nargs="+",
        metavar="S",
        help="OKS sigmas, one per joint, for COCO AP on COCO-format data whose skeleton has none "
        "(without them such data gets PCK/AUC/EPE and no AP)",
    )
    parser.add_argument("--batch-size", type=int, help="evaluation batch size; default: the config's eval.batch_size")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="write the metrics as JSON here (one decoder: its metrics; several: {decoder: metrics}) and "
        "the per-pose predictions beside it as FILE.npz (index, person, annotated, image_id, gt, box, head_box, and "
        "pred_D (N, K, 3), score_D (N,) per decoder D), both atomically",
    )


def npz_path(out: str) -> Path:
    """The predictions file beside the metrics file ``out``: ``results.json`` -> ``results.npz``."""
    path = Path(out)
    return path.with_suffix(".npz") if path.suffix != ".npz" else path.with_name(path.name + ".npz")


def run(args: argparse.Namespace) -> int:
    """Evaluate; prints each decoder's per-joint table and a JSON summary line."""
    from crfpose.builders import evaluation_dataset
    from crfpose.checkpoint import load_model
    from crfpose.evaluate import compute_metrics, predict_dataset
    from crfpose.fileio import atomic_write, json_ready, write_json

    if args.out is not None and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out}: is a folder, expected the JSON file to write")
    positive(args.alpha, "--alpha")
    positive(args.batch_size, "--batch-size", integer=True)
    if args.alpha is not None and args.alpha > 1:
        raise ValueError(f"--alpha: expected a fraction of the normaliser in (0, 1], got {args.alpha}")
    model, config = load_model(args.checkpoint)
    model.to(device(args.device))
    k = model.skeleton.num_joints
    if args.sigmas is not None and (len(args.sigmas) != k or min(args.sigmas) <= 0):
        raise ValueError(f"--sigmas: expected {k} positive OKS sigmas (one per joint of {model.skeleton.name!r}), got {args.sigmas}")
    e = config.eval
    decoders = model.check_decoders(args.decoder or [e.decoder if model.head is not None else "unary"])
    dataset = evaluation_dataset(config, args.data, model.codec, args.split, parse_set_options(args.options))
    predictions = predict_dataset(
        model,
        dataset,
        decoders=decoders,
        flip=args.flip,
        refine=args.refine or e.refine,
        batch_size=args.batch_size or e.batch_size,
        workers=config.train.workers,
        progress=True,
    )
    results = {}
    for decoder in decoders:
        result = compute_metrics(
            predictions[decoder],
            model.skeleton,
            alpha=args.alpha if args.alpha is not None else e.alpha,
            normalizer=args.normalizer or e.normalizer,
            all_joints=e.all_joints,
            coco=getattr(dataset, "coco", None),
            sigmas=args.sigmas,
        )
        results[decoder] = {"decoder": decoder, "flip": args.flip} | result
        if len(decoders) > 1:
            print(f"decoder {decoder}:")
        print(result["table"])
        print(json.dumps(json_ready({k: v for k, v in results[decoder].items() if k in _PRINTED}), allow_nan=False))
    if args.out:
        write_json(args.out, results[decoders[0]] if len(decoders) == 1 else results, indent=1)
        shared = predictions[decoders[0]]
        arrays = {k: shared[k] for k in ("index", "person", "annotated", "image_id", "gt", "box", "head_box")}
        for decoder in decoders:
            arrays |= {f"pred_{decoder}": predictions[decoder]["pred"], f"score_{decoder}": predictions[decoder]["score"]}
        atomic_write(npz_path(args.out), lambda f: np.savez(f, **arrays), binary=True)
    return 0
