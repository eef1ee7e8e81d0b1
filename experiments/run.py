"""The experiment runner: a declared grid of rows (a training config each, then evaluations on a test
set), checked as a whole before anything trains, run in dependency order, finished rows skipped and
interrupted ones resumed.

Shape legend: N test poses, K joints.

    python -m experiments.run GRID.yaml [--quick | --variant NAME] [--jobs 2] [--rows a,b] [--report-only] [--check]

Run it from the checkout's root: a grid's relative paths (``output``, ``report``, data roots such as
``../shared/data/lsp``) are read from there (``base`` from the grid file's folder). A grid file (YAML)::

    name: lsp_whole_image
    output: runs/lsp_whole_image          # run folders <output>/<variant or main>/<row> (checkpoints, logs, predictions)
    report: docs/experiments/lsp_whole_image  # results.json, results.md, figures, kept predictions (a variant's: in its run folder)
    base: ../crfpose/configs/lsp_whole_image.yaml  # the training config every row starts from (relative to this file)
    set: [key=value, ...]                 # overrides for every row (a row's own come after them)
    test: {name: lsp, options: {root: ../shared/data/lsp, split: test, box: image}}
    evaluate: {flip: true, alpha: 0.2, normalizer: torso, all_joints: true, bootstrap: 1000, focus: [...]}
    variants: {quick: {set: [...], rows: [...]}, gpu: {set: [...]}}   # a variant's set comes after the rows' own
    averages:                             # one comparison repeated (seeds): in averages.json and results.md
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

Before any row trains, :func:`check_grid` builds every row's config (base, overrides, variant), checks
its decoders against its mode (a ``unary`` row has only ``unary``), every ``from``/``baseline``/``also``
and average against the rows and decoders there are, and builds the test set and each distinct data
set once; an error is one line naming the grid file and the row (exit status 2, as ``crfpose``'s).

A row is *finished* when ``<output>/<row>/result.json`` exists; a row with a ``last.pt`` but no result
resumes training from it (exactly, see :func:`crfpose.engine.train`). The budget of a result is the
training epochs, seconds and CPU seconds of its row plus those of the rows it starts ``from``. Model
selection never looks at the test set: every row is evaluated at its ``last.pt`` (a fixed budget).

Each result's test predictions are kept (:mod:`experiments.scoring`: about 100 KB an npz) and every
number of the report is computed from the kept files, so ``experiments/rescore.py`` reproduces it and
scores them under any other metric. The report (:mod:`experiments.report`) names the protocol (test set,
split, person boxes, PCK@alpha, normaliser, joints, flip) in each result and at the top of results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml

from crfpose import engine
from crfpose.builders import evaluation_dataset, make_dataset, model_from_config
from crfpose.checkpoint import load_model
from crfpose.config import Config, load_config, to_dict
from crfpose.data import DATASETS
from crfpose.evaluate import predict_dataset
from crfpose.fileio import atomic_write
from crfpose.metrics import NORMALIZERS
from crfpose.models.pose_model import DECODERS
from crfpose.skeletons import get_skeleton

if not __package__:  # run by its path (python experiments/run.py): the package is in the checkout above
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments import report, scoring  # noqa: E402

__all__ = ["Grid", "Row", "load_grid", "check_grid", "row_config", "run_row", "run_grid", "protocol", "main"]

CHECKOUT = Path(__file__).resolve().parents[1]
CPU_LOG = "cpu.jsonl"  # per run folder: the training CPU seconds and threads of each call that trained it


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

    @property
    def compared(self) -> list[str]:
        """The results this row's results are compared with: its baseline, then ``also``."""
        return [*([self.baseline] if self.baseline else []), *self.also]


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

    def test_set(self, config: Config, codec=None):
        """The grid's test set, prepared as ``config`` prepares its validation data, with targets on
        ``codec``'s grid (default: that of ``config``'s model)."""
        codec = codec if codec is not None else model_from_config(config).codec
        return evaluation_dataset(config, self.test.get("name", config.data.name), codec, options=self.test.get("options"))

    def ancestors(self, row: Row) -> list[Row]:
        """The rows ``row`` starts from, nearest first."""
        chain, seen = [], {row.name}
        while row.start is not None:
            row = self.row(row.start)
            if row.name in seen:
                raise ValueError(f"{self.path}: rows start from each other in a cycle through {row.name!r}")
            seen.add(row.name)
            chain.append(row)
        return chain


EVALUATE_DEFAULTS = {
    "flip": True,
    "alpha": 0.2,
    "normalizer": "torso",
    "all_joints": True,
    "bootstrap": 1000,
    "batch_size": 64,
    "focus": [],
}  # focus: results drawn in the PCK curves, per joint, in the reliability diagram and the gallery
ROW_KEYS = {"name", "set", "decoders", "from", "baseline", "also", "note"}
GRID_KEYS = {"name", "output", "report", "base", "set", "test", "evaluate", "rows", "averages", "variants"}


def _list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list, got {value!r}")
    return list(value)


def load_grid(path: str | os.PathLike, variant: Optional[str] = None, overrides: Sequence[str] = ()) -> Grid:
    """The grid in YAML file ``path``; ``variant`` (e.g. ``quick``) adds its ``set`` and keeps its
    ``rows`` only; ``overrides`` go to every row last. Its structure and references (rows, decoders,
    averages) are checked here; :func:`check_grid` checks the configs and data sets. Errors name the
    file and the row or key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the grid ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty list 'rows'")
    unknown = sorted(set(data) - GRID_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}; valid keys: {sorted(GRID_KEYS)}")
    variants = data.get("variants") or {}
    if variant is not None and variant not in variants:
        raise ValueError(f"{path}: no variant {variant!r}; variants: {sorted(variants)}")
    chosen = variants.get(variant) or {}
    rows = [_parse_row(path, i, item) for i, item in enumerate(data["rows"])]
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: row {next(n for n in names if names.count(n) > 1)!r} is declared twice")
    for name, v in variants.items():
        missing = [n for n in _list((v or {}).get("rows"), f"{path}: variant {name!r}: rows") if n not in names]
        if missing:
            raise ValueError(f"{path}: variant {name!r} lists rows {missing}, which are not in the grid")
    if chosen.get("rows"):
        keep = set(chosen["rows"])
        rows = [r for r in rows if r.name in keep]
    decoders = {r.name: r.decoders for r in rows}
    for r in rows:
        if r.start is not None and r.start not in decoders:
            raise ValueError(f"{path}: row {r.name!r} starts from {r.start!r}, which is not a row here")
        for other in r.compared:
            _check_result(path, f"row {r.name!r} compares with", other, decoders)
    every = {item["name"]: item.get("decoders", ["marginals"]) for item in data["rows"]}
    averages = _list(data.get("averages"), f"{path}: averages")
    for i, item in enumerate(averages):
        pairs = item.get("pairs") if isinstance(item, dict) else None
        if not isinstance(pairs, list) or not pairs or "name" not in item or any(not isinstance(p, list) or len(p) != 2 for p in pairs):
            raise ValueError(f"{path}: averages[{i}]: expected a name and pairs [[result, baseline], ...], got {item!r}")
        missing = [n for pair in pairs for n in pair if not _is_result(n, every)]
        if missing:
            raise ValueError(f"{path}: averages[{i}] ({item['name']}): no row for {missing}")
    base = data.get("base")
    output = Path(data.get("output", f"runs/{path.stem}")) / (variant or "main")
    evaluate = dict(data.get("evaluate") or {})
    if set(evaluate) - set(EVALUATE_DEFAULTS):
        raise ValueError(
            f"{path}: evaluate: unknown key {sorted(set(evaluate) - set(EVALUATE_DEFAULTS))[0]!r}; valid: {sorted(EVALUATE_DEFAULTS)}"
        )
    grid = Grid(
        name=data.get("name", path.stem),
        path=path,
        output=output,
        report=Path(data.get("report", output / "report")) if variant is None else output / "report",
        base=(path.parent / base) if base else None,
        set=_list(data.get("set"), f"{path}: set"),
        late=[*_list(chosen.get("set"), f"{path}: variant {variant!r}: set"), *overrides],
        test=dict(data.get("test") or {}),
        evaluate=EVALUATE_DEFAULTS | evaluate,
        rows=rows,
        averages=[a for a in averages if all(_is_result(n, decoders) for pair in a["pairs"] for n in pair)],  # a variant's rows
    )
    for row in grid.rows:
        grid.ancestors(row)  # no cycles
    return grid


def _parse_row(path: Path, i: int, item: Any) -> Row:
    unknown = sorted(set(item) - ROW_KEYS) if isinstance(item, dict) else ["<not a mapping>"]
    if unknown or not isinstance(item.get("name"), str):
        raise ValueError(f"{path}: rows[{i}]: expected keys {sorted(ROW_KEYS)} with a name, got {item!r}")
    where = f"{path}: row {item['name']!r}"
    row = Row(
        item["name"],
        _list(item.get("set"), f"{where}: set"),
        _list(item.get("decoders", ["marginals"]), f"{where}: decoders"),
        item.get("from"),
        item.get("baseline"),
        _list(item.get("also"), f"{where}: also"),
        item.get("note", ""),
    )
    bad = [d for d in row.decoders if d not in DECODERS]
    if bad or not row.decoders:
        raise ValueError(f"{where}: decoders must be a non-empty list from {DECODERS}, got {row.decoders}")
    return row


def _is_result(name: Any, decoders: dict) -> bool:
    return isinstance(name, str) and name.count("/") == 1 and name.split("/")[1] in decoders.get(name.split("/")[0], ())


def _check_result(path: Path, what: str, name: Any, decoders: dict) -> None:
    """``name`` must be ``<row>/<decoder>`` of a row here that has that decoder."""
    if _is_result(name, decoders):
        return
    if not isinstance(name, str) or name.count("/") != 1:
        raise ValueError(f"{path}: {what} {name!r}: expected <row>/<decoder>")
    row = name.split("/")[0]
    if row not in decoders:
        raise ValueError(f"{path}: {what} {name!r}, whose row is not here (expected <row>/<decoder>)")
    raise ValueError(f"{path}: {what} {name!r}, but row {row!r} is evaluated with {decoders[row]} only")


def row_config(grid: Grid, row: Row) -> Config:
    """The training config of ``row``: base file, the grid's overrides, the row's own, the variant's and
    the command line's, and its run folder."""
    extra = [f"output_dir={grid.folder(row.name)}"]
    if row.start is not None:
        extra.append(f"train.init_checkpoint={grid.folder(row.start) / 'last.pt'}")
    return load_config(grid.base, [*grid.set, *row.set, *grid.late, *extra])


def check_grid(grid: Grid) -> None:
    """Check everything a run needs before anything trains: every row's config, its decoders against its
    mode, the evaluation settings, the test set and every distinct data set (built once each). Raises a
    one-line ``ValueError`` naming the grid file and the row."""
    e = grid.evaluate
    if e["normalizer"] not in NORMALIZERS:
        raise ValueError(f"{grid.path}: evaluate.normalizer: expected one of {NORMALIZERS}, got {e['normalizer']!r}")
    if grid.test.get("name") not in DATASETS:
        raise ValueError(f"{grid.path}: test.name: expected one of {sorted(DATASETS)}, got {grid.test.get('name')!r}")
    configs = {}
    for row in grid.rows:
        where = f"{grid.path}: row {row.name!r}"
        try:
            config = configs[row.name] = row_config(grid, row)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if config.train.mode == "unary" and row.decoders != ["unary"]:
            raise ValueError(f"{where}: a train.mode=unary row has no CRF: its decoders must be [unary], got {row.decoders}")
    built: set = set()
    for row in grid.rows:
        config = configs[row.name]
        codec = model_from_config(config).codec
        builds = {
            "data": lambda: [make_dataset(config, split, split == "train", codec) for split in ("train", "val")],
            "test": lambda: grid.test_set(config, codec),
        }
        for what, make in builds.items():
            key = (what, json.dumps({k: to_dict(config)[k] for k in ("data", "augment", "skeleton")}, sort_keys=True))
            if key in built:
                continue
            try:
                make()
            except (ValueError, TypeError) as err:
                raise ValueError(f"{grid.path}: row {row.name!r}: {what}: {err}") from None
            built.add(key)


def protocol(grid: Grid, dataset) -> dict[str, Any]:
    """What a reported number means: test set, split, poses, person boxes, PCK@alpha, normaliser, joints, flip."""
    e, options = grid.evaluate, grid.test.get("options", {})
    split = options.get("split") or ", ".join(f"{k}={v}" for k, v in options.items() if k != "root") or "default"
    return {
        "test": grid.test.get("name"),
        "split": split,
        "poses": len(dataset),
        "boxes": getattr(dataset, "box_protocol", "the data set's own crops"),
        "alpha": e["alpha"],
        "normalizer": e["normalizer"],
        "all_joints": bool(e["all_joints"]),
        "flip": bool(e["flip"]),
    }


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its finished children (data-loader workers);
    a call killed before it returns is not counted."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _seconds(folder: Path) -> tuple[int, float]:
    """Training epochs and seconds recorded in a run's log.jsonl."""
    log = folder / "log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return len(records), float(sum(r.get("seconds", 0.0) for r in records))


def run_row(grid: Grid, row: Row) -> dict:
    """Train ``row`` (resuming an interrupted run), evaluate it on the test set with every decoder from
    one backbone pass, keep the predictions (``predictions_<decoder>.npz``) and write ``result.json``,
    whose metrics are computed from the kept files; returns the result. A finished row is read back."""
    folder = grid.folder(row.name)
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    config = row_config(grid, row)
    last = folder / "last.pt"
    resumed, cpu = last.is_file(), _cpu_seconds()
    # a row folder without last.pt holds nothing to resume (an epoch cut short): the row starts over
    engine.train(config, resume=last if resumed else None, overwrite=not resumed)
    with open(folder / CPU_LOG, "a") as log:  # one line per call: a resumed row adds its calls up
        log.write(json.dumps({"cpu_seconds": _cpu_seconds() - cpu, "threads": torch.get_num_threads()}) + "\n")
    model, config = load_model(last)
    skeleton = get_skeleton(config.skeleton)
    test = grid.test_set(config, model.codec)
    e, setting = grid.evaluate, protocol(grid, test)
    started = time.perf_counter()
    predictions = predict_dataset(model, test, decoders=row.decoders, flip=e["flip"], batch_size=e["batch_size"])
    result: dict[str, Any] = {"row": row.name, "protocol": setting, "config": to_dict(config), "decoders": {}}
    for decoder, p in predictions.items():
        kept = scoring.save_predictions(
            folder / f"predictions_{decoder}.npz",
            p,
            {"row": row.name, "decoder": decoder, "skeleton": config.skeleton, "protocol": setting},
        )
        result["decoders"][decoder] = scoring.score(scoring.load_predictions(kept), skeleton, e)
    result["eval_seconds"] = time.perf_counter() - started
    result["epochs"], result["seconds"] = _seconds(folder)
    calls = [json.loads(line) for line in (folder / CPU_LOG).read_text().splitlines()]
    result |= {
        "cpu_seconds": sum(c["cpu_seconds"] for c in calls),
        "threads": max(c["threads"] for c in calls),
        "workers": config.train.workers,
        "training_calls": len(calls),
    }
    atomic_write(done, lambda f: json.dump(result, f, indent=1))
    return result


def _ready(row: Row, finished: set) -> bool:
    return row.start is None or row.start in finished


def run_grid(grid: Grid, jobs: int = 1, rows: Optional[Sequence[str]] = None, argv: Sequence[str] = ()) -> list[dict]:
    """Run the grid's unfinished rows (all, or ``rows`` and what they start from) in dependency order,
    ``jobs`` at a time (each in its own process with one thread when ``jobs > 1``), then write the report."""
    wanted = [grid.row(n) for n in rows] if rows else list(grid.rows)
    needed = {r.name for w in wanted for r in [w, *grid.ancestors(w)]}
    todo = [r for r in grid.rows if r.name in needed]
    finished = {r.name for r in todo if (grid.folder(r.name) / "result.json").is_file()}
    pending = [r for r in todo if r.name not in finished]
    if jobs <= 1:
        while pending:
            row = next(r for r in pending if _ready(r, finished))
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
            for row in [r for r in pending if _ready(r, finished)][: jobs - len(running)]:
                grid.folder(row.name).mkdir(parents=True, exist_ok=True)
                log = open(grid.folder(row.name) / "row.log", "a")
                print(f"[{grid.name}] row {row.name} (log: {log.name})", file=sys.stderr, flush=True)
                running[row.name] = subprocess.Popen(
                    [sys.executable, "-m", "experiments.run", *argv, "--row", row.name], stdout=log, stderr=subprocess.STDOUT, env=env
                )
                pending.remove(row)
            time.sleep(2)
    results = report.collect(grid)
    report.write(grid, results)
    return results


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.run", description="Run an experiment grid (see experiments/run.py's docstring)."
    )
    p.add_argument("grid", help="grid file (YAML)")
    p.add_argument("--quick", action="store_true", help="the grid's 'quick' variant (small budgets)")
    p.add_argument("--variant", help="another named variant of the grid (e.g. gpu)")
    p.add_argument("--jobs", type=int, default=1, help="rows run at once, each a process with one thread")
    p.add_argument("--rows", help="comma-separated rows to run (with the rows they start from)")
    p.add_argument("--row", help=argparse.SUPPRESS)  # a worker process of --jobs: this one row
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every row")
    p.add_argument("--report-only", action="store_true", help="only collect finished rows into the report")
    p.add_argument("--check", action="store_true", help="check the grid (configs, decoders, data sets) and stop")
    return p.parse_args(argv)


def _check_checkout() -> None:
    """The runner reads a grid's relative paths from the checkout's root: refuse to run elsewhere."""
    if Path.cwd().resolve() != CHECKOUT:
        raise ValueError(
            f"run it from the crfpose checkout's root (cd {CHECKOUT}): a grid's relative paths (runs/, docs/, "
            f"../shared/data/...) are read from there; the current folder is {Path.cwd()}"
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command; returns the exit status: 2 for a bad grid, row, override or folder (one line on stderr)."""
    args = parse_args(argv)
    variant = "quick" if args.quick else args.variant
    try:
        _check_checkout()
        grid = load_grid(args.grid, variant, args.set)
        if args.row:
            run_row(grid, grid.row(args.row))
            return 0
        if args.rows:
            for name in args.rows.split(","):
                grid.row(name)
        if args.report_only:
            results = report.collect(grid)
            report.write(grid, results)
        else:
            check_grid(grid)
            if args.check:
                print(f"{grid.path}: {len(grid.rows)} rows checked", file=sys.stderr)
                return 0
            forwarded = [args.grid, *(["--variant", variant] if variant else []), *(["--set", *args.set] if args.set else [])]
            results = run_grid(grid, args.jobs, args.rows.split(",") if args.rows else None, forwarded)
    except ValueError as err:
        print(f"experiments.run: error: {err}", file=sys.stderr)
        return 2
    print(report.format_table(results))
    print(f"written {grid.report / 'results.json'} and results.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
