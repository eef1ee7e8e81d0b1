"""crfpose eval: several decoders from one backbone pass per batch, per-pose predictions beside the
metrics, progress lines, and a decoder that follows the model (a unary run needs no eval.decoder)."""

import json

import numpy as np
import pytest
import torch

from crfpose.cli import main
from crfpose.config import load_config
from crfpose.data.transforms import affine_points, invert_affine
from crfpose.builders import make_dataset
from crfpose.checkpoint import load_model
from crfpose.engine import train
from crfpose.evaluate import compute_metrics, predict_dataset
from tiny_config import TINY_SYNTHETIC

TINY = [
    *TINY_SYNTHETIC,
    "train.batch_size=8",
    "optim.lr=1e-2",
    "eval.every=0",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A joint (CRF) run and a unary run whose config leaves eval.decoder at its default (marginals)."""
    root = tmp_path_factory.mktemp("runs")
    joint = train(load_config(None, ["train.mode=joint", "train.epochs=1", f"output_dir={root / 'joint'}", *TINY]))
    unary = train(load_config(None, ["train.mode=unary", "train.epochs=1", f"output_dir={root / 'unary'}", *TINY]))
    return {"joint": joint["last"], "unary": unary["last"], "root": root}


def test_several_decoders_in_one_call_with_predictions_beside_the_metrics(runs, capsys):
    out = runs["root"] / "results.json"
    assert (
        main(
            [
                "eval",
                str(runs["joint"]),
                "--data",
                "synthetic",
                "--set",
                "length=6",
                "--batch-size",
                "4",
                "--decoder",
                "unary",
                "marginals",
                "map",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    results = json.loads(out.read_text())
    assert sorted(results) == ["map", "marginals", "unary"]
    printed = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert [p["decoder"] for p in printed] == ["unary", "marginals", "map"]
    assert "crfpose eval: 2/2 batches" in captured.err  # progress without a terminal

    # every decoder's predictions, recomputed one item at a time from PoseModel.predict
    model, config = load_model(runs["joint"])
    dataset = make_dataset(load_config(None, [*TINY, "data.val={length: 6, seed: 1}"]), "val", train=False, codec=model.codec)
    saved = np.load(out.with_suffix(".npz"))
    assert saved["pred_map"].shape == (6, 14, 3) and saved["index"].tolist() == list(range(6))
    for decoder in ("unary", "marginals", "map"):
        for i in range(6):
            item = dataset[i]
            with torch.no_grad():
                crop = model.predict(item["image"][None], [decoder]).keypoints[decoder][0].double().numpy()
            expected = affine_points(crop, invert_affine(item["meta"]["affine"]))
            np.testing.assert_allclose(saved[f"pred_{decoder}"][i], expected, rtol=1e-6, atol=1e-6)
        assert saved[f"score_{decoder}"] == pytest.approx(saved[f"pred_{decoder}"][..., 2].mean(-1))
        predictions = {k: saved[k] for k in ("gt", "box", "head_box", "image_id", "index")}
        metrics = compute_metrics(
            predictions | {"pred": saved[f"pred_{decoder}"]}, model.skeleton, alpha=config.eval.alpha, normalizer=config.eval.normalizer
        )
        assert results[decoder]["pck"] == pytest.approx(metrics["pck"])
        assert results[decoder]["epe"] == pytest.approx(metrics["epe"])


def test_the_backbone_runs_once_per_batch_for_all_decoders(runs):
    model, config = load_model(runs["joint"])
    dataset = make_dataset(config, "val", train=False, codec=model.codec)  # 8 items
    calls = []
    model.backbone.register_forward_hook(lambda *args: calls.append(1))
    predictions = predict_dataset(model, dataset, decoders=["unary", "marginals", "map"], batch_size=4)
    assert len(calls) == 2 and set(predictions) == {"unary", "marginals", "map"}
    calls.clear()
    predict_dataset(model, dataset, decoders=["marginals", "map"], batch_size=4, flip=True)
    assert len(calls) == 4  # the crop and its mirror image, per batch


def test_a_unary_run_evaluates_with_the_unary_decoder_by_default(runs, capsys):
    assert load_model(runs["unary"])[1].eval.decoder == "marginals"  # the default, never set by the user
    out = runs["root"] / "unary.json"
    assert main(["eval", str(runs["unary"]), "--data", "synthetic", "--set", "length=4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["decoder"] == "unary" and result["num_poses"] == 4 and 0 <= result["pck"] <= 1
    assert np.load(runs["root"] / "unary.npz")["pred_unary"].shape == (4, 14, 3)
    capsys.readouterr()
    assert main(["eval", str(runs["unary"]), "--data", "synthetic", "--decoder", "map"]) == 2  # asked explicitly
    assert "a model without a CRF has only 'unary', got 'map'" in capsys.readouterr().err
