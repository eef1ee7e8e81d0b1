"""The report of an experiment grid: the finished rows' results collected with their gains, averaged over
repeats (seeds), written as ``results.json``, ``averages.json``, ``results.md`` (a protocol header, a
legend for every column), the figures and the kept predictions.

Shape legend: N test poses, K joints.

Every number is computed from the kept predictions (:mod:`experiments.scoring`), which are copied into
``<report>/predictions/`` with the test set's ground truth, so that ``experiments/rescore.py`` reproduces
the report and scores it under other metrics.

Intervals (95%): a gain's is a paired bootstrap over the test images (both results scored on the same
resampled images; test-set sampling for one training run each). An average over repeats (seeds) of one
comparison has three: each repeat's own bootstrap interval, a bootstrap interval of the mean gain
(resampling the same images for every repeat: test-set sampling only), and a Student-t interval over
the repeats' gains (training noise: seed to seed), which is the one a claimed gain must clear.
"""

from __future__ import annotations

import json
from pathlib import Path
import numpy as np

from crfpose.config import from_dict
from crfpose.fileio import atomic_write
from crfpose.skeletons import get_skeleton
from crfpose.structure import paired_bootstrap, pck_gain, pooled_pck, seed_interval
from experiments import figures, scoring

__all__ = ["collect", "collect_averages", "format_table", "format_joints", "format_averages", "format_protocol", "write", "LEGEND"]

PREDICTIONS = "predictions"

LEGEND = {
    "result": "row / decoder (unary: the backbone's heatmap maxima; marginals: each joint at the mode of its CRF marginal; "
    "map: the jointly most probable pose)",
    "PCK": "PCK@alpha (%) of the protocol above",
    "AUC": "area under PCK(alpha) for alpha in [0, 0.5], normalised to 100",
    "PCP": "strict PCP (%): both ends of a limb within half its length",
    "L/R swap": "paired joints placed nearer their partner's ground truth than their own (%)",
    "mixed swap": "limbs with both ends paired and exactly one end swapped (%)",
    "bad limb": "predicted limb length over 2x or under 0.5x the true one (%)",
    "PCK occ": "PCK@alpha (%) of the joints labelled occluded",
    "ECE": "expected calibration error of the keypoint scores against PCK@alpha hits (%, 10 equal bins over [0, 1]; lower is better)",
    "epochs": "training epochs of the row and the rows it starts from",
    "CPU min": "training CPU minutes (user + system, data workers included) of the row and the rows it starts from; '-' where not recorded",
    "vs": "the result this one is compared with (its baseline)",
    "gain [95% CI]": "PCK difference (points) on the same test images, with its 95% paired bootstrap interval over the images",
}


def _raw(grid) -> dict[str, dict]:
    """The ``result.json`` of every finished row."""
    raw = {}
    for row in grid.rows:
        path = grid.folder(row.name) / "result.json"
        if path.is_file():
            raw[row.name] = json.loads(path.read_text())
    return raw


def _kept(grid, name: str) -> Path:
    row, decoder = name.split("/")
    return grid.folder(row) / f"predictions_{decoder}.npz"


def collect(grid) -> list[dict]:
    """One result per finished (row, decoder): name, protocol, PCK (in %), budget, calibration, and for a
    row with a baseline its gain over it and a 95% paired bootstrap interval (in points). Unfinished
    rows are left out."""
    raw = _raw(grid)
    results = []
    for row in grid.rows:
        if row.name not in raw:
            continue
        family = [r.name for r in [row, *grid.ancestors(row)] if r.name in raw]
        cpu = [raw[n].get("cpu_seconds") for n in family]
        budget = {
            "epochs": sum(raw[n]["epochs"] for n in family),
            "seconds": round(sum(raw[n]["seconds"] for n in family), 1),
            "cpu_minutes": sum(cpu) / 60 if None not in cpu else None,
            "threads": raw[row.name].get("threads"),
        }
        skeleton = get_skeleton(raw[row.name]["config"]["skeleton"])
        for decoder, m in raw[row.name]["decoders"].items():
            name = f"{row.name}/{decoder}"
            out = {
                "name": name,
                "row": row.name,
                "decoder": decoder,
                "protocol": raw[row.name].get("protocol"),
                "pck": 100 * m["pck"],
                "auc": 100 * m["auc"],
                "pcp": 100 * m["pcp"],
                "epe": m["epe"],
                "budget": budget,
                "pck_per_joint": {j: 100 * v for j, v in m["pck_per_joint"].items()},
                "structure": {k: 100 * v for k, v in m["structure"].items()},
                "calibration": m.get("calibration"),
                "pck_curve": m["pck_curve"],
                "note": row.note,
            }
            if row.baseline and row.baseline.split("/")[0] in raw:
                out |= {"baseline": row.baseline} | gain(grid, name, row.baseline, skeleton)
            extra = {b: gain(grid, name, b, skeleton) for b in row.also if b.split("/")[0] in raw}
            if extra:
                out["also"] = extra
            results.append(out)
    return results


def _paired(grid, name: str, baseline: str, skeleton) -> tuple[dict, dict]:
    a, b = (scoring.load_predictions(_kept(grid, n)) for n in (name, baseline))
    return scoring.paired_scores(a, b, skeleton, grid.evaluate, (name, baseline))


def gain(grid, name: str, baseline: str, skeleton) -> dict:
    """PCK of result ``name`` minus that of ``baseline`` on the same test poses, with its 95% paired
    bootstrap interval, in points."""
    sa, sb = _paired(grid, name, baseline, skeleton)
    g = pck_gain(sa["correct"], sb["correct"], sa["counted"], resamples=grid.evaluate["bootstrap"])
    return {"gain": 100 * g["gain"], "ci": [100 * c for c in g["ci"]]}


def collect_averages(grid, results: list[dict]) -> list[dict]:
    """Each average of the grid over its pairs whose results are collected (all of them, or at least two
    while the grid is partly run): ``name``, ``pairs`` (those collected; ``planned``: how many the grid
    declares), each pair's ``gains`` and their bootstrap ``pair_ci``, the mean ``gain`` with its bootstrap
    ``ci`` over test images, and ``seeds``: the Student-t interval over the pairs
    (:func:`crfpose.structure.seed_interval`)."""
    done = {r["name"]: r for r in results}
    out = []
    for average in grid.averages:
        planned = [tuple(p) for p in average["pairs"]]
        pairs = [pair for pair in planned if all(n in done for n in pair)]
        if len(pairs) < min(2, len(planned)):
            continue
        skeleton = get_skeleton(json.loads((grid.folder(done[pairs[0][0]]["row"]) / "result.json").read_text())["config"]["skeleton"])
        scores = [_paired(grid, a, b, skeleton) for a, b in pairs]

        def gains(idx: np.ndarray) -> list[float]:
            return [
                100 * (pooled_pck(sa["correct"][idx], sa["counted"][idx]) - pooled_pck(sb["correct"][idx], sb["counted"][idx]))
                for sa, sb in scores
            ]

        every = np.arange(len(scores[0][0]["correct"]))
        resamples = grid.evaluate["bootstrap"]
        each = [pck_gain(sa["correct"], sb["correct"], sa["counted"], resamples=resamples)["ci"] for sa, sb in scores]
        ci = paired_bootstrap(lambda idx: float(np.mean(gains(idx))), len(every), resamples=resamples)
        out.append(
            {
                "name": average["name"],
                "pairs": [list(p) for p in pairs],
                "planned": len(planned),
                "gains": gains(every),
                "pair_ci": [[100 * c for c in pair] for pair in each],
                "gain": float(np.mean(gains(every))),
                "ci": ci,
                "seeds": seed_interval(gains(every)),
                "coherence": {m: _differences(done, pairs, m) for m in COHERENCE},
            }
        )
    return out


COHERENCE = {"mixed_swap": "mixed swap", "implausible_limbs": "bad limb", "swap_rate": "L/R swap", "ece": "ECE"}


def _differences(done: dict, pairs: list, measure: str) -> dict:
    """Each pair's difference (points) in a structure rate or the ECE, and their interval over seeds."""

    def value(name: str) -> float:
        r = done[name]
        return 100 * r["calibration"]["ece"] if measure == "ece" else r["structure"][measure]

    each = [value(a) - value(b) for a, b in pairs]
    return {"each": each} | seed_interval(each)


def _interval(ci: list) -> str:
    return "n/a" if any(np.isnan(c) for c in ci) else f"[{ci[0]:+.1f}, {ci[1]:+.1f}]"


def format_averages(averages: list[dict]) -> str:
    """The averages as a Markdown table."""
    lines = [
        "| average | pairs | each pair's gain [95% bootstrap CI] | mean gain | 95% CI over test images | 95% t-interval over seeds |",
        "|---|---|---|---|---|---|",
    ]
    for a in averages:
        pairs = "; ".join(f"{x} vs {y}" for x, y in a["pairs"])
        if len(a["pairs"]) < a["planned"]:
            pairs += f" ({len(a['pairs'])} of the {a['planned']} planned pairs run)"
        each = ", ".join(f"{g:+.1f} {_interval(c)}" for g, c in zip(a["gains"], a["pair_ci"]))
        seeds = f"{_interval(a['seeds']['ci'])} (n = {a['seeds']['n']})"
        lines.append(f"| {a['name']} | {pairs} | {each} | {a['gain']:+.1f} | {_interval(a['ci'])} | {seeds} |")
    return "\n".join(lines)


def format_coherence(averages: list[dict]) -> str:
    """Each average's differences in coherence and calibration (result minus baseline, points; lower is
    better): their mean over the pairs with its Student-t interval over seeds."""
    lines = ["| average | " + " | ".join(f"{v} difference [95% t-interval over seeds]" for v in COHERENCE.values()) + " |"]
    lines.append("|" + "---|" * (len(COHERENCE) + 1))
    for a in averages:
        cells = [f"{a['coherence'][m]['mean']:+.1f} {_interval(a['coherence'][m]['ci'])}" for m in COHERENCE]
        lines.append(f"| {a['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(results: list[dict]) -> str:
    """The results as a Markdown table (columns in :data:`LEGEND`)."""
    head = "| " + " | ".join(LEGEND) + " |"
    lines = [head, "|" + "---|" * len(LEGEND)]
    for r in results:
        s, b = r["structure"], r["budget"]
        gain = f"{r['gain']:+.1f} [{r['ci'][0]:+.1f}, {r['ci'][1]:+.1f}]" if "gain" in r else ""
        ece = f"{100 * r['calibration']['ece']:.1f}" if r.get("calibration") else "-"
        cpu = f"{b['cpu_minutes']:.0f}" if b.get("cpu_minutes") is not None else "-"
        lines.append(
            f"| {r['name']} | {r['pck']:.1f} | {r['auc']:.1f} | {r['pcp']:.1f} | {s['swap_rate']:.1f} | "
            f"{s['mixed_swap']:.1f} | {s['implausible_limbs']:.1f} | {s['pck_occluded']:.1f} | {ece} | "
            f"{b['epochs']} | {cpu} | {r.get('baseline', '')} | {gain} |"
        )
    return "\n".join(lines)


def format_joints(results: list[dict]) -> str:
    """Per-joint PCK (%) of every result, one row per result."""
    joints = list(results[0]["pck_per_joint"]) if results else []
    lines = ["| result | " + " | ".join(joints) + " |", "|" + "---|" * (len(joints) + 1)]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(f"{r['pck_per_joint'][j]:.1f}" for j in joints) + " |")
    return "\n".join(lines)


def format_protocol(grid, results: list[dict]) -> str:
    """The protocol of the results as Markdown lines; results measured under different protocols are
    listed by protocol."""
    settings = {json.dumps(r["protocol"], sort_keys=True): r["protocol"] for r in results if r.get("protocol")}
    if not settings:
        return "Protocol: not recorded (results of an older runner)."
    lines = []
    for key, p in settings.items():
        names = [r["name"] for r in results if json.dumps(r.get("protocol"), sort_keys=True) == key]
        scope = "" if len(settings) == 1 else f" ({', '.join(names)})"
        lines.append(
            f"Protocol{scope}: scored on **{p['test']}**, split **{p['split']}** ({p['poses']} poses); person boxes: "
            f"**{p['boxes']}**; PCK@{p['alpha']:g} with the **{p['normalizer']}** normaliser; joints: "
            f"{'all (occluded ones too)' if p['all_joints'] else 'labelled ones'}; "
            f"flip test: {'yes' if p['flip'] else 'no'}."
        )
    e = grid.evaluate
    lines.append(f"Intervals: 95% paired bootstrap over the test images ({e['bootstrap']} resamples).")
    return "\n\n".join(lines)


def keep_predictions(grid, results: list[dict]) -> list[Path]:
    """Copy every result's kept predictions (and the test set's ground truth) into ``<report>/predictions``."""
    folder = grid.report / PREDICTIONS
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for r in results:
        source = _kept(grid, r["name"])
        truth = scoring.load_predictions(source)
        scoring.keep_truth(folder / scoring.GROUND_TRUTH, {k: truth[k] for k in ("index", "image_id", "gt", "box", "head_box")})
        target = folder / f"{r['row']}-{r['decoder']}.npz"
        atomic_write(target, lambda f: f.write(source.read_bytes()), binary=True)
        written.append(target)
    return written


def _refuse_losing_results(grid, results: list[dict]) -> None:
    path = grid.report / "results.json"
    if not path.is_file():
        return
    kept = {r["name"] for r in results}
    lost = [r["name"] for r in json.loads(path.read_text()) if r["name"] not in kept]
    if lost:
        raise ValueError(
            f"{path} has results whose rows are not finished under {grid.output}: {lost}; rewriting the report would "
            f"drop them (and their figures): run those rows here, or delete {path} to start the report afresh"
        )


def write(grid, results: list[dict]) -> None:
    """``results.json`` (the list of results), ``averages.json``, ``results.md``, the figures
    (:mod:`experiments.figures`) and the kept predictions in the report folder. Refuses to drop a result
    the report already has whose row is not finished here (e.g. the rows ran on another machine)."""
    _refuse_losing_results(grid, results)
    grid.report.mkdir(parents=True, exist_ok=True)
    if results:
        config = from_dict(json.loads((grid.folder(results[0]["row"]) / "result.json").read_text())["config"])
        figures.draw(
            grid,
            results,
            lambda name: scoring.load_predictions(_kept(grid, name)),
            lambda: grid.test_set(config),
            focus=grid.evaluate["focus"],
        )
        keep_predictions(grid, results)
    atomic_write(grid.report / "results.json", lambda f: json.dump(results, f, indent=1))
    legend = "\n".join(f"- **{k}**: {v}" for k, v in LEGEND.items())
    text = (
        f"# {grid.name}: results\n\n{format_protocol(grid, results)}\n\n{format_table(results)}\n\nColumns:\n\n{legend}\n\n"
        f"## PCK per joint (%)\n\n{format_joints(results)}\n"
    )
    averages = collect_averages(grid, results)
    if averages:
        atomic_write(grid.report / "averages.json", lambda f: json.dump(averages, f, indent=1))
        text += (
            "\n## Gains averaged over repeats (seeds)\n\n"
            "Each pair's gain with its paired bootstrap interval over the test images; the mean gain with a bootstrap "
            "interval that resamples the same images for every pair (test-set sampling only) and a Student-t interval "
            "over the pairs' gains (n - 1 degrees of freedom: the spread between training runs).\n\n"
            f"{format_averages(averages)}\n\n"
            "Coherence and calibration over the same pairs (result minus baseline, points; negative: fewer mixed swaps, "
            "implausible limbs, left/right swaps, or better calibrated scores):\n\n"
            f"{format_coherence(averages)}\n"
        )
    atomic_write(grid.report / "results.md", lambda f: f.write(text))
