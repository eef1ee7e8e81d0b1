"""Every figure crfpose.viz makes, rendered at its print widths, measured for legibility
(:func:`crfpose.viz.legibility_problems`): text at 7 pt or more, no overlapping or clipped text, no text
on a map, every axis with tick labels named, pose colours apart under simulated colour-vision
deficiencies; NaN never drawn as a bar. Also the measures themselves: CIEDE2000 against Sharma et al.'s
published pairs, the deficiency simulation, and figures built to break each rule.

Shape legend: K joints (LSP's 14), H x W grid cells, N poses.
"""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from crfpose import viz
from crfpose.crf import TreeCRF
from crfpose.skeletons import LSP14

STYLES = ("paper", "paper-wide")  # one column and the text width; the default gives each figure one of these widths
K = LSP14.num_joints

# An upright person in a 64 x 96 crop (LSP's joints: ankles, knees, hips, wrists, elbows, shoulders, neck, head).
PERSON = np.array(
    [
        [26, 88],
        [27, 68],
        [28, 50],
        [38, 50],
        [39, 68],
        [40, 88],
        [18, 52],
        [20, 36],
        [24, 22],
        [42, 22],
        [46, 36],
        [48, 52],
        [33, 18],
        [33, 6],
    ],
    dtype=float,
)


def crop(seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(40, 220, 64)[None, :, None] * np.ones((96, 1, 3))
    return np.clip(base + rng.normal(0, 20, (96, 64, 3)), 0, 255).astype(np.uint8)


def results():
    rng = np.random.default_rng(0)
    runs = []
    for name, spread in (("CNN alone", 0.3), ("CNN + CRF (separate)", 0.2), ("CNN + CRF (joint)", 0.15)):
        alphas = np.linspace(0, 0.5, 51)
        mean = 1 - np.exp(-alphas / spread * 3)
        joints = {j: float(rng.uniform(0.4, 0.9)) for j in LSP14.joints}
        joints["left_wrist"] = float("nan")  # a joint never labelled
        ci = {p: [0.4, 0.7] for p in ("head_top", "neck", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")}
        runs.append(
            (
                name,
                {
                    "pck": 0.6,
                    "alpha": 0.2,
                    "normalizer": "torso",
                    "pck_per_joint": joints,
                    "pck_curve": {"alphas": alphas.tolist(), "mean": mean.tolist()},
                    "pck_per_part_ci": ci,
                    "pck_per_joint_ci": {j: [0.3, 0.8] for j in LSP14.joints},
                    "pck_ci": [0.55, 0.65],
                },
            )
        )
    return [r for _, r in runs], [n for n, _ in runs]


def training_log():
    records, epoch = [], 0
    for stage, epochs, loss, lr in (("heatmap", 6, 0.02, 2e-3), ("crf", 2, 40.0, 1e-2), ("joint", 3, 38.0, 1e-3)):
        for i in range(epochs):
            epoch += 1
            record = {"stage": stage, "epoch": i + 1, "global_epoch": epoch, "lr": lr * 0.7**i, "loss": loss * (1 - 0.04 * i)}
            if i % 2:
                record["val"] = {"pck": 0.4 + 0.03 * epoch}
            records.append(record)
    return records


def distribution():
    """A tree CRF over a 12 x 8 grid whose unaries peak near the person's joints (the crop is 8 px a cell)."""
    cells = (PERSON + 0.5) / 8 - 0.5
    ys, xs = np.mgrid[0:12, 0:8]
    unary = np.stack([-((xs - x) ** 2 + (ys - y) ** 2) / 2.0 for x, y in cells])
    r = 4
    d = torch.stack(torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij"), -1).flip(-1)  # (dx, dy)
    tables = torch.stack([-((d - torch.tensor(cells[c] - cells[p]).float()) ** 2).sum(-1) / 3 for p, c in LSP14.edges])
    return TreeCRF(torch.tensor(unary)[None].float(), tables, LSP14), tables


def figures(style):
    """Every kind of figure the package makes, with small inputs: name -> Figure."""
    rng = np.random.default_rng(1)
    image = crop()
    truth = np.c_[PERSON, np.full(K, 2.0)]
    truth[LSP14.index("left_wrist"), 2] = 1  # occluded
    prediction = PERSON + rng.normal(0, 3, PERSON.shape)
    scores = rng.uniform(0.2, 1.0, K)
    crf, tables = distribution()
    runs, labels = results()
    images = [crop(s) for s in range(3)]
    truths = np.stack([truth] * 3)
    models = {"CNN alone": truths[..., :2] + rng.normal(0, 4, (3, K, 2)), "CNN + CRF (joint, from the MSE CNN)": truths[..., :2] + 1}
    two = np.stack([PERSON, PERSON + [70, 4]])
    return {
        "poses": viz.plot_poses(image, np.c_[prediction, scores], LSP14, style=style),
        "poses_blank": viz.plot_poses(None, prediction, LSP14, style=style),
        "poses_persons": viz.plot_poses(None, two, LSP14, scores=[0.91, 0.55], boxes=[[10, 0, 50, 96], [80, 4, 50, 96]], style=style),
        "poses_truth": viz.plot_poses(image, prediction, LSP14, ground_truth=truth, style=style),
        "poses_overlay": viz.plot_poses(image, prediction, LSP14, ground_truth=truth, compare="overlay", style=style),
        "gallery": viz.plot_gallery(images, truths, models, LSP14, num=3, style=style),
        "gallery_overlay": viz.plot_gallery(images, truths, models, LSP14, num=2, overlay=True, style=style),
        "heatmaps_top": viz.plot_heatmaps(image, crf.unary[0], crf.marginals[0], LSP14, style=style),
        "heatmaps": viz.plot_heatmaps(image, crf.unary[0], crf.marginals[0], LSP14, top=None, style=style),
        "pairwise": viz.plot_pairwise(tables, LSP14, style=style),
        "deformation": viz.plot_deformation(tables, LSP14, stride=8, style=style),
        "deformation_image": viz.plot_deformation(tables, LSP14, image=image, pose=PERSON, stride=8, style=style),
        "samples": viz.plot_samples(image, crf, LSP14, 100, ellipses=True, marginal_argmax=True, style=style),
        "pck_curves": viz.plot_pck_curves(runs, labels, style=style),
        "joint_pck": viz.plot_joint_pck(runs, labels, style=style),
        "joint_pck_joints": viz.plot_joint_pck(runs, labels, parts=False, style=style),
        "training": viz.plot_training(training_log(), alpha=0.2, normalizer="bbox", style=style),
    }


@pytest.fixture(scope="module", params=STYLES)
def rendered(request):
    return request.param, figures(request.param)


def test_every_figure_is_legible_at_its_print_width(rendered):
    style, figs = rendered
    failures = {}
    for name, fig in figs.items():
        assert fig.get_figwidth() == pytest.approx(viz.STYLES[style].width), name
        assert fig.dpi == 300, name
        problems = viz.legibility_problems(fig)
        if problems:
            failures[name] = problems
    assert not failures, failures


NATURAL_WIDTHS = {
    "gallery": 6.9,
    "gallery_overlay": 6.9,
    "heatmaps": 6.9,
    "pairwise": 6.9,
    "deformation_image": 6.9,
    "joint_pck_joints": 6.9,
    "training": 6.9,
}


def test_default_widths_are_print_widths():
    for name, fig in figures(None).items():  # not drawn: a width is a number
        assert fig.get_figwidth() == pytest.approx(NATURAL_WIDTHS.get(name, 3.3)), name
        assert fig.dpi == 300, name


def test_no_nan_is_drawn_as_a_bar(rendered):
    _, figs = rendered
    for name in ("joint_pck", "joint_pck_joints"):
        ax = figs[name].axes[0]
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        missing = "wrist" if name == "joint_pck" else "left wrist"
        bars = [p for c in ax.containers for p in c.patches]
        assert all(np.isfinite(p.get_height()) for p in bars)
        drawn = [p.get_x() + p.get_width() / 2 for p in ax.containers[0].patches]  # the first run lacks the left wrist
        if name == "joint_pck_joints":
            assert all(abs(x - ticks.index(missing)) > 0.3 for x in drawn)
            marks = [c for c in ax.collections if c.get_gid() == "missing"][0].get_offsets()
            assert len(marks) == 3 and all(abs(x - ticks.index(missing)) < 0.5 and y == 0 for x, y in marks)  # every run lacks it
        else:  # a part with one side missing is the other side's value, not a bar of 0
            assert any(abs(x - ticks.index(missing)) < 0.5 for x in drawn)


# ----------------------------------------------------------------------------- the measures


def test_ciede2000_matches_the_published_test_pairs():
    # Sharma, Wu and Dalal (2005), table 1: pairs 1, 2, 3, 7, 8 and 18
    lab1 = [[50, 2.6772, -79.7751], [50, 3.1571, -77.2803], [50, 2.8361, -74.0200], [50, 0, 0], [50, -1, 2], [50, 2.5, 0]]
    lab2 = [[50, 0, -82.7485], [50, 0, -82.7485], [50, 0, -82.7485], [50, -1, 2], [50, 0, 0], [73, 25, -18]]
    expected = [2.0425, 2.8615, 3.4412, 2.3669, 2.3669, 27.1492]
    assert viz.colors.delta_e2000_lab(lab1, lab2) == pytest.approx(expected, abs=1e-4)


def test_colour_vision_simulation():
    greys = np.linspace(0, 1, 5)[:, None] * np.ones(3)
    for kind in viz.CVD_KINDS:
        assert np.allclose(viz.simulate_cvd(greys, kind), greys, atol=1e-4)  # neutral colours stay neutral
    red, green = (1.0, 0.0, 0.0), (0.0, 0.6, 0.0)
    assert viz.delta_e(red, green) > 60 > 25 > viz.delta_e(red, green, "deuteranopia")  # the red-green confusion
    assert viz.delta_e(red, green, "protanopia") < 30
    with pytest.raises(ValueError, match="kind: expected 'normal' or one of"):
        viz.simulate_cvd(red, "monochromacy")


def test_side_palette_survives_colour_vision_deficiencies_and_the_old_one_did_not():
    sides = list(viz.SIDE_COLORS.values())
    worst, kind = viz.min_delta_e(sides, ("normal", *viz.CVD_KINDS))
    assert worst >= 25, kind
    old = [(0.0, 1.0, 0.0), (1.0, 128 / 255, 0.0), (0.2, 0.6, 1.0)]  # MMPose's green / orange / blue (issue 21)
    assert viz.min_delta_e(old[:2], ("deuteranopia",))[0] < 12


def panel(**kwargs):
    fig = Figure(figsize=(3.3, 2.0), dpi=100)
    ax = fig.add_axes((0.2, 0.2, 0.7, 0.7), **kwargs)
    return fig, ax


def test_the_checks_catch_each_kind_of_problem():
    fig, ax = panel()
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("x", fontsize=6)
    assert any("is 6 pt, under 7 pt" in p for p in viz.legibility_problems(fig))
    assert any("the y axis of" in p and "no label" in p for p in viz.legibility_problems(fig))
    fig, ax = panel()
    ax.set_axis_off()
    ax.text(0.5, 0.5, "first label", fontsize=8)
    ax.text(0.52, 0.5, "second label", fontsize=8)
    ax.text(0.99, 0.5, "far too long to fit in the figure", fontsize=8)
    problems = viz.legibility_problems(fig)
    assert any("'first label' and 'second label' overlap" in p for p in problems)
    assert any("reaches outside the figure" in p for p in problems)
    fig, ax = panel()
    ax.set_axis_off()
    ax.imshow(np.zeros((4, 4)))
    ax.text(1, 1, "on the map", fontsize=8)
    ax.text(2, 3, "boxed", fontsize=8, bbox={"facecolor": "white"})
    problems = viz.legibility_problems(fig)
    assert [p for p in problems if "image" in p] == ["text 'on the map' lies on an image without a background box"]
    pose = np.c_[PERSON, np.ones(K)]
    close = viz.plot_poses(None, pose, LSP14, palette={"left": (0.0, 0.6, 0.0), "right": (0.8, 0.3, 0.0)})  # red-green
    assert any("under deuteranopia" in p or "under protanopia" in p for p in viz.legibility_problems(close))
    assert viz.legibility_problems(viz.plot_poses(None, pose, LSP14)) == []
