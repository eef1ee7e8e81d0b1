"""crfpose.viz: colours and opacity read back from rendered pixels, both sides visible where they overlap,
SVG/PDF structure, panel layouts, moments against hand-set Gaussians, sample and log values read back
from the artists, selection rules, bootstrap intervals, input errors."""

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib

import numpy as np
import pytest
import torch

from crfpose import viz
from crfpose.crf import TreeCRF
from crfpose.crf.pairwise import displacement_grid
from crfpose.evaluate import compute_metrics
from crfpose.metrics import pck_curve
from crfpose.skeletons import LSP14, Skeleton

# A plus-shaped pose: centre root 0, left arm 1 -> 3, right arm 2 -> 4 (flip pairs are (left, right)).
TOY = Skeleton("toy", ("root", "l1", "r1", "l2", "r2"), (-1, 0, 0, 1, 2), flip_pairs=((1, 2), (3, 4)))
POSE = np.array([[50.0, 20], [20, 50], [80, 50], [20, 90], [80, 90]])
BLUE, ORANGE, WHITE = (0, 114, 178), (230, 159, 0), (255, 255, 255)  # left, right, centre
HALO = 0.1 * 255


def render(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def pixel_at(fig, pixels, xy, ax=None):
    """The rendered pixel under data point xy of ``ax`` (default: the figure's first axes)."""
    x, y = (ax or fig.axes[0]).transData.transform(xy)
    return pixels[int(pixels.shape[0] - y), int(x)]


def white(size=100):
    return np.full((size, size, 3), 255, np.uint8)


def by_gid(ax, gid):
    return [c for c in ax.collections if c.get_gid() == gid][0]


def reading_order(legend):
    """A legend's texts as a reader reads them: rows top to bottom, each left to right (from the drawing)."""
    renderer = legend.figure.canvas.get_renderer()
    legend.figure.canvas.draw()
    boxes = [(t.get_window_extent(renderer), t.get_text()) for t in legend.get_texts()]
    return [text for box, text in sorted(boxes, key=lambda b: (-round(b[0].y0), b[0].x0))]


def test_side_colours_follow_flip_pairs():
    assert viz.joint_sides(TOY) == ("center", "left", "right", "left", "right")
    left, right, centre = (tuple(c / 255 for c in rgb) for rgb in (BLUE, ORANGE, WHITE))
    assert viz.joint_colors(TOY) == [centre, left, right, left, right]
    # links = edges (0,1), (0,2), (1,3), (2,4): a link is left/right only when both ends are
    assert viz.link_colors(TOY) == [centre, centre, left, right]
    sides = viz.joint_sides(LSP14)
    assert sides[LSP14.index("left_wrist")] == "left" and sides[LSP14.index("neck")] == "center"
    assert viz.joint_colors(TOY, palette={"left": "black"})[1] == (0.0, 0.0, 0.0)
    limbs = viz.link_colors(LSP14, palette="limbs")  # OpenPose-style: one colour per limb, all different
    assert len(limbs) == len(LSP14.links) and len(set(limbs)) == len(limbs)
    assert viz.joint_colors(LSP14, palette="limbs")[LSP14.index("left_wrist")] == limbs[LSP14.links.index((10, 11))]
    with pytest.raises(ValueError, match="palette: expected keys among"):
        viz.joint_colors(TOY, palette={"up": "red"})
    with pytest.raises(ValueError, match="palette: expected None, one of"):
        viz.link_colors(TOY, palette="rainbow")


def test_limb_midpoints_show_side_colours_on_a_blank_canvas():
    fig = viz.plot_poses(None, POSE, TOY)
    px = render(fig)
    mid = lambda a, b: (POSE[a] + POSE[b]) / 2  # noqa: E731
    assert np.abs(pixel_at(fig, px, mid(1, 3)) - BLUE).max() <= 2
    assert np.abs(pixel_at(fig, px, mid(2, 4)) - ORANGE).max() <= 2
    assert np.abs(pixel_at(fig, px, mid(0, 1)) - WHITE).max() <= 2
    assert np.abs(pixel_at(fig, px, (50, 70)) - 255).max() == 0  # between the arms: background
    # a dark outline runs along every limb: just beside the white centre limb's core
    ax = fig.axes[0]
    halo = by_gid(ax, "pose0-halo")
    core = by_gid(ax, "pose0-limbs")
    assert np.allclose(halo.get_linewidth(), core.get_linewidth() + 2 * max(0.4, 0.15 * core.get_linewidth()[0]))
    a, b = ax.transData.transform(POSE[0]), ax.transData.transform(POSE[1])
    normal = np.array([a[1] - b[1], b[0] - a[0]]) / np.hypot(*(b - a))  # across the limb, on screen
    offset = (core.get_linewidth()[0] / 2 + 0.25) * fig.dpi / 72  # pixels from the limb's axis: inside the outline
    x, y = (a + b) / 2 + offset * normal
    assert px[int(round(px.shape[0] - y)), int(round(x))].max() < 120


def test_joints_under_the_threshold_and_their_limbs_are_not_drawn():
    scores = np.array([1.0, 1.0, 1.0, 0.2, 1.0])
    fig = viz.plot_poses(white(), np.c_[POSE, scores], TOY, threshold=0.3)
    px = render(fig)
    assert np.abs(pixel_at(fig, px, POSE[3]) - 255).max() == 0  # the joint's spot is blank
    assert np.abs(pixel_at(fig, px, (POSE[1] + POSE[3]) / 2) - 255).max() == 0  # and its limb
    assert np.abs(pixel_at(fig, px, POSE[4]) - ORANGE).max() <= 2  # the others are drawn
    fig = viz.plot_poses(white(), np.c_[POSE, scores], TOY, threshold=0.1)
    assert np.abs(pixel_at(fig, render(fig), (POSE[1] + POSE[3]) / 2) - 255).max() > 50


def test_opacity_follows_the_score():
    scores = np.array([1.0, 1.0, 1.0, 1.0, 0.5])  # limb 2 -> 4: opacity min(1, 0.5), its outline too
    fig = viz.plot_poses(white(), POSE, TOY, scores=scores)
    colour = pixel_at(fig, render(fig), (POSE[2] + POSE[4]) / 2)
    under = 0.5 * HALO + 0.5 * 255  # the half-transparent outline over the white image
    expected = 0.5 * np.array(ORANGE) + 0.5 * under
    assert np.abs(colour - expected).max() <= 2
    coll = by_gid(fig.axes[0], "pose0-limbs")
    assert sorted(np.round(coll.get_edgecolor()[:, 3], 3)) == [0.5, 1, 1, 1]


def test_nan_coordinates_are_not_drawn():
    pose = np.c_[POSE, np.ones(5)]
    pose[3, :2] = np.nan
    fig = viz.plot_poses(white(), pose, TOY)
    px = render(fig)
    assert np.abs(pixel_at(fig, px, (0, 0)) - 255).max() == 0
    assert np.abs(pixel_at(fig, px, (1, 1)) - 255).max() == 0
    limbs = [c for c in fig.axes[0].collections if c.get_gid() == "pose0-limbs"][0]
    segments = limbs.get_segments()
    assert len(segments) == 3 and all(np.isfinite(s).all() for s in segments)
    joints = [c for c in fig.axes[0].collections if c.get_gid() == "pose0-joints"][0]
    assert len(joints.get_offsets()) == 4


def test_ground_truth_side_by_side_by_default_and_as_an_overlay():
    gt = np.c_[POSE, [2, 1, 2, 0, 2]]  # joint 1 occluded, joint 3 unlabelled
    fig = viz.plot_poses(white(200), POSE + 3, TOY, ground_truth=gt, boxes=[[15, 15, 70, 80]], scores=[0.87])
    truth, pred = fig.axes[:2]
    assert (truth.get_title(), pred.get_title()) == ("ground truth", "prediction")
    assert truth.get_position().y0 == pytest.approx(pred.get_position().y0) and truth.get_position().x1 < pred.get_position().x0
    limbs = by_gid(truth, "gt0-limbs")
    assert len(limbs.get_segments()) == 3 and len(by_gid(pred, "pose0-limbs").get_segments()) == 4
    dashed = [style[1] is not None for style in limbs.get_linestyle()]
    assert dashed == [True, False, False]  # root -> l1 ends at the occluded joint; drawn first (centre)
    faces = by_gid(truth, "gt0-joints").get_facecolor()
    hollow = [tuple(np.round(f[:3], 3)) == (1, 1, 1) for f in faces]
    assert sum(hollow) == 2  # the root is white anyway (centre); the occluded l1 is hollow (white face)
    assert [t.get_text() for t in pred.texts] == ["0.87"] and not truth.texts
    box = [p for p in pred.patches if p.get_gid() == "box0"][0]
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (15, 15, 70, 80)
    assert reading_order(fig.legends[0]) == ["left", "right", "centre", "occluded"]

    fig = viz.plot_poses(white(200), POSE + 3, TOY, ground_truth=gt, compare="overlay")
    ax = fig.axes[0]
    truth_limbs, pose_limbs = by_gid(ax, "gt0-limbs"), by_gid(ax, "pose0-limbs")
    assert all(style[1] is not None for style in truth_limbs.get_linestyle())  # black dashes ...
    assert np.allclose(truth_limbs.get_edgecolor()[:, :3], 0) and truth_limbs.get_zorder() > pose_limbs.get_zorder()  # ... on top
    assert reading_order(fig.legends[0]) == ["left", "right", "centre", "ground truth", "occluded"]
    with pytest.raises(ValueError, match="compare: expected 'side-by-side' or 'overlay'"):
        viz.plot_poses(None, POSE, TOY, ground_truth=gt, compare="stacked")


def test_line_width_scales_with_the_box():
    small = viz.plot_poses(white(400), POSE, TOY, boxes=[[0, 0, 100, 100]])
    large = viz.plot_poses(white(400), POSE, TOY, boxes=[[0, 0, 200, 200]])
    width = lambda fig: by_gid(fig.axes[0], "pose0-limbs").get_linewidth()[0]  # noqa: E731
    assert width(large) == pytest.approx(2 * width(small))


def test_both_sides_stay_visible_where_they_coincide():
    pose = POSE.copy()
    pose[[1, 3]] = pose[[2, 4]]  # the left arm lies exactly on the right arm
    fig = viz.plot_poses(None, pose, TOY)
    px = render(fig)
    ax = fig.axes[0]
    a, b = ax.transData.transform(pose[2]), ax.transData.transform(pose[4])  # the arm on screen: vertical
    core = by_gid(ax, "pose0-limbs").get_linewidth()
    assert core.max() * 0.55 == pytest.approx(core.min())  # left limbs: narrower, drawn last
    row = int(round(px.shape[0] - (a[1] + b[1]) / 2))
    across = px[row, int(a[0]) - 20 : int(a[0]) + 21]  # pixels across the limb
    near = lambda c: (np.abs(across - c).max(1) <= 12).sum()  # noqa: E731
    assert near(BLUE) >= 3 and near(ORANGE) >= 2  # the left core and the right rims on both sides
    left_idx = np.flatnonzero(np.abs(across - BLUE).max(1) <= 12)
    right_idx = np.flatnonzero(np.abs(across - ORANGE).max(1) <= 12)
    assert right_idx.min() < left_idx.min() and right_idx.max() > left_idx.max()


def test_images_of_every_kind_give_the_same_raster(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    from PIL import Image

    Image.fromarray(array).save(tmp_path / "a.png")
    tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    for image in (array, tmp_path / "a.png", str(tmp_path / "a.png"), Image.fromarray(array), tensor):
        assert np.array_equal(viz.as_image(image), array)
        fig = viz.plot_poses(image, POSE * 0.3, TOY, fade=0)
        shown = fig.axes[0].images[0].get_array()
        assert np.array_equal(np.asarray(shown), array)
        assert fig.axes[0].get_xlim() == (-0.5, 39.5) and fig.axes[0].get_ylim() == (29.5, -0.5)
    faded = np.asarray(viz.plot_poses(array, POSE * 0.3, TOY).axes[0].images[0].get_array())
    assert np.array_equal(faded, viz.fade_image(array, viz.FADE))


def test_fading_keeps_the_scene_and_never_shows_black():
    image = np.zeros((4, 4, 3), np.uint8)
    image[0, 0] = (200, 30, 30)
    image[1, 1] = 255
    faded = viz.fade_image(image, 0.55).astype(int)
    assert faded.min() >= 255 * 0.5 * 0.55 - 1  # black becomes grey
    assert np.array_equal(faded[1, 1], [255, 255, 255])  # white stays white
    assert faded[0, 0, 0] > faded[0, 0, 1] and faded[0, 0, 0] - faded[0, 0, 1] < 200 - 30  # red, less saturated
    assert np.array_equal(viz.fade_image(image, 0.0), image)
    grey = viz.fade_image(image, 0.55, grey=True)
    assert (grey == grey[..., :1]).all()
    with pytest.raises(ValueError, match=r"fade: expected a number in \[0, 1\], got 2"):
        viz.plot_poses(image, POSE, TOY, fade=2)


def test_many_persons_and_an_existing_axes():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot(1, 2, 2)
    out = viz.plot_poses(white(), np.stack([POSE, POSE + 5]), TOY, scores=[0.5, 0.9], ax=ax)
    assert out is fig
    assert {c.get_gid() for c in ax.collections} == {f"pose{i}-{part}" for i in (0, 1) for part in ("halo", "limbs", "joints")}
    assert ax.get_legend() is None and not fig.legends  # no legend in a given axes unless asked


def test_bad_inputs_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match=r"keypoints: expected K=5 joints \(skeleton 'toy'\), got 4"):
        viz.plot_poses(None, POSE[:4], TOY)
    with pytest.raises(ValueError, match=r"keypoints: expected \(K, 2\|3\) or \(N, K, 2\|3\)"):
        viz.plot_poses(None, np.zeros((5, 4)), TOY)
    with pytest.raises(ValueError, match=r"keypoints: expected .* got shape \(5,\)"):
        viz.plot_poses(None, np.zeros(5), TOY)
    with pytest.raises(ValueError, match="missing.png: image file not found"):
        viz.plot_poses(tmp_path / "missing.png", POSE, TOY)
    with pytest.raises(ValueError, match=r"image: expected an \(H, W, 3\) image array, got shape \(4, 5, 7\)"):
        viz.plot_poses(np.zeros((4, 5, 7), np.uint8), POSE, TOY)
    with pytest.raises(ValueError, match=r"scores: expected \(5,\) per joint or a scalar per person, got shape \(3,\)"):
        viz.plot_poses(None, POSE, TOY, scores=[1, 2, 3])
    with pytest.raises(ValueError, match=r"boxes: expected \(1, 4\) \(x, y, w, h\) boxes"):
        viz.plot_poses(None, POSE, TOY, boxes=[[1, 2, 3]])
    with pytest.raises(ValueError, match=r"ground_truth: expected K=5 joints"):
        viz.plot_poses(None, POSE, TOY, ground_truth=np.zeros((3, 3)))
    with pytest.raises(TypeError, match="skeleton: expected a crfpose Skeleton, got str"):
        viz.plot_poses(None, POSE, "toy")
    with pytest.raises(ValueError, match=r"path: expected an extension among \['.png', '.pdf', '.svg'\], got 'f.jpg'"):
        viz.save(viz.plot_poses(None, POSE, TOY), tmp_path / "f.jpg")
    with pytest.raises(ValueError, match="style: expected a Style or one of"):
        viz.plot_poses(None, POSE, TOY, style="poster")
    with pytest.raises(ValueError, match="compare: 'side-by-side' needs a new figure"):
        viz.plot_poses(
            None, POSE, TOY, ground_truth=np.c_[POSE, np.full(5, 2)], compare="side-by-side", ax=viz.plot_poses(None, POSE, TOY).axes[0]
        )
    assert not (tmp_path / "f.jpg").exists()


def _paths_by_stroke(svg_text):
    root = ET.fromstring(svg_text)
    strokes = {}
    for el in root.iter("{http://www.w3.org/2000/svg}path"):
        m = re.search(r"stroke: (#[0-9a-f]{6})", el.get("style", ""))
        if m and el.get("d"):
            strokes[m.group(1)] = strokes.get(m.group(1), 0) + 1
    return root, strokes


def test_svg_keeps_limbs_as_stroked_paths_and_titles_as_text(tmp_path):
    path = viz.save(viz.plot_poses(white(), POSE, TOY, legend=False), tmp_path / "pose.svg")
    root, strokes = _paths_by_stroke(path.read_text())
    assert strokes.get("#0072b2") == 1 and strokes.get("#e69f00") == 1 and strokes.get("#ffffff") == 2  # left, right, centre limbs
    assert strokes.get("#1a1a1a") == 4 + 5  # their outlines and the joints' edges
    assert root.find(".//{http://www.w3.org/2000/svg}image") is not None  # the photo is a raster layer
    unary = torch.zeros(5, 6, 4)
    fig = viz.plot_heatmaps(None, unary, torch.softmax(unary.flatten(1), -1).view(5, 6, 4), TOY, top=None)
    text = viz.save(fig, tmp_path / "maps.svg").read_text()
    texts = {"".join(t.itertext()).strip() for t in ET.fromstring(text).iter("{http://www.w3.org/2000/svg}text")}
    assert set(TOY.joints) <= texts and {"backbone", "CRF"} <= texts


def _pdf_streams(data: bytes) -> bytes:
    out = b""
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            out += zlib.decompress(m.group(1))
        except zlib.error:
            out += m.group(1)
    return out


def test_pdf_is_one_vector_page_over_a_raster_image(tmp_path):
    path = viz.save(viz.plot_poses(white(), POSE, TOY, legend=False), tmp_path / "pose.pdf")
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) == 1
    assert b"/Subtype /Image" in data  # the background photo
    content = _pdf_streams(data)
    # the four limbs and their four outlines: stroked moveto/lineto paths, in their colours
    assert len(re.findall(rb"m\s+[-\d.]+ [-\d.]+ l\s+S", content)) == 8
    assert re.search(rb"0 0\.447\d* 0\.698\d* RG", content) and re.search(rb"0\.90196\d* 0\.62352\d* 0 RG", content)
    assert re.search(rb"\b1 G", content) and re.search(rb"\b0\.1 G", content)  # white and the outlines' grey
    fig = viz.plot_pairwise(torch.zeros(4, 3, 3), TOY)
    data = viz.save(fig, tmp_path / "k.pdf").read_bytes()
    assert b"/FontFile2" in data  # TrueType (type 42) fonts: titles stay text


def test_png_is_written_atomically_at_the_print_width_and_dpi(tmp_path):
    from PIL import Image

    for style, width in ((None, viz.SINGLE_COLUMN), ("paper", 3.3), ("paper-wide", 6.9)):
        fig = viz.plot_poses(None, POSE, TOY, style=style)
        path = viz.save(fig, tmp_path / "sub" / "pose.png")
        with Image.open(path) as im:
            assert im.size[0] == round(width * 300) and im.mode == "RGBA"  # 300 dpi, full colour (not a palette PNG)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["pose.png"]


def test_plot_heatmaps_rows_per_model_on_one_stated_scale_and_the_compact_default():
    rng = np.random.default_rng(1)
    unary = torch.tensor(rng.normal(size=(5, 8, 6)))
    q = torch.softmax(unary.flatten(1), -1).view(5, 8, 6)
    marg = q.clone()
    marg[1] = torch.roll(q[1], 3, dims=0)  # the CRF moved joints 1 and 3, joint 3 most
    marg[3] = 0
    marg[3, 0, 0] = 1
    fig = viz.plot_heatmaps(np.zeros((32, 24, 3), np.uint8), unary, marg, TOY, top=None)
    maps = [ax for ax in fig.axes if len(ax.images) == 2]
    assert len(maps) == 10 and len(fig.axes) == 11  # backbone and CRF per joint + one colour bar
    norms = {(im.norm.vmin, im.norm.vmax, type(im.norm).__name__) for ax in maps for im in ax.images[1:]}
    assert norms == {(1e-3, 1.0, "LogNorm")}  # three decades below the largest probability: marg[3, 0, 0]
    assert fig.axes[-1].get_ylabel() == "probability per cell (log scale)"
    assert [ax.get_title() for ax in maps[:5]] == list(TOY.joints) and not any(ax.texts for ax in maps)  # names above, nothing on the maps
    assert [t.get_text() for t in fig.texts] == ["backbone", "CRF"]  # row names, left of the maps
    assert all(t.get_position()[0] < maps[0].get_position().x0 for t in fig.texts)
    assert np.allclose(maps[0].images[1].get_array(), q[0].numpy())
    assert np.allclose(maps[5].images[1].get_array(), marg[0].numpy())
    assert maps[0].images[1].get_extent() == [-0.5, 23.5, 31.5, -0.5]  # the grid spans the crop
    background = np.asarray(maps[0].images[0].get_array())
    assert background.min() > 60  # a black crop is shown grey, never black
    linear = viz.plot_heatmaps(None, unary, marg, TOY, top=None, scale="linear")
    assert linear.axes[-1].get_ylabel() == "probability per cell (linear scale)"
    power = viz.plot_heatmaps(None, unary, marg, TOY, gamma=0.5)
    assert power.axes[-1].get_ylabel().replace("\n", " ") == "probability per cell (power law, γ = 0.5)"  # broken when long
    compact = viz.plot_heatmaps(None, unary, marg, TOY)  # default: the 4 joints the CRF moved most
    panels = [ax for ax in compact.axes if ax.images]
    assert len(panels) == 8
    titles = [ax.get_title() for ax in panels if ax.get_title()]
    assert [t.split("\n")[0] for t in titles[:2]] == ["l2", "l1"] and titles[
        0
    ] == f"l2\nTV {1 - q[3, 0, 0]:.2f}"  # TV = 1 - q(cell of the point mass)
    # the panels fill the figure: no empty band above, below or between them
    boxes = [ax.get_position() for ax in panels]
    height = compact.get_figheight()
    assert (1 - max(b.y1 for b in boxes)) * height < 0.5 and min(b.y0 for b in boxes) * height < 0.1
    with pytest.raises(ValueError, match=r"unary: expected \(K=5, H, W\)"):
        viz.plot_heatmaps(None, unary[:4], marg, TOY)
    with pytest.raises(ValueError, match=r"marginals: expected the shape of unary"):
        viz.plot_heatmaps(None, unary, marg[:, :4], TOY)
    with pytest.raises(ValueError, match=r"top: expected an int in \[1, 5\]"):
        viz.plot_heatmaps(None, unary, marg, TOY, top=9)
    with pytest.raises(ValueError, match=r"scale: expected one of \['linear', 'log'\]"):
        viz.plot_heatmaps(None, unary, marg, TOY, scale="sqrt")


def gaussian_table(cov, mean, radius):
    d = displacement_grid(radius, torch.float64) - torch.tensor(mean, dtype=torch.float64)
    precision = torch.linalg.inv(torch.tensor(cov, dtype=torch.float64))
    return -0.5 * torch.einsum("hwi,ij,hwj->hw", d, precision, d)


def test_pairwise_panels_and_moments_of_a_gaussian():
    cov = [[9.0, 3.0], [3.0, 4.0]]
    tables = torch.stack([gaussian_table(cov, (1.0, -2.0), 18)] * 4)
    mean, covariance = viz.displacement_moments(tables, TOY)
    assert np.allclose(mean, [1, -2], atol=1e-6) and np.allclose(covariance, cov, rtol=1e-4)
    fig = viz.plot_pairwise(tables, TOY)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["root → l1", "root → r1", "l1 → l2", "r1 → r2"]
    shown = panels[0].images[0].get_array()
    assert shown.sum() == pytest.approx(1.0) and shown.shape == (37, 37)
    assert np.unravel_index(np.argmax(shown), shown.shape) == (18 - 2, 18 + 1)  # [R + dy, R + dx]
    assert all(list(ax.get_xticks()) == [-18, 0, 18] and list(ax.get_yticks()) == [-18, 0, 18] for ax in panels)  # ticks in cells
    corner = panels[2]  # bottom-left: tick labels and the axis names
    assert (corner.get_xlabel(), corner.get_ylabel()) == ("dx (cells)", "dy (cells)")
    assert fig.axes[-1].get_ylabel() == "p(dx, dy) (linear scale)"  # 2 x 2 panels: the bar at the right
    odd = viz.plot_pairwise(torch.zeros(13, 3, 3), LSP14)  # 13 kernels: the bar fills the empty slot
    bar = odd.axes[-1]
    assert bar.get_xlabel() == "p(dx, dy)\nlinear scale" and sum(ax.get_visible() and bool(ax.images) for ax in odd.axes) == 13
    kernels = [ax for ax in odd.axes if ax.images]
    last_row = [ax for ax in kernels if ax.get_position().y0 == pytest.approx(min(k.get_position().y0 for k in kernels))]
    assert bar.get_position().x0 > max(ax.get_position().x1 for ax in last_row)
    with pytest.raises(ValueError, match=r"pairwise: expected \(E=4, 2R\+1, 2R\+1\)"):
        viz.plot_pairwise(tables[:3], TOY)


def test_deformation_ellipse_has_the_axes_of_the_covariance():
    cov = np.array([[9.0, 3.0], [3.0, 4.0]])
    tables = torch.stack([gaussian_table(cov, (0.0, 10.0), 18)] * 4)
    fig = viz.plot_deformation(tables, TOY, POSE, n_std=2.0)
    values, vectors = np.linalg.eigh(cov)
    ellipse = [p for p in fig.axes[0].patches if p.get_gid() == "ellipse-l2"][0]
    assert ellipse.center == pytest.approx(tuple(POSE[1] + [0, 10]), abs=1e-4)
    assert ellipse.width == pytest.approx(4 * np.sqrt(values[1]), rel=1e-3)
    assert ellipse.height == pytest.approx(4 * np.sqrt(values[0]), rel=1e-3)
    direction = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1])) % 180
    assert ellipse.angle % 180 == pytest.approx(direction, abs=0.1)
    implied = viz.chain_mean_pose(tables, TOY)
    assert np.allclose(implied, [[0, 0], [0, 10], [0, 10], [0, 20], [0, 20]], atol=1e-3)
    with pytest.raises(ValueError, match=r"mean_pose: expected \(K=5, 2\)"):
        viz.plot_deformation(tables, TOY, POSE[:3])


def test_plot_samples_draws_each_joints_samples_within_their_cells_and_the_map_pose():
    unary = torch.full((1, 5, 6, 8), -float("inf"))
    allowed = {0: [(4, 1)], 1: [(2, 2), (2, 3)], 2: [(6, 2)], 3: [(1, 5), (2, 5)], 4: [(6, 5)]}  # (x, y) cells
    for j, cells in allowed.items():
        for x, y in cells:
            unary[0, j, y, x] = 0.0
    unary[0, 1, 3, 2] = 1.0  # l1 prefers (2, 3): the MAP pose takes it
    crf = TreeCRF(unary, torch.zeros(4, 9, 9), TOY)
    fig = viz.plot_samples(np.zeros((12, 16, 3), np.uint8), crf, TOY, num=7, ellipses=True, marginal_argmax=True)
    ax = fig.axes[0]
    dots = by_gid(ax, "samples").get_offsets()
    assert len(dots) == 7 * 5
    cells = np.floor((np.asarray(dots) + 0.5) / 2).astype(int)  # the image is 2x the grid: pixel -> cell
    colours = by_gid(ax, "samples").get_facecolor()[:, :3]
    sides = dict(zip(["center", "left", "right"], [(0.25, 0.25, 0.25), (0, 114 / 255, 178 / 255), (230 / 255, 159 / 255, 0)]))
    joint_of = {tuple(np.round(sides[s], 4)): [j for j in range(5) if viz.joint_sides(TOY)[j] == s] for s in sides}
    for cell, rgb in zip(cells, colours):
        joints = joint_of[tuple(np.round(rgb, 4))]
        assert any(tuple(cell) in allowed[j] for j in joints)  # every dot inside a cell its joint can take
    assert len({tuple(d) for d in np.round(dots, 3)}) == len(dots)  # jittered: no two dots on one spot
    to_pixels = lambda x, y: ((x + 0.5) * 2 - 0.5, (y + 0.5) * 2 - 0.5)  # noqa: E731
    map_joints = by_gid(ax, "map-joints").get_offsets()
    assert to_pixels(2, 3) in [tuple(p) for p in map_joints] and to_pixels(4, 1) in [tuple(p) for p in map_joints]
    assert by_gid(ax, "map-limbs").get_zorder() > by_gid(ax, "samples").get_zorder()  # the MAP pose on top
    marg = by_gid(ax, "marginal-argmax")
    assert tuple(marg.get_offsets()[0]) == to_pixels(4, 1)
    assert len([p for p in ax.patches if (p.get_gid() or "").startswith("ellipse")]) == 5
    assert reading_order(fig.legends[0])[:2] == ["MAP pose", "7 samples"]
    again = viz.plot_samples(np.zeros((12, 16, 3), np.uint8), crf, TOY, num=7)
    assert np.array_equal(by_gid(again.axes[0], "samples").get_offsets(), dots)  # seed 0: repeatable


def test_pck_curves_and_joint_bars_read_the_results():
    rng = np.random.default_rng(0)
    gt = np.c_[rng.uniform(0, 100, (10 * 14, 2)), np.full(140, 2.0)].reshape(10, 14, 3)
    pred = gt[..., :2] + rng.normal(0, 5, (10, 14, 2))
    boxes = np.tile([0, 0, 100, 100], (10, 1))
    result = compute_metrics({"pred": pred, "gt": gt, "box": boxes, "head_box": boxes}, LSP14)
    expected = pck_curve(pred, gt, normalizer="bbox", boxes=boxes, skeleton=LSP14)
    assert np.allclose(result["pck_curve"]["mean"], expected.mean)
    result = json.loads(json.dumps(result))  # as `crfpose eval --out` writes it
    other = dict(result, pck=0.5, pck_per_joint={j: 0.25 for j in LSP14.joints}, pck_curve={"alphas": [0, 0.5], "mean": [0.0, 1.0]})
    fig = viz.plot_pck_curves([other, result], ["B", "A"])
    lines = {line.get_gid(): line for line in fig.axes[0].lines}
    assert np.allclose(lines["curve1"].get_ydata(), 100 * expected.mean)
    assert np.allclose(lines["curve0"].get_ydata(), [0, 100])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [f"A (AUC {100 * expected.auc:.1f})", "B (AUC 50.0)"]  # the higher curve (larger AUC) first
    assert fig.axes[0].get_xlabel() == "threshold α (× person-box size)"

    fig = viz.plot_joint_pck([result, other], ["A", "B"], parts=False)
    bars = fig.axes[0].containers
    assert [b.patches[0].get_height() for b in bars] == pytest.approx([100 * result["pck_per_joint"]["right_ankle"], 25])
    assert [b.patches[-1].get_height() for b in bars] == pytest.approx([100 * result["pck"], 50])
    assert len(bars[0].patches) == 15
    assert fig.axes[0].get_ylabel() == "PCK@0.2 (%)\nα × person-box size"
    fig = viz.plot_joint_pck([result, other], ["A", "B"])  # default: parts, left and right averaged
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert names == ["head top", "neck", "shoulder", "elbow", "wrist", "hip", "knee", "ankle", "mean"]
    ankle = (result["pck_per_joint"]["left_ankle"] + result["pck_per_joint"]["right_ankle"]) / 2
    assert ax.containers[0].patches[names.index("ankle")].get_height() == pytest.approx(100 * ankle)
    assert reading_order(ax.get_legend()) == ["A", "B"]
    with pytest.raises(ValueError, match=r"results\[0\]: expected a PCKCurve or a dict with 'pck_curve'"):
        viz.plot_pck_curves([{"pck": 0.5}])
    with pytest.raises(ValueError, match="labels: expected 2 labels"):
        viz.plot_joint_pck([result, other], ["A"])


def test_joint_bars_show_missing_values_as_missing_and_intervals_as_error_bars():
    joints = {j: 0.5 for j in LSP14.joints}
    joints["left_wrist"] = joints["right_wrist"] = None  # never labelled: no value
    joints["neck"] = float("nan")
    result = {"pck": 0.5, "alpha": 0.1, "pck_per_joint": joints, "pck_per_part_ci": {"knee": [0.4, 0.6]}, "pck_ci": [0.45, 0.55]}
    fig = viz.plot_joint_pck(result, ["A"])
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_xticklabels()]
    centres = [p.get_x() + p.get_width() / 2 for p in ax.containers[0].patches]
    assert len(centres) == len(names) - 2  # no bar for the wrist and the neck ...
    assert all(abs(c - names.index(g)) > 0.3 for c in centres for g in ("wrist", "neck"))
    marks = by_gid(ax, "missing").get_offsets()  # ... but a cross on the axis, named in the legend
    assert sorted(round(x) for x, _ in marks) == [names.index("neck"), names.index("wrist")] and all(y == 0 for _, y in marks)
    assert reading_order(ax.get_legend()) == ["A", "no value"]
    px = render(fig)
    for g in ("wrist", "neck"):  # and nothing coloured drawn there
        x, y0 = ax.transData.transform((names.index(g) - 0.3, 2.0))
        _, y1 = ax.transData.transform((names.index(g), 40.0))
        column = px[int(px.shape[0] - y1) : int(px.shape[0] - y0), int(x)]
        assert (np.abs(column - column.mean(1, keepdims=True)).max(1) < 8).all()  # greys only
    intervals = [c for c in ax.collections if c.get_gid() == "intervals0"][0]
    spans = sorted(tuple(np.round(seg[:, 1], 6)) for seg in intervals.get_segments())
    assert spans == [(40.0, 60.0), (45.0, 55.0)]  # the knee and the mean: the intervals as given
    assert "whiskers: bootstrap intervals" in ax.get_xlabel()  # what the whiskers are (no level given)
    stated = viz.plot_joint_pck(result | {"ci_level": 0.9}, ["A"]).axes[0].get_xlabel()
    assert stated.endswith("\nwhiskers: 90% bootstrap intervals")
    assert "whiskers" not in viz.plot_joint_pck({"pck": 0.5, "pck_per_joint": joints}, ["A"]).axes[0].get_xlabel()


def test_plot_training_reads_the_log(tmp_path):
    records = [
        {"stage": "heatmap", "epoch": 1, "global_epoch": 1, "lr": 1e-3, "loss": 0.5, "val": {"pck": 0.2}},
        {"stage": "heatmap", "epoch": 2, "global_epoch": 2, "lr": 5e-4, "loss": 0.25, "val": {"pck": 0.4}},
        {"stage": "crf", "epoch": 1, "global_epoch": 3, "lr": 1e-4, "loss": 12.0},
        {"stage": "crf", "epoch": 2, "global_epoch": 4, "lr": 1e-5, "loss": 10.0, "val": {"pck": 0.7}},
    ]
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    fig = viz.plot_training(path, alpha=0.2, normalizer="bbox")
    axes = {ax.get_ylabel(): ax for ax in fig.axes}
    assert list(axes) == ["heatmap MSE", "CRF NLL (nats)", "learning rate", "val. PCK@0.2 (%)\nα × person-box size"]
    gid = lambda ax: {line.get_gid(): line for line in ax.lines if line.get_gid() and line.get_gid() != "stage-boundary"}  # noqa: E731
    assert list(gid(axes["heatmap MSE"])) == ["loss-0"] and list(gid(axes["heatmap MSE"])["loss-0"].get_ydata()) == [0.5, 0.25]
    assert list(gid(axes["CRF NLL (nats)"])) == ["loss-1"]  # one loss kind per axis: never MSE and NLL on one scale
    rates = gid(axes["learning rate"])
    assert list(rates) == ["lr-0-backbone", "lr-1-CRF"] and list(rates["lr-1-CRF"].get_ydata()) == [1e-4, 1e-5]
    val = gid(axes["val. PCK@0.2 (%)\nα × person-box size"])
    assert list(val["val-0"].get_ydata()) == pytest.approx([20, 40]) and list(val["val-1"].get_xdata()) == [4]
    assert reading_order(fig.legends[0]) == ["backbone (heatmap stage)", "CRF (crf stage)"]
    boundary = [line for line in fig.axes[0].lines if line.get_gid() == "stage-boundary"]
    assert [line.get_xdata()[0] for line in boundary] == [2.5]
    groups = [dict(r, lr={"backbone": r["lr"], "CRF": 10 * r["lr"]}, stage="joint") for r in records]  # one stage, two groups
    rates = gid([ax for ax in viz.plot_training(groups).axes if ax.get_ylabel() == "learning rate"][0])
    assert list(rates) == ["lr-0-backbone", "lr-0-CRF"] and list(rates["lr-0-CRF"].get_ydata()) == [1e-2, 5e-3, 1e-3, 1e-4]
    path.write_text("{oops\n")
    with pytest.raises(ValueError, match="log: line 1 of .* is not JSON"):
        viz.plot_training(path)
    with pytest.raises(ValueError, match="log: file not found"):
        viz.plot_training(tmp_path / "none.jsonl")


def test_gallery_shows_the_examples_its_rule_selects():
    gt = np.stack([np.c_[POSE, np.full(5, 2.0)]] * 3)
    a = gt[..., :2] + np.array([1.0, 0.0])  # error 1 px everywhere
    b = gt[..., :2].copy()
    b[1] += [6.0, 8.0]  # image 1: error 10 px, image 2: 3 px
    b[2] += [3.0, 0.0]
    fig = viz.plot_gallery([white(), white(), white()], gt, {"CNN": b, "CRF": a}, TOY, num=2)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["ground truth", "CNN", "CRF"] and not any(ax.get_title() for ax in fig.axes[3:])
    errors = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert errors == ["mean error 10.0 px", "mean error 1.0 px", "mean error 3.0 px", "mean error 1.0 px"]
    assert {c.get_gid() for c in fig.axes[0].collections} == {"gt0-halo", "gt0-limbs", "gt0-joints"}  # truth alone, as a pose
    assert "gt0-limbs" not in {c.get_gid() for c in fig.axes[1].collections}  # side by side: not under the prediction
    overlay = viz.plot_gallery([white(), white(), white()], gt, {"CNN": b, "CRF": a}, TOY, num=2, overlay=True)
    assert "gt0-limbs" in {c.get_gid() for c in overlay.axes[1].collections}
    assert viz.most_different(gt, {"CNN": b, "CRF": a}, TOY, 3) == [1, 2, 0]
    tall = np.full((80, 40, 3), 255, np.uint8)  # rows take the height of their own image: no empty bands
    fig = viz.plot_gallery([white(), tall, white()], gt, {"CNN": b, "CRF": a}, TOY, num=2)
    heights = [ax.get_position().height for ax in fig.axes[::3]]
    assert heights[0] / heights[1] == pytest.approx(80 / 40 / (white().shape[0] / white().shape[1]), rel=0.02)
    chosen = viz.select_examples(gt, {"CNN": b, "CRF": a}, TOY, 1, "first")
    fig = viz.plot_gallery([white(), tall, white()], gt, {"CNN": b, "CRF": a}, TOY, select=chosen)
    assert [t.get_text() for ax in fig.axes for t in ax.texts] == ["mean error 0.0 px", "mean error 1.0 px"]


def test_selection_rules_choose_and_describe_the_examples():
    gt = np.stack([np.c_[POSE, np.full(5, 2.0)]] * 5)
    errors_a, errors_b = np.array([1.0, 9.0, 4.0, 2.0, 6.0]), np.array([1.0, 1.0, 5.0, 2.0, 1.0])
    a = gt[..., :2] + errors_a[:, None, None] * np.array([1.0, 0.0])
    b = gt[..., :2] + errors_b[:, None, None] * np.array([0.0, 1.0])
    b[3] = np.nan  # no prediction: no error, so it comes last
    models = {"CNN": a, "CRF": b}
    pick = viz.select_examples(gt, models, TOY, 3)
    assert pick.indices == (1, 4, 2) and pick.rule == "largest-difference"
    assert pick.description == "the 3 of 5 poses where the mean joint errors of CNN and CRF differ most, largest difference first"
    worst = viz.select_examples(gt, models, TOY, 2, "worst")  # of the last model by default
    assert worst.indices == (2, 0) and "largest mean joint error of CRF" in worst.description
    assert viz.select_examples(gt, models, TOY, 2, "worst", model="CNN").indices == (1, 4)
    typical = viz.select_examples(gt, models, TOY, 1, "typical", model="CNN")  # median error 4.0: pose 2
    assert typical.indices == (2,) and "closest to its median (4.0 px)" in typical.description
    drawn = viz.select_examples(gt, models, TOY, 3, "random", seed=3)
    assert drawn.indices == tuple(np.random.default_rng(3).permutation(5)[:3]) and "seed 3" in drawn.description
    assert viz.select_examples(gt, models, TOY, 9, "first").indices == (0, 1, 2, 3, 4)
    with pytest.raises(ValueError, match="rule: expected one of"):
        viz.select_examples(gt, models, TOY, 2, "best")
    with pytest.raises(ValueError, match="model: expected one of"):
        viz.select_examples(gt, models, TOY, 2, "worst", model="HRNet")


def test_pck_intervals_bracket_the_estimates_and_merge_left_and_right():
    rng = np.random.default_rng(0)
    correct = rng.random((200, 14)) < np.linspace(0.2, 0.9, 14)
    correct[:, LSP14.index("neck")] = True  # always right: a zero-width interval
    counted = np.ones_like(correct)
    counted[:, LSP14.index("head_top")] = False  # never labelled: no interval
    ci = viz.pck_intervals(correct, counted, LSP14, resamples=300, seed=0)
    assert ci["pck_per_joint_ci"]["neck"] == [1.0, 1.0]
    assert all(np.isnan(ci["pck_per_joint_ci"]["head_top"]))
    for j in ("left_knee", "right_ankle"):
        value = correct[:, LSP14.index(j)].mean()
        low, high = ci["pck_per_joint_ci"][j]
        assert low < value < high and high - low < 0.2
    knee = correct[:, [LSP14.index("left_knee"), LSP14.index("right_knee")]].mean()
    low, high = ci["pck_per_part_ci"]["knee"]
    assert low < knee < high and high - low < min(np.diff(ci["pck_per_joint_ci"][j])[0] for j in ("left_knee", "right_knee"))
    pooled = correct[counted].mean()
    assert ci["pck_ci"][0] < pooled < ci["pck_ci"][1]
    with pytest.raises(ValueError, match=r"correct, counted: expected two \(N, K=14\) arrays"):
        viz.pck_intervals(correct[:, :3], counted, LSP14)


@pytest.mark.slow
def test_import_crfpose_does_not_import_matplotlib():
    code = "import sys, crfpose, crfpose.cli, crfpose.figures; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
