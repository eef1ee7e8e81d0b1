"""The experiment runner on a tiny synthetic grid: rows run in dependency order, finished rows are
skipped, an interrupted row resumes from its last.pt, the table and the JSON agree; the paired
bootstrap against hand-computed cases."""

import json

import numpy as np
import pytest
import yaml

from crfpose import engine
from crfpose.structure import paired_bootstrap, pck_gain
from experiments import run as runner
from tiny_config import TINY_SYNTHETIC

pytestmark = pytest.mark.slow  # trains or runs subprocesses: the full suite, not the fast tier

TINY = [
    *TINY_SYNTHETIC,
    "train.batch_size=8",
    "optim.lr=1e-2",
    "eval.every=0",
]


@pytest.fixture
def grid_file(tmp_path):
    grid = {
        "name": "tiny",
        "output": str(tmp_path / "runs"),
        "report": str(tmp_path / "report"),
        "set": TINY,
        "test": {"name": "synthetic", "options": {"length": 12, "seed": 7}},
        "evaluate": {"flip": False, "normalizer": "bbox", "all_joints": False, "bootstrap": 50},
        "rows": [
            {"name": "mse", "set": ["train.mode=unary", "train.epochs=2", "eval.decoder=unary"], "decoders": ["unary"]},
            {
                "name": "control",
                "from": "mse",
                "set": ["train.mode=joint", "train.epochs=2", "crf.pairwise=flat", "crf.radius=7"],
                "baseline": "mse/unary",
            },
            {
                "name": "tree",
                "from": "mse",
                "set": ["train.mode=joint", "train.epochs=2"],
                "decoders": ["marginals", "map"],
                "baseline": "control/marginals",
                "also": ["mse/unary"],
            },
        ],
        "variants": {"quick": {"set": ["train.epochs=1"], "rows": ["mse", "control"]}},
        "averages": [{"name": "tree_vs_control", "pairs": [["tree/marginals", "control/marginals"], ["tree/map", "control/marginals"]]}],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_grid_runs_skips_finished_rows_and_resumes_an_interrupted_one(grid_file, monkeypatch):
    grid = runner.load_grid(grid_file)
    engine.train(runner.row_config(grid, grid.row("mse")), max_epochs=1)  # an interrupted row: epoch 1 of 2
    calls = []
    real_train = engine.train
    monkeypatch.setattr(
        engine,
        "train",
        lambda config, resume=None, **kw: calls.append((config.output_dir, resume)) or real_train(config, resume=resume, **kw),
    )
    results = runner.run_grid(grid)
    assert [c[0] for c in calls] == [str(grid.folder(n)) for n in ("mse", "control", "tree")]
    assert calls[0][1] == grid.folder("mse") / "last.pt"  # resumed, not restarted
    log = [json.loads(line) for line in (grid.folder("mse") / "log.jsonl").read_text().splitlines()]
    assert [r["global_epoch"] for r in log] == [1, 2]
    assert [r["name"] for r in results] == ["mse/unary", "control/marginals", "tree/marginals", "tree/map"]
    assert results[0]["budget"]["epochs"] == 2 and results[2]["budget"]["epochs"] == 4  # 2 of its own + 2 of mse
    assert results[2]["baseline"] == "control/marginals" and results[2]["ci"][0] <= results[2]["gain"] <= results[2]["ci"][1]
    # the gain is the difference of the two rows' PCKs on the same test poses
    assert results[2]["gain"] == pytest.approx(results[2]["pck"] - results[1]["pck"])
    assert results[2]["also"]["mse/unary"]["gain"] == pytest.approx(results[2]["pck"] - results[0]["pck"])
    stamps = {n: (grid.folder(n) / "result.json").stat().st_mtime_ns for n in ("mse", "control", "tree")}
    calls.clear()
    again = runner.run_grid(grid)  # everything finished: nothing trains, the same results
    assert calls == [] and again == json.loads((grid.report / "results.json").read_text())
    assert stamps == {n: (grid.folder(n) / "result.json").stat().st_mtime_ns for n in stamps}
    figures = sorted(p.name for p in (grid.report / "figures").iterdir())
    assert figures == ["deformation_tree.png", "gallery_mse-unary_vs_tree-map.png", "joint_pck.png", "kernels_tree.png", "pck_curves.png"]
    (average,) = json.loads((grid.report / "averages.json").read_text())  # the mean of the two pairs' gains
    assert average["gains"] == pytest.approx([results[2]["gain"], results[3]["gain"]])
    assert average["gain"] == pytest.approx((results[2]["gain"] + results[3]["gain"]) / 2)
    assert average["ci"][0] <= average["gain"] <= average["ci"][1]
    table = (grid.report / "results.md").read_text()
    assert "| tree_vs_control | tree/marginals vs control/marginals; tree/map vs control/marginals | " in table
    for r in again:  # the Markdown table shows what the JSON holds
        line = next(x for x in table.splitlines() if x.startswith(f"| {r['name']} |"))
        assert line.split(" | ")[1] == f"{r['pck']:.1f}"
        if "gain" in r:
            assert f"{r['gain']:+.1f} [{r['ci'][0]:+.1f}, {r['ci'][1]:+.1f}]" in line


def test_quick_variant_and_bad_grids(grid_file, tmp_path):
    quick = runner.load_grid(grid_file, "quick")
    assert [r.name for r in quick.rows] == ["mse", "control"]
    assert runner.row_config(quick, quick.row("mse")).train.epochs == 1  # the variant wins over the row's 2 epochs
    assert runner.row_config(runner.load_grid(grid_file), quick.row("mse")).train.epochs == 2
    assert quick.output != runner.load_grid(grid_file).output  # the variants never share run folders
    assert quick.report == quick.output / "report"  # nor write into the main report
    with pytest.raises(ValueError, match="no variant 'huge'"):
        runner.load_grid(grid_file, "huge")
    data = yaml.safe_load(grid_file.read_text())
    data["rows"][1]["from"] = "nothing"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"bad.yaml: row 'control' starts from 'nothing'"):
        runner.load_grid(bad)
    assert quick.averages == []  # its pairs need the tree, which the quick variant does not run
    data = yaml.safe_load(grid_file.read_text())
    data["averages"][0]["pairs"][1] = ["tree_seed9/map", "control/marginals"]
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"bad.yaml: averages\[0\] \(tree_vs_control\): no row for \['tree_seed9/map'\]"):
        runner.load_grid(bad)


def test_paired_bootstrap_hand_computed_cases():
    # every pose gains the same: every resample gives that gain, the interval is a point
    correct = np.array([[1, 1], [1, 0], [1, 1]], bool)
    base = np.array([[1, 0], [0, 0], [1, 0]], bool)
    out = pck_gain(correct, base, np.ones_like(correct), resamples=200)
    assert out["gain"] == pytest.approx(0.5) and out["ci"] == pytest.approx([0.5, 0.5])
    # two poses with differences 0 and 1: resample means are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% percentiles are 0 and 1, and the middle half of the draws is 1/2
    diffs = np.array([0.0, 1.0])
    ci = paired_bootstrap(lambda idx: float(diffs[idx].mean()), 2, resamples=4000, seed=1)
    assert ci == [0.0, 1.0]
    middle = paired_bootstrap(lambda idx: float(diffs[idx].mean()), 2, resamples=4000, seed=1, level=0.4)
    assert middle == [0.5, 0.5]
    with pytest.raises(ValueError, match="expected three"):
        pck_gain(correct, base[:2], correct)
