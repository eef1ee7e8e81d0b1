"""The experiment runner: a declared grid of rows (a training config each, then evaluations on a test
set), run in dependency order, finished rows skipped and interrupted ones resumed.

Shape legend: N test poses, K joints.

    python -m experiments.run experiments/lsp_ablation.yaml [--quick] [--jobs 2] [--rows a,b] [--report-only]

A grid file (YAML) holds::

    name: lsp_ablation
    output: runs/lsp_ablation             # run folders <output>/<variant or main>/<row> (checkpoints, logs, predictions)
    report: docs/experiments/lsp_ablation # results.json, results.md and figures (a variant's go to its run folder)
    base: ../crfpose/configs/lsp_cnn.yaml  # the training config every row starts from (relative to this file)
    set: [key=value, ...]                 # overrides for every row (a row's own come after them)
    test: {name: lsp, options: {root: ../shared/data/lsp, split: test}}
    evaluate: {flip: true, alpha: 0.2, normalizer: torso, all_joints: true, bootstrap: 1000}
    variants: {quick: {set: [...], rows: [...]}, gpu: {set: [...]}}   # a variant's set comes after the rows' own
    averages:                             # gains averaged over repeats (seeds), in averages.json and results.md
      - name: tree_vs_control
        pairs: [[tree/marginals, control/marginals], [tree_seed1/marginals, control_seed1/marginals]]
    rows:
      - name: cnn_mse                     # a run folder <output>/<name>
        set: [train.mode=unary, train.epochs=40]
        decoders: [unary]                 # one result per decoder: "<row>/<decoder>"
      - name: tree_joint
        from: cnn_mse                     # train.init_checkpoint = that row's last.pt (it runs first)
        set: [train.mode=joint, crf.pairwise=gaussian]
        decoders: [marginals, map]
        baseline: cnn_mse_cont/unary      # gain over it with a paired bootstrap interval (same test poses)
        also: [cnn_mse/unary]             # more such comparisons, under "also" in results.json

A row is *finished* when ``<output>/<row>/result.json`` exists; a row with a ``last.pt`` but no result
resumes training from it (exactly, see :func:`crfpose.engine.train`). The budget of a result is the
training epochs and seconds of its row plus those of the rows it starts ``from``. Model selection never
looks at the test set: every row is evaluated at its ``last.pt`` (a fixed budget); the configs'
validation split drives the stall warning and, where a row asks for it, the CRF's calibration.

An *average* is the mean over its pairs of each pair's PCK gain, with a paired bootstrap interval that
resamples the same test poses for every pair: it summarises repeats of one comparison (e.g. seeds),
and its interval covers test-set sampling, not the spread between the repeats (shown beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import yaml

from crfpose import engine, metrics
from crfpose.builders import evaluation_dataset, model_from_config
from crfpose.checkpoint import load_model
from crfpose.config import Config, from_dict, load_config, to_dict
from crfpose.evaluate import predict_dataset
from crfpose.fileio import atomic_write
from crfpose.skeletons import get_skeleton
from crfpose.structure import RATES, paired_bootstrap, pck_gain, pooled_pck, structure_scores, summarise
from experiments import figures

__all__ = ["Grid", "Row", "load_grid", "run_row", "run_grid", "collect", "format_table", "main"]


@dataclass
class Row:
    """One training run of a grid and the decoders it is evaluated with."""

    name: str
    set: list = field(default_factory=list)
    decoders: list = field(default_factory=lambda: ["marginals"])
    start: Optional[str] = None  # the row whose last.pt initialises this one ("from" in YAML)
    baseline: Optional[str] = None  # "<row>/<decoder>" to compare with
    also: list = field(default_factory=list)  # further "<row>/<decoder>" comparisons, reported under "also"
    note: str = ""


@dataclass
class Grid:
    """A parsed grid file (see the module docstring)."""

    name: str
    path: Path
    output: Path
    report: Path
    base: Optional[Path]
    set: list  # overrides before each row's own
    late: list  # overrides after each row's own: the variant's and the command line's
    test: dict
    evaluate: dict
    rows: list
    averages: list = field(default_factory=list)  # {"name", "pairs": [[result, baseline], ...]}

    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise ValueError(f"{self.path}: no row named {name!r}; rows: {[r.name for r in self.rows]}")

    def folder(self, name: str) -> Path:
        return self.output / name


EVALUATE_DEFAULTS = {
    "flip": True,
    "alpha": 0.2,
    "normalizer": "torso",
    "all_joints": True,
    "bootstrap": 1000,
    "batch_size": 64,
    "focus": [],
}  # focus: results drawn per joint and in the gallery
ROW_KEYS = {"name", "set", "decoders", "from", "baseline", "also", "note"}


def load_grid(path: str | os.PathLike, variant: Optional[str] = None, overrides: Sequence[str] = ()) -> Grid:
    """The grid in YAML file ``path``; ``variant`` (e.g. ``quick``) adds its ``set`` and keeps its
    ``rows`` only; ``overrides`` go to every row last. Errors name the file and the key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the grid ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty list 'rows'")
    variants = data.get("variants") or {}
    if variant is not None and variant not in variants:
        raise ValueError(f"{path}: no variant {variant!r}; variants: {sorted(variants)}")
    chosen = variants.get(variant) or {}
    rows = []
    for i, item in enumerate(data["rows"]):
        unknown = set(item) - ROW_KEYS if isinstance(item, dict) else {"<not a mapping>"}
        if unknown or "name" not in item:
            raise ValueError(f"{path}: rows[{i}]: expected keys {sorted(ROW_KEYS)} with a name, got {item!r}")
        rows.append(
            Row(
                item["name"],
                list(item.get("set", [])),
                list(item.get("decoders", ["marginals"])),
                item.get("from"),
                item.get("baseline"),
                list(item.get("also", [])),
                item.get("note", ""),
            )
        )
    if chosen.get("rows"):
        keep = set(chosen["rows"])
        rows = [r for r in rows if r.name in keep]
    names = [r.name for r in rows]
    for r in rows:
        if r.start is not None and r.start not in names:
            raise ValueError(f"{path}: row {r.name!r} starts from {r.start!r}, which is not a row here")
        for b in [r.baseline, *r.also] if r.baseline is not None else r.also:
            if b.split("/")[0] not in names:
                raise ValueError(f"{path}: row {r.name!r} compares with {b!r}, whose row is not here")
    averages = data.get("averages") or []
    for i, item in enumerate(averages):
        pairs = item.get("pairs") if isinstance(item, dict) else None
        if not isinstance(pairs, list) or not pairs or "name" not in item or any(len(p) != 2 for p in pairs):
            raise ValueError(f"{path}: averages[{i}]: expected a name and pairs [[result, baseline], ...], got {item!r}")
        missing = [n for pair in pairs for n in pair if n.split("/")[0] not in [r.get("name") for r in data["rows"]]]
        if missing:
            raise ValueError(f"{path}: averages[{i}] ({item['name']}): no row for {missing}")
    base = data.get("base")
    output = Path(data.get("output", f"runs/{path.stem}")) / (variant or "main")
    return Grid(
        name=data.get("name", path.stem),
        path=path,
        output=output,
        report=Path(data.get("report", output / "report")) if variant is None else output / "report",
        base=(path.parent / base) if base else None,
        set=list(data.get("set", [])),
        late=[*chosen.get("set", []), *overrides],
        test=dict(data.get("test") or {}),
        evaluate=EVALUATE_DEFAULTS | dict(data.get("evaluate") or {}),
        rows=rows,
        averages=[a for a in averages if all(n.split("/")[0] in names for pair in a["pairs"] for n in pair)],  # a variant's rows
    )


def row_config(grid: Grid, row: Row) -> Config:
    """The training config of ``row``: base file, the grid's overrides, the row's own, the variant's and
    the command line's, and its run folder."""
    extra = [f"output_dir={grid.folder(row.name)}"]
    if row.start is not None:
        extra.append(f"train.init_checkpoint={grid.folder(row.start) / 'last.pt'}")
    return load_config(grid.base, [*grid.set, *row.set, *grid.late, *extra])


def _test_set(grid: Grid, config: Config, codec):
    """The grid's test set, prepared as the row's config prepares its validation data."""
    return evaluation_dataset(config, grid.test.get("name", config.data.name), codec, options=grid.test.get("options"))


def _seconds(folder: Path) -> tuple[int, float]:
    """Training epochs and seconds recorded in a run's log.jsonl."""
    log = folder / "log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return len(records), float(sum(r.get("seconds", 0.0) for r in records))


def run_row(grid: Grid, row: Row) -> dict:
    """Train ``row`` (resuming an interrupted run), evaluate it on the test set with each decoder,
    write ``predictions_<decoder>.npz`` and ``result.json``; returns the result. A finished row is read back."""
    folder = grid.folder(row.name)
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    config = row_config(grid, row)
    last = folder / "last.pt"
    # a row folder without last.pt holds nothing to resume (an epoch cut short): the row starts over
    engine.train(config, resume=last if last.is_file() else None, overwrite=not last.is_file())
    model, config = load_model(last)
    skeleton = get_skeleton(config.skeleton)
    test = _test_set(grid, config, model.codec)
    e = grid.evaluate
    result: dict[str, Any] = {"row": row.name, "config": to_dict(config), "decoders": {}}
    for decoder in row.decoders:
        started = time.perf_counter()
        p = predict_dataset(model, test, decoders=[decoder], flip=e["flip"], batch_size=e["batch_size"])[decoder]
        atomic_write(folder / f"predictions_{decoder}.npz", lambda f: np.savez(f, **p), binary=True)
        result["decoders"][decoder] = score(p, skeleton, e) | {"eval_seconds": time.perf_counter() - started}
    result["epochs"], result["seconds"] = _seconds(folder)
    atomic_write(done, lambda f: json.dump(result, f, indent=1))
    return result


def score(p: dict, skeleton, e: dict) -> dict:
    """Metrics of one decoder's test predictions: PCK (mean, per joint), AUC, strict PCP, EPE, structure rates."""
    kw = dict(skeleton=skeleton, all_joints=e["all_joints"])
    boxes = {"boxes": p["box"]} if e["normalizer"] == "bbox" else {}
    pck = metrics.pck(p["pred"], p["gt"], e["alpha"], e["normalizer"], **kw, **boxes)
    curve = metrics.pck_curve(p["pred"], p["gt"], normalizer=e["normalizer"], **kw, **boxes)
    pcp = metrics.pcp(p["pred"], p["gt"], **kw)
    rates = summarise(
        structure_scores(p["pred"], p["gt"], skeleton, alpha=e["alpha"], normalizer=e["normalizer"], all_joints=e["all_joints"], **boxes)
    )
    return {
        "pck": pck.mean,
        "pck_per_joint": dict(zip(skeleton.joints, pck.per_item.tolist())),
        "auc": curve.auc,
        "pck_curve": {"alphas": curve.alphas.tolist(), "mean": curve.mean.tolist()},
        "pcp": pcp.mean,
        "epe": metrics.epe(p["pred"], p["gt"], all_joints=e["all_joints"]).mean,
        "structure": {k: rates[k] for k in RATES if k != "pck"} | {"swap_rate_occluded": rates["swap_rate_occluded"]},
    }


def _ancestors(grid: Grid, row: Row) -> list[Row]:
    chain, seen = [], {row.name}
    while row.start is not None:
        row = grid.row(row.start)
        if row.name in seen:
            raise ValueError(f"{grid.path}: rows start from each other in a cycle through {row.name!r}")
        seen.add(row.name)
        chain.append(row)
    return chain


def _load_predictions(grid: Grid, entry: str) -> dict:
    row, decoder = entry.split("/")
    with np.load(grid.folder(row) / f"predictions_{decoder}.npz") as f:
        return {k: f[k] for k in f.files}


def collect(grid: Grid) -> list[dict]:
    """One result per finished (row, decoder): name, PCK (in %), budget, and for a row with a baseline
    its gain over it and a 95% paired bootstrap interval (in points). Unfinished rows are left out."""
    results, raw = [], {}
    for row in grid.rows:
        path = grid.folder(row.name) / "result.json"
        if path.is_file():
            raw[row.name] = json.loads(path.read_text())
    for row in grid.rows:
        if row.name not in raw:
            continue
        family = [row, *_ancestors(grid, row)]
        budget = {
            "epochs": sum(raw[r.name]["epochs"] for r in family if r.name in raw),
            "seconds": round(sum(raw[r.name]["seconds"] for r in family if r.name in raw), 1),
        }
        skeleton = get_skeleton(raw[row.name]["config"]["skeleton"])
        for decoder, m in raw[row.name]["decoders"].items():
            name = f"{row.name}/{decoder}"
            out = {
                "name": name,
                "row": row.name,
                "decoder": decoder,
                "pck": 100 * m["pck"],
                "auc": 100 * m["auc"],
                "pcp": 100 * m["pcp"],
                "epe": m["epe"],
                "budget": budget,
                "pck_per_joint": {j: 100 * v for j, v in m["pck_per_joint"].items()},
                "structure": {k: 100 * v for k, v in m["structure"].items()},
                "pck_curve": m["pck_curve"],
                "note": row.note,
            }
            if row.baseline and row.baseline.split("/")[0] in raw:
                gain = _gain(grid, name, row.baseline, skeleton)
                out |= {"baseline": row.baseline, "gain": gain["gain"], "ci": gain["ci"]}
            extra = {b: _gain(grid, name, b, skeleton) for b in row.also if b.split("/")[0] in raw}
            if extra:
                out["also"] = extra
            results.append(out)
    return results


def _paired_scores(grid: Grid, name: str, baseline: str, skeleton) -> tuple[dict, dict]:
    """The structure scores of results ``name`` and ``baseline``, checked to be on the same test poses."""
    e = grid.evaluate
    a, b = _load_predictions(grid, name), _load_predictions(grid, baseline)
    if not np.array_equal(a["index"], b["index"]):
        raise ValueError(f"{name} and {baseline} were evaluated on different test poses")
    kw = dict(alpha=e["alpha"], normalizer=e["normalizer"], all_joints=e["all_joints"])
    kw |= {"boxes": a["box"]} if e["normalizer"] == "bbox" else {}
    return tuple(structure_scores(x["pred"], x["gt"], skeleton, **kw) for x in (a, b))


def _gain(grid: Grid, name: str, baseline: str, skeleton) -> dict:
    """PCK of result ``name`` minus that of ``baseline`` on the same test poses, with its 95% paired
    bootstrap interval, in points."""
    sa, sb = _paired_scores(grid, name, baseline, skeleton)
    gain = pck_gain(sa["correct"], sb["correct"], sa["counted"], resamples=grid.evaluate["bootstrap"])
    return {"gain": 100 * gain["gain"], "ci": [100 * c for c in gain["ci"]]}


def collect_averages(grid: Grid, results: list[dict]) -> list[dict]:
    """Each average of the grid whose results are all collected: ``name``, ``pairs``, the pairs' own
    ``gains``, their mean ``gain`` and its 95% paired bootstrap ``ci`` (points)."""
    done = {r["name"]: r for r in results}
    out = []
    for average in grid.averages:
        pairs = [tuple(p) for p in average["pairs"]]
        if not all(n in done for pair in pairs for n in pair):
            continue
        skeleton = get_skeleton(json.loads((grid.folder(done[pairs[0][0]]["row"]) / "result.json").read_text())["config"]["skeleton"])
        scores = [_paired_scores(grid, a, b, skeleton) for a, b in pairs]

        def gains(idx: np.ndarray) -> list[float]:
            return [
                100 * (pooled_pck(sa["correct"][idx], sa["counted"][idx]) - pooled_pck(sb["correct"][idx], sb["counted"][idx]))
                for sa, sb in scores
            ]

        every = np.arange(len(scores[0][0]["correct"]))
        ci = paired_bootstrap(lambda idx: float(np.mean(gains(idx))), len(every), resamples=grid.evaluate["bootstrap"])
        out.append(
            {
                "name": average["name"],
                "pairs": [list(p) for p in pairs],
                "gains": gains(every),
                "gain": float(np.mean(gains(every))),
                "ci": ci,
            }
        )
    return out


def format_averages(averages: list[dict]) -> str:
    """The averages as a Markdown table."""
    lines = ["| average | pairs | each pair's gain | mean gain [95% CI] |", "|---|---|---|---|"]
    for a in averages:
        pairs = "; ".join(f"{x} vs {y}" for x, y in a["pairs"])
        each = ", ".join(f"{g:+.1f}" for g in a["gains"])
        lines.append(f"| {a['name']} | {pairs} | {each} | {a['gain']:+.1f} [{a['ci'][0]:+.1f}, {a['ci'][1]:+.1f}] |")
    return "\n".join(lines)


def format_table(results: list[dict]) -> str:
    """The results as a Markdown table (PCK@alpha, AUC, PCP, structural error rates, budget, gain)."""
    head = "| result | PCK | AUC | PCP | L/R swap | mixed swap | bad limb | PCK occ | epochs | train s | vs | gain [95% CI] |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        s = r["structure"]
        gain = f"{r['gain']:+.1f} [{r['ci'][0]:+.1f}, {r['ci'][1]:+.1f}]" if "gain" in r else ""
        lines.append(
            f"| {r['name']} | {r['pck']:.1f} | {r['auc']:.1f} | {r['pcp']:.1f} | {s['swap_rate']:.1f} | "
            f"{s['mixed_swap']:.1f} | {s['implausible_limbs']:.1f} | {s['pck_occluded']:.1f} | "
            f"{r['budget']['epochs']} | {r['budget']['seconds']:.0f} | {r.get('baseline', '')} | {gain} |"
        )
    return "\n".join(lines)


def format_joints(results: list[dict]) -> str:
    """Per-joint PCK (%) of every result, one row per result."""
    joints = list(results[0]["pck_per_joint"]) if results else []
    lines = ["| result | " + " | ".join(joints) + " |", "|" + "---|" * (len(joints) + 1)]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(f"{r['pck_per_joint'][j]:.1f}" for j in joints) + " |")
    return "\n".join(lines)


def write_report(grid: Grid, results: list[dict]) -> None:
    """``results.json`` (the list of results), ``results.md`` (both tables) and the figures
    (:mod:`experiments.figures`) in the report folder."""
    grid.report.mkdir(parents=True, exist_ok=True)
    if results:
        config = from_dict(json.loads((grid.folder(results[0]["row"]) / "result.json").read_text())["config"])
        figures.draw(
            grid,
            results,
            lambda name: _load_predictions(grid, name),
            lambda: _test_set(grid, config, model_from_config(config).codec),
            focus=grid.evaluate.get("focus", ()),
        )
    atomic_write(grid.report / "results.json", lambda f: json.dump(results, f, indent=1))
    text = f"# {grid.name}: results\n\n{format_table(results)}\n\n## PCK per joint\n\n{format_joints(results)}\n"
    averages = collect_averages(grid, results)
    if averages:
        atomic_write(grid.report / "averages.json", lambda f: json.dump(averages, f, indent=1))
        text += f"\n## Gains averaged over repeats\n\n{format_averages(averages)}\n"
    atomic_write(grid.report / "results.md", lambda f: f.write(text))


def _ready(grid: Grid, row: Row, finished: set) -> bool:
    return row.start is None or row.start in finished


def run_grid(grid: Grid, jobs: int = 1, rows: Optional[Sequence[str]] = None, argv: Sequence[str] = ()) -> list[dict]:
    """Run the grid's unfinished rows (all, or ``rows`` and what they start from) in dependency order,
    ``jobs`` at a time (each in its own process with one thread when ``jobs > 1``), then write the report."""
    wanted = [grid.row(n) for n in rows] if rows else list(grid.rows)
    needed = {r.name for w in wanted for r in [w, *_ancestors(grid, w)]}
    todo = [r for r in grid.rows if r.name in needed]
    finished = {r.name for r in todo if (grid.folder(r.name) / "result.json").is_file()}
    pending = [r for r in todo if r.name not in finished]
    if jobs <= 1:
        while pending:
            row = next(r for r in pending if _ready(grid, r, finished))
            print(f"[{grid.name}] row {row.name}", file=sys.stderr, flush=True)
            run_row(grid, row)
            finished.add(row.name)
            pending.remove(row)
    else:
        running: dict[str, subprocess.Popen] = {}
        env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        while pending or running:
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    del running[name]
                    if proc.returncode != 0:
                        raise RuntimeError(f"row {name} failed (exit {proc.returncode}); see {grid.folder(name) / 'row.log'}")
                    finished.add(name)
            for row in [r for r in pending if _ready(grid, r, finished)][: jobs - len(running)]:
                grid.folder(row.name).mkdir(parents=True, exist_ok=True)
                log = open(grid.folder(row.name) / "row.log", "a")
                print(f"[{grid.name}] row {row.name} (log: {log.name})", file=sys.stderr, flush=True)
                running[row.name] = subprocess.Popen(
                    [sys.executable, "-m", "experiments.run", *argv, "--row", row.name], stdout=log, stderr=subprocess.STDOUT, env=env
                )
                pending.remove(row)
            time.sleep(2)
    results = collect(grid)
    write_report(grid, results)
    return results


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run an experiment grid (see experiments/run.py's docstring).")
    p.add_argument("grid", help="grid file (YAML)")
    p.add_argument("--quick", action="store_true", help="the grid's 'quick' variant (small budgets)")
    p.add_argument("--variant", help="another named variant of the grid (e.g. gpu)")
    p.add_argument("--jobs", type=int, default=1, help="rows run at once, each a process with one thread")
    p.add_argument("--rows", help="comma-separated rows to run (with the rows they start from)")
    p.add_argument("--row", help=argparse.SUPPRESS)  # a worker process of --jobs: this one row
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every row")
    p.add_argument("--report-only", action="store_true", help="only collect finished rows into the report")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    args = parse_args(argv)
    variant = "quick" if args.quick else args.variant
    grid = load_grid(args.grid, variant, args.set)
    if args.row:
        run_row(grid, grid.row(args.row))
        return []
    if args.report_only:
        results = collect(grid)
        write_report(grid, results)
    else:
        forwarded = [args.grid, *(["--variant", variant] if variant else []), *(["--set", *args.set] if args.set else [])]
        results = run_grid(grid, args.jobs, args.rows.split(",") if args.rows else None, forwarded)
    print(format_table(results))
    print(f"written {grid.report / 'results.json'} and results.md", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
