"""``crfpose demo --quick``: the printed tables, summary.json, figures and the saved model agree with
each other and with an independent evaluation (crfpose.evaluate / crfpose.metrics)."""

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crfpose.cli import main
from crfpose.data.synthetic import SyntheticDataset
from crfpose.demo import BUDGETS, CRF_ROWS, MODELS, TEST_SEED, run_demo
from crfpose.checkpoint import load_checkpoint, load_model
from crfpose.evaluate import evaluate
from crfpose.skeletons import LSP14

pytestmark = pytest.mark.slow  # trains or runs subprocesses: the full suite, not the fast tier

FIGURES = ("overlays", "heatmaps", "heatmaps_top", "pairwise", "deformation", "samples", "pck_curves", "joint_pck", "training")
CELL = re.compile(r"^([\d.]+) \(([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]\)$")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["demo", "--quick", "--out", str(out), "--workers", "0", "--threads", "1"])
    torch.set_num_threads(1)
    return status, out, stdout.getvalue(), stderr.getvalue()


def _table(text: str, header_start: str) -> dict[str, list[str]]:
    """The Markdown table whose header row starts with ``header_start``: first cell -> other cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def test_quick_demo_prints_what_summary_json_holds(quick_run):
    status, out, printed, progress = quick_run
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert summary["report"] in printed
    # PCK per model and decoder, with each row's training budget
    table = _table(printed, "| model |")
    b = BUDGETS["synthetic-quick"]
    assert table["CNN alone"] == [f"{b.cnn_epochs} ep heatmap x {b.train_length} figures", _pct(rows["cnn/unary"]["pck"]), "-", "-"]
    for model in ("separate", "joint"):
        cells = table[MODELS[model]]
        assert cells[0] == summary["budgets"][model]["text"]
        assert cells[1:] == [_pct(rows[f"{model}/{d}"]["pck"]) for d in ("unary", "marginals", "map")]
    # per-joint PCK
    joints = _table(printed, "| joint |")
    assert list(joints) == list(LSP14.joints)
    columns = ["cnn/unary", *CRF_ROWS]
    for joint, cells in joints.items():
        assert cells == [_pct(rows[c]["pck_per_joint"][joint]) for c in columns]
    # structured errors: levels, changes against the CNN alone and their bootstrap intervals
    structured = _table(printed, "| row |")
    assert structured["CNN alone"][:4] == [_pct(rows["cnn/unary"][k]) for k in ("pck", "pck_occluded", "mixed_swap", "implausible_limbs")]
    for name, label in zip(CRF_ROWS, ("separate marginals", "separate MAP", "joint marginals", "joint MAP")):
        cells = structured[label]
        for cell, key in zip(cells, ("pck", "pck_occluded", "mixed_swap", "implausible_limbs")):
            level, delta, low, high = CELL.match(cell).groups()
            gain = summary["gains"][name][key]
            assert level == _pct(rows[name][key])
            assert float(delta) == pytest.approx(100 * (rows[name][key] - rows["cnn/unary"][key]), abs=0.051)
            assert [low, high] == [f"{100 * v:+.1f}" for v in gain["ci"]]
            assert gain["ci"][0] <= gain["delta"] + 1e-9 or np.isnan(gain["delta"])
        assert cells[4:] == [_pct(rows[name]["fixed"]), _pct(rows[name]["broken"])]
    # a progress line per training epoch (stderr is not a terminal here)
    assert f"train CNN alone: {b.cnn_epochs}/{b.cnn_epochs}" in progress
    assert f"train CNN + CRF, joint: {b.joint_epochs}/{b.joint_epochs}" in progress


def test_quick_demo_numbers_agree_with_an_independent_evaluation(quick_run):
    _, out, printed, _ = quick_run
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert str(out / "model.pt") in printed
    model, config = load_model(out / "model.pt")
    assert model.head is not None and config.train.mode == "joint"
    d = config.data
    test = SyntheticDataset(
        LSP14,
        length=BUDGETS["synthetic-quick"].test_length,
        seed=TEST_SEED,
        input_size=model.codec.input_size,
        heatmap_size=model.codec.heatmap_size,
        sigma=d.sigma,
    )
    for decoder in ("marginals", "map", "unary"):
        result = evaluate(model, test, decoder=decoder, normalizer="bbox", all_joints=True)
        assert result["pck"] == pytest.approx(rows[f"joint/{decoder}"]["pck"], abs=1e-12)
        for joint, value in result["pck_per_joint"].items():
            assert value == pytest.approx(rows[f"joint/{decoder}"]["pck_per_joint"][joint], abs=1e-12)
    # crfpose predict takes the saved model: the whole 64 x 64 figure as the box, K keypoints inside it
    figure = out / "figure.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(figure)
    assert main(["predict", str(out / "model.pt"), str(figure), "--out", str(out / "predicted")]) == 0
    (person,) = json.loads((out / "predicted" / "predictions" / "figure.json").read_text())
    assert np.array(person["keypoints"]).shape == (LSP14.num_joints, 2)
    # fixed and broken are consistent with the two PCKs (every synthetic joint is labelled)
    base = rows["cnn/unary"]["pck"]
    for name in CRF_ROWS:
        r = rows[name]
        assert r["pck"] == pytest.approx(base + r["fixed"] * (1 - base) - r["broken"] * base, abs=1e-9)


def test_quick_demo_trains_the_cnn_once(quick_run):
    _, out, _, _ = quick_run
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert rows["separate/unary"] == rows["cnn/unary"]  # the same frozen CNN
    cnn, separate = (load_checkpoint(out / "runs" / name / "last.pt")["model"] for name in ("cnn", "separate"))
    for key, value in cnn.items():
        assert torch.equal(separate[key], value), key
    stages = [json.loads(line)["stage"] for line in (out / "runs" / "separate" / "log.jsonl").read_text().splitlines()]
    assert stages == ["crf"] * BUDGETS["synthetic-quick"].crf_epochs


def test_quick_demo_writes_the_figures(quick_run):
    _, out, _, _ = quick_run
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(Path(f["file"]).name for f in summary["figures"].values()) == sorted(f"{name}.png" for name in FIGURES)
    assert summary["figures"]["overlays"]["note"].startswith("examples shown: ")  # the caption says how they were chosen
    for name in FIGURES:
        with Image.open(out / f"{name}.png") as image:
            assert image.format == "PNG" and min(image.size) > 100
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 5  # something is drawn


def test_demo_is_deterministic_for_a_seed(quick_run, tmp_path):
    _, out, _, _ = quick_run
    first = json.loads((out / "summary.json").read_text())
    again = run_demo(tmp_path, quick=True, seed=0, figures=False)
    torch.set_num_threads(1)
    assert again["rows"] == first["rows"]
    assert again["report"] == first["report"]


def test_demo_lsp_needs_a_root(tmp_path, capsys):
    assert main(["demo", "--data", "lsp", "--out", str(tmp_path)]) == 2
    assert "root=PATH" in capsys.readouterr().err
    with pytest.raises(ValueError, match="format"):
        run_demo(tmp_path, image_format="jpg")
