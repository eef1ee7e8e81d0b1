"""The experiment runner on a tiny synthetic grid: rows run in dependency order, finished rows are
skipped, an interrupted row resumes from its last.pt, the table and the JSON agree; the whole grid is
checked before anything trains; the kept predictions re-score to the report's numbers exactly; the
paired bootstrap and the interval over seeds against hand-computed cases."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from crfpose import engine
from crfpose.structure import paired_bootstrap, pck_gain, seed_interval
from experiments import figures, report, rescore
from experiments import run as runner
from experiments import scoring
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
    raw = json.loads((grid.folder("tree") / "result.json").read_text())
    assert raw["cpu_seconds"] > 0 and raw["threads"] == 1 and raw["training_calls"] == 1  # training CPU, its threads
    assert results[2]["budget"]["cpu_minutes"] == pytest.approx(
        sum(json.loads((grid.folder(n) / "result.json").read_text())["cpu_seconds"] for n in ("mse", "tree")) / 60
    )
    stamps = {n: (grid.folder(n) / "result.json").stat().st_mtime_ns for n in ("mse", "control", "tree")}
    calls.clear()
    again = runner.run_grid(grid)  # everything finished: nothing trains, the same results
    assert calls == [] and again == json.loads((grid.report / "results.json").read_text())
    assert stamps == {n: (grid.folder(n) / "result.json").stat().st_mtime_ns for n in stamps}
    drawn = sorted(p.name for p in (grid.report / "figures").iterdir())
    assert drawn == [
        "deformation_tree.png",
        "gains.png",
        "gallery_mse-unary_vs_tree-map.png",
        "joint_pck.png",
        "kernels_tree.png",
        "pck_curves.png",
        "reliability.png",
    ]
    (average,) = json.loads((grid.report / "averages.json").read_text())  # the mean of the two pairs' gains
    assert average["gains"] == pytest.approx([results[2]["gain"], results[3]["gain"]])
    assert average["gain"] == pytest.approx((results[2]["gain"] + results[3]["gain"]) / 2)
    assert average["ci"][0] <= average["gain"] <= average["ci"][1]
    assert average["seeds"]["ci"] == pytest.approx(seed_interval(average["gains"])["ci"])  # the interval over the repeats
    assert np.allclose(average["pair_ci"], [results[2]["ci"], results[3]["ci"]])  # each pair's own bootstrap
    mixed = [results[i]["structure"]["mixed_swap"] - results[1]["structure"]["mixed_swap"] for i in (2, 3)]
    assert average["coherence"]["mixed_swap"]["each"] == pytest.approx(mixed)  # coherence differences, pair by pair
    ece = [100 * (results[i]["calibration"]["ece"] - results[1]["calibration"]["ece"]) for i in (2, 3)]
    assert average["coherence"]["ece"]["each"] == pytest.approx(ece) and average["coherence"]["ece"]["n"] == 2
    table = (grid.report / "results.md").read_text()
    assert "| tree_vs_control | tree/marginals vs control/marginals; tree/map vs control/marginals | " in table
    # a partly run grid averages the pairs it has (two at least), and says how many are missing
    pairs = [["tree/marginals", "mse/unary"], ["control/marginals", "mse/unary"], ["tree/map", "mse/unary"]]
    grid.averages.append({"name": "partial", "pairs": pairs})
    averages = report.collect_averages(grid, [r for r in results if r["name"] != "tree/map"])
    assert [a["name"] for a in averages] == ["partial"]  # tree_vs_control has one pair left: no interval over seeds
    (partial,) = averages
    assert partial["pairs"] == [["tree/marginals", "mse/unary"], ["control/marginals", "mse/unary"]] and partial["planned"] == 3
    assert partial["gains"] == pytest.approx([results[2]["pck"] - results[0]["pck"], results[1]["pck"] - results[0]["pck"]])
    assert "(2 of the 3 planned pairs run)" in report.format_averages(averages)
    # the protocol heads the report, and every column of the table has its legend
    assert "Protocol: scored on **synthetic**, split **length=12, seed=7** (12 poses)" in table
    assert "PCK@0.2 with the **bbox** normaliser; joints: labelled ones; flip test: no." in table
    header = next(line for line in table.splitlines() if line.startswith("| result | PCK |"))
    for column in header.strip("| ").split(" | "):
        assert f"- **{column}**: " in table
    assert all(r["protocol"]["boxes"] == "the data set's own crops" and r["protocol"]["poses"] == 12 for r in again)
    for r in again:  # the Markdown table shows what the JSON holds
        line = next(x for x in table.splitlines() if x.startswith(f"| {r['name']} |"))
        assert line.split(" | ")[1] == f"{r['pck']:.1f}"
        if "gain" in r:
            assert f"{r['gain']:+.1f} [{r['ci'][0]:+.1f}, {r['ci'][1]:+.1f}]" in line
    # a report whose rows are gone here: rewriting it would drop results, so it is refused, nothing touched;
    # its curves and bars can still be redrawn from results.json alone
    (grid.folder("tree") / "result.json").rename(grid.folder("tree") / "result.moved")
    before = {p: p.read_bytes() for p in grid.report.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"results whose rows are not finished .*'tree/marginals', 'tree/map'"):
        report.write(grid, report.collect(grid))
    assert before == {p: p.read_bytes() for p in grid.report.rglob("*") if p.is_file()}
    redrawn = figures.draw_from_results(grid)
    assert [p.name for p in redrawn] == ["pck_curves.png", "joint_pck.png"]
    changed = sorted(p.name for p in before if before[p] != p.read_bytes())
    assert set(changed) <= {"pck_curves.png", "joint_pck.png"}  # the other figures and the tables untouched


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


def test_kept_predictions_rescore_to_the_reported_numbers(grid_file, capsys):
    assert runner.main([str(grid_file), "--rows", "control"]) == 0  # mse and control only
    grid = runner.load_grid(grid_file)
    kept = grid.report / "predictions"
    assert sorted(p.name for p in kept.iterdir()) == ["control-marginals.npz", "ground_truth.npz", "mse-unary.npz"]
    reported = {r["name"]: r for r in json.loads((grid.report / "results.json").read_text())}
    for path in rescore.kept_files([str(kept)]):
        again = rescore.rescore(path)
        row, decoder = again["name"].split("/")
        raw = json.loads((grid.folder(row) / "result.json").read_text())
        for key in ("pck", "auc", "pcp", "epe", "pck_per_joint", "structure", "calibration", "pck_curve"):
            assert again[key] == raw["decoders"][decoder][key], key  # exactly, not approximately
        assert 100 * again["pck"] == reported[again["name"]]["pck"]
    # the kept file holds what the model predicted, rounded to 1/64 px, and loads without pickle
    p = scoring.load_predictions(kept / "control-marginals.npz")
    assert p["pred"].shape == (12, 14, 3) and np.array_equal(p["pred"][..., :2] * 64, np.round(p["pred"][..., :2] * 64))
    assert p["meta"]["protocol"]["test"] == "synthetic" and p["meta"]["skeleton"] == "lsp14"
    # another metric, by hand: PCK@0.5 of the bbox normaliser on the ground-truth joints' box
    other = rescore.rescore(kept / "control-marginals.npz", alpha=0.5)
    labelled = p["gt"][..., 2] > 0
    span = np.array([np.ptp(g[m, :2], axis=0).max() for g, m in zip(p["gt"], labelled)])
    errors = np.linalg.norm(p["pred"][..., :2] - p["gt"][..., :2], axis=-1) / span[:, None]
    assert other["pck"] == pytest.approx((errors <= 0.5)[labelled].mean())
    assert rescore.main([str(kept), "--alpha", "0.5", "--per-joint"]) == 0
    out = capsys.readouterr().out
    assert f"| control/marginals | PCK@0.5 bbox, labelled joints | {100 * other['pck']:.1f} |" in out and "| right_ankle |" in out
    assert rescore.main([str(kept / "nothing.npz")]) == 2
    assert "nothing.npz: no such file or folder" in capsys.readouterr().err


def _bad_grid(grid_file: Path, tmp_path: Path, change) -> Path:
    data = yaml.safe_load(grid_file.read_text())
    change(data)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    return bad


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["rows"][2].update(decoders=["marginals", "mpa"]), r"bad.yaml: row 'tree': decoders must be a non-empty list from"),
        (lambda d: d["rows"][2]["set"].append("crf.pairwise=gausian"), r"bad.yaml: row 'tree': crf.pairwise: expected one of"),
        (lambda d: d["rows"][2]["set"].append("train.epochz=3"), r"bad.yaml: row 'tree': train.epochz: unknown key"),
        (lambda d: d["rows"][0].update(decoders=["unary", "marginals"]), r"bad.yaml: row 'mse': a train.mode=unary row has no CRF"),
        (lambda d: d["rows"][2].update(baseline="control/map"), r"row 'tree' compares with 'control/map', but row 'control' is evaluated"),
        (lambda d: d["rows"][2].update(also=["mse"]), r"row 'tree' compares with 'mse': expected <row>/<decoder>"),
        (lambda d: d["test"]["options"].update(lenght=3), r"bad.yaml: row 'mse': test: data.val: unknown option 'lenght'"),
        (lambda d: d["rows"][1].update(**{"from": "tree"}) or d["rows"][2].update(**{"from": "control"}), r"in a cycle"),
    ],
)
def test_the_whole_grid_is_checked_before_anything_trains(grid_file, tmp_path, capsys, change, message):
    bad = _bad_grid(grid_file, tmp_path, change)
    assert runner.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("experiments.run: error: ")  # one line, as crfpose's commands
    assert re.search(message, err), err
    assert not (tmp_path / "runs").exists()  # nothing trained, no run folder made


def test_a_good_grid_checks_and_the_runner_wants_the_checkout(grid_file, tmp_path, capsys, monkeypatch):
    assert runner.main([str(grid_file), "--check"]) == 0
    assert "3 rows checked" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    monkeypatch.chdir(tmp_path)
    assert runner.main([str(grid_file), "--check"]) == 2
    err = capsys.readouterr().err
    assert "run it from the crfpose checkout's root" in err and str(runner.CHECKOUT) in err
    # run by its path from elsewhere: the same one line, not an import error
    script = runner.CHECKOUT / "experiments" / "run.py"
    done = subprocess.run([sys.executable, str(script), str(grid_file), "--check"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "run it from the crfpose checkout's root" in done.stderr


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


def test_seed_interval_hand_computed():
    # gains 1, 2, 3: mean 2, sd 1, t(2, 0.975) = 4.302653 -> 2 -+ 4.302653 / sqrt(3)
    out = seed_interval([1.0, 2.0, 3.0])
    assert out["mean"] == 2.0 and out["sd"] == pytest.approx(1.0) and out["n"] == 3
    assert out["ci"] == pytest.approx([2 - 2.4841377, 2 + 2.4841377], abs=1e-6)
    # the old LSP report's three seeds (+3.1, +1.3, +0.9): about [-1.1, +4.7] (issue 22)
    assert seed_interval([3.1, 1.3, 0.9])["ci"] == pytest.approx([-1.145, 4.678], abs=1e-3)
    assert np.isnan(seed_interval([1.5])["ci"]).all()
    with pytest.raises(ValueError, match="seed_interval"):
        seed_interval([])
