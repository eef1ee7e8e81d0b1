"""crfpose.viz: colours and opacity read back from rendered pixels, SVG/PDF structure, panel layouts,
moments against hand-set Gaussians, sample and log values read back from the artists, input errors."""

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
GREEN, ORANGE, BLUE = (0, 255, 0), (255, 128, 0), (51, 153, 255)


def render(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def pixel_at(fig, pixels, xy):
    """The rendered pixel under data point xy of the figure's first axes."""
    x, y = fig.axes[0].transData.transform(xy)
    return pixels[int(pixels.shape[0] - y), int(x)]


def white(size=100):
    return np.full((size, size, 3), 255, np.uint8)


def test_side_colours_follow_flip_pairs():
    assert viz.joint_sides(TOY) == ("center", "left", "right", "left", "right")
    assert viz.joint_colors(TOY) == [(0.2, 0.6, 1.0), (0, 1, 0), (1, 128 / 255, 0), (0, 1, 0), (1, 128 / 255, 0)]
    # links = edges (0,1), (0,2), (1,3), (2,4): a link is left/right only when both ends are
    assert viz.link_colors(TOY) == [(0.2, 0.6, 1.0), (0.2, 0.6, 1.0), (0, 1, 0), (1, 128 / 255, 0)]
    sides = viz.joint_sides(LSP14)
    assert sides[LSP14.index("left_wrist")] == "left" and sides[LSP14.index("neck")] == "center"
    assert viz.joint_colors(TOY, palette={"left": "black"})[1] == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="palette: expected keys among"):
        viz.joint_colors(TOY, palette={"up": "red"})


def test_limb_midpoints_show_side_colours_on_a_blank_canvas():
    fig = viz.plot_poses(None, POSE, TOY)
    px = render(fig)
    mid = lambda a, b: (POSE[a] + POSE[b]) / 2  # noqa: E731
    assert np.abs(pixel_at(fig, px, mid(1, 3)) - GREEN).max() <= 2
    assert np.abs(pixel_at(fig, px, mid(2, 4)) - ORANGE).max() <= 2
    assert np.abs(pixel_at(fig, px, mid(0, 1)) - BLUE).max() <= 2
    assert np.abs(pixel_at(fig, px, (50, 70)) - 255).max() == 0  # between the arms: background


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
    scores = np.array([1.0, 1.0, 1.0, 1.0, 0.5])  # limb 2 -> 4: opacity min(1, 0.5)
    fig = viz.plot_poses(white(), POSE, TOY, scores=scores)
    colour = pixel_at(fig, render(fig), (POSE[2] + POSE[4]) / 2)
    expected = 0.5 * np.array(ORANGE) + 0.5 * 255
    assert np.abs(colour - expected).max() <= 2
    coll = [c for c in fig.axes[0].collections if c.get_gid() == "pose0-limbs"][0]
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


def test_ground_truth_is_hollow_and_dashed_and_boxes_scores_are_drawn():
    gt = np.c_[POSE, [2, 2, 2, 0, 2]]  # joint 3 unlabelled
    fig = viz.plot_poses(white(200), POSE + 3, TOY, ground_truth=gt, boxes=[[15, 15, 70, 80]], scores=[0.87])
    ax = fig.axes[0]
    limbs = {c.get_gid(): c for c in ax.collections}
    assert len(limbs["gt0-limbs"].get_segments()) == 3 and len(limbs["pose0-limbs"].get_segments()) == 4
    assert limbs["gt0-limbs"].get_linestyle()[0][1] is not None  # dashed
    assert limbs["pose0-limbs"].get_linestyle()[0][1] is None  # solid
    assert len(limbs["gt0-joints"].get_facecolor()) == 0  # hollow markers
    assert len(limbs["pose0-joints"].get_facecolor()) == 5
    assert [t.get_text() for t in ax.texts] == ["0.87"]
    box = [p for p in ax.patches if p.get_gid() == "box0"][0]
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (15, 15, 70, 80)


def test_line_width_scales_with_the_box():
    small = viz.plot_poses(white(400), POSE, TOY, boxes=[[0, 0, 100, 100]])
    large = viz.plot_poses(white(400), POSE, TOY, boxes=[[0, 0, 200, 200]])
    width = lambda fig: [c for c in fig.axes[0].collections if c.get_gid() == "pose0-limbs"][0].get_linewidth()[0]  # noqa
    assert width(large) == pytest.approx(2 * width(small))


def test_images_of_every_kind_give_the_same_raster(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    from PIL import Image

    Image.fromarray(array).save(tmp_path / "a.png")
    tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    for image in (array, tmp_path / "a.png", str(tmp_path / "a.png"), Image.fromarray(array), tensor):
        assert np.array_equal(viz.as_image(image), array)
        fig = viz.plot_poses(image, POSE * 0.3, TOY)
        shown = fig.axes[0].images[0].get_array()
        assert np.array_equal(np.asarray(shown), array)
        assert fig.axes[0].get_xlim() == (-0.5, 39.5) and fig.axes[0].get_ylim() == (29.5, -0.5)


def test_many_persons_and_an_existing_axes():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot(1, 2, 2)
    out = viz.plot_poses(white(), np.stack([POSE, POSE + 5]), TOY, scores=[0.5, 0.9], ax=ax)
    assert out is fig
    assert {c.get_gid() for c in ax.collections} == {"pose0-limbs", "pose0-joints", "pose1-limbs", "pose1-joints"}


def test_bad_inputs_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match=r"keypoints: expected K=5 joints \(skeleton 'toy'\), got 4"):
        viz.plot_poses(None, POSE[:4], TOY)
    with pytest.raises(ValueError, match=r"keypoints: expected \(K, 2\|3\) or \(N, K, 2\|3\)"):
        viz.plot_poses(None, np.zeros((5, 4)), TOY)
    with pytest.raises(ValueError, match=r"keypoints: expected .* got shape \(5,\)"):
        viz.plot_poses(None, np.zeros(5), TOY)
    with pytest.raises(ValueError, match="image: file not found: .*missing.png"):
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
    path = viz.save(viz.plot_poses(white(), POSE, TOY), tmp_path / "pose.svg")
    root, strokes = _paths_by_stroke(path.read_text())
    assert strokes.get("#00ff00") == 1 and strokes.get("#ff8000") == 1 and strokes.get("#3399ff") == 2
    assert root.find(".//{http://www.w3.org/2000/svg}image") is not None  # the photo is a raster layer
    unary = torch.zeros(5, 6, 4)
    fig = viz.plot_heatmaps(None, unary, torch.softmax(unary.flatten(1), -1).view(5, 6, 4), TOY)
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
    path = viz.save(viz.plot_poses(white(), POSE, TOY), tmp_path / "pose.pdf")
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) == 1
    assert b"/Subtype /Image" in data  # the background photo
    content = _pdf_streams(data)
    # the four limbs: stroked moveto/lineto paths in their side colours
    assert len(re.findall(rb"m\s+[-\d.]+ [-\d.]+ l\s+S", content)) == 4
    assert b"0 1 0 RG" in content and re.search(rb"1 0\.50196\d* 0 RG", content) and b"0.2 0.6 1 RG" in content
    fig = viz.plot_pairwise(torch.zeros(4, 3, 3), TOY)
    data = viz.save(fig, tmp_path / "k.pdf").read_bytes()
    assert b"/FontFile2" in data  # TrueType (type 42) fonts: titles stay text


def test_png_is_written_atomically_with_the_style_dpi(tmp_path):
    from PIL import Image

    fig = viz.plot_poses(None, POSE, TOY, style="paper")
    path = viz.save(fig, tmp_path / "sub" / "pose.png")
    with Image.open(path) as im:
        assert im.size[0] == round(viz.STYLES["paper"].width * viz.STYLES["paper"].dpi)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["pose.png"]


def test_plot_heatmaps_pairs_per_joint_on_one_scale_and_the_compact_variant():
    rng = np.random.default_rng(1)
    unary = torch.tensor(rng.normal(size=(5, 8, 6)))
    q = torch.softmax(unary.flatten(1), -1).view(5, 8, 6)
    marg = q.clone()
    marg[1] = torch.roll(q[1], 3, dims=0)  # the CRF moved joints 1 and 3, joint 3 most
    marg[3] = 0
    marg[3, 0, 0] = 1
    fig = viz.plot_heatmaps(np.zeros((32, 24, 3), np.uint8), unary, marg, TOY)
    maps = [ax for ax in fig.axes if len(ax.images) == 2]
    assert len(maps) == 10 and len(fig.axes) == 11  # a pair per joint + one colour bar
    norms = {(im.norm.vmin, im.norm.vmax) for ax in maps for im in ax.images[1:]}
    assert norms == {(0.0, 1.0)}  # the largest probability of either map: marg[3, 0, 0]
    headers = [t.get_text() for ax in maps for t in ax.texts if t.get_text() not in ("backbone", "CRF")]
    assert headers == list(TOY.joints)
    assert np.allclose(maps[0].images[1].get_array(), q[0].numpy())
    assert maps[0].images[1].get_extent() == [-0.5, 23.5, 31.5, -0.5]  # the grid spans the crop
    compact = viz.plot_heatmaps(None, unary, marg, TOY, top=2)
    panels = [ax for ax in compact.axes if ax.images]
    assert len(panels) == 4
    headers = [t.get_text() for ax in panels for t in ax.texts if t.get_text() not in ("backbone", "CRF")]
    assert [h.split()[0] for h in headers] == ["l2", "l1"]
    with pytest.raises(ValueError, match=r"unary: expected \(K=5, H, W\)"):
        viz.plot_heatmaps(None, unary[:4], marg, TOY)
    with pytest.raises(ValueError, match=r"marginals: expected the shape of unary"):
        viz.plot_heatmaps(None, unary, marg[:, :4], TOY)
    with pytest.raises(ValueError, match=r"top: expected an int in \[1, 5\]"):
        viz.plot_heatmaps(None, unary, marg, TOY, top=9)


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
    assert [ax.get_title() for ax in panels] == ["root\n→ l1", "root\n→ r1", "l1\n→ l2", "r1\n→ r2"]
    shown = panels[0].images[0].get_array()
    assert shown.sum() == pytest.approx(1.0) and shown.shape == (37, 37)
    assert np.unravel_index(np.argmax(shown), shown.shape) == (18 - 2, 18 + 1)  # [R + dy, R + dx]
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


def test_plot_samples_draws_num_skeletons_from_the_support():
    unary = torch.full((1, 5, 6, 8), -float("inf"))
    allowed = {0: [(4, 1)], 1: [(2, 2), (2, 3)], 2: [(6, 2)], 3: [(1, 5), (2, 5)], 4: [(6, 5)]}  # (x, y) cells
    for j, cells in allowed.items():
        for x, y in cells:
            unary[0, j, y, x] = 0.0
    crf = TreeCRF(unary, torch.zeros(4, 9, 9), TOY)
    fig = viz.plot_samples(np.zeros((12, 16, 3), np.uint8), crf, TOY, num=7, ellipses=True)
    samples = [c for c in fig.axes[0].collections if (c.get_gid() or "").startswith("sample")]
    assert len(samples) == 7
    to_pixels = lambda x, y: ((x + 0.5) * 2 - 0.5, (y + 0.5) * 2 - 0.5)  # noqa: E731 (image is 2x the grid)
    for c in samples:
        for seg, (a, b) in zip(c.get_segments(), TOY.links):
            assert tuple(seg[0]) in [to_pixels(*cell) for cell in allowed[a]]
            assert tuple(seg[1]) in [to_pixels(*cell) for cell in allowed[b]]
    marg = [c for c in fig.axes[0].collections if c.get_gid() == "marginal-argmax"][0]
    assert tuple(marg.get_offsets()[0]) == to_pixels(4, 1)
    assert len([p for p in fig.axes[0].patches if (p.get_gid() or "").startswith("ellipse")]) == 5


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
    fig = viz.plot_pck_curves([result, other], ["A", "B"])
    lines = {line.get_gid(): line for line in fig.axes[0].lines}
    assert np.allclose(lines["curve0"].get_ydata(), 100 * expected.mean)
    assert np.allclose(lines["curve1"].get_ydata(), [0, 100])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [f"A (AUC {100 * expected.auc:.1f})", "B (AUC 50.0)"]
    fig = viz.plot_joint_pck([result, other], ["A", "B"])
    bars = fig.axes[0].containers
    assert [b.patches[0].get_height() for b in bars] == pytest.approx([100 * result["pck_per_joint"]["right_ankle"], 25])
    assert [b.patches[-1].get_height() for b in bars] == pytest.approx([100 * result["pck"], 50])
    assert len(bars[0].patches) == 15
    with pytest.raises(ValueError, match=r"results\[0\]: expected a PCKCurve or a dict with 'pck_curve'"):
        viz.plot_pck_curves([{"pck": 0.5}])
    with pytest.raises(ValueError, match="labels: expected 2 labels"):
        viz.plot_joint_pck([result, other], ["A"])


def test_plot_training_reads_the_log(tmp_path):
    records = [
        {"stage": "heatmap", "epoch": 1, "global_epoch": 1, "lr": 1e-3, "loss": 0.5, "val": {"pck": 0.2}},
        {"stage": "heatmap", "epoch": 2, "global_epoch": 2, "lr": 5e-4, "loss": 0.25, "val": {"pck": 0.4}},
        {"stage": "crf", "epoch": 1, "global_epoch": 3, "lr": 1e-4, "loss": 12.0},
        {"stage": "crf", "epoch": 2, "global_epoch": 4, "lr": 1e-5, "loss": 10.0, "val": {"pck": 0.7}},
    ]
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    fig = viz.plot_training(path)
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.lines if line.get_gid()}
    assert list(lines["loss-0"].get_ydata()) == [0.5, 0.25] and list(lines["loss-1"].get_ydata()) == [12.0, 10.0]
    assert list(lines["lr-1"].get_xdata()) == [3, 4] and list(lines["lr-1"].get_ydata()) == [1e-4, 1e-5]
    assert list(lines["val-0"].get_ydata()) == pytest.approx([20, 40]) and list(lines["val-1"].get_xdata()) == [4]
    assert [t.get_text() for t in fig.axes[0].texts] == ["heatmap", "crf"]
    boundary = [line for line in fig.axes[0].lines if not line.get_gid()]
    assert [line.get_xdata()[0] for line in boundary] == [2.5]
    path.write_text("{oops\n")
    with pytest.raises(ValueError, match="log: line 1 of .* is not JSON"):
        viz.plot_training(path)
    with pytest.raises(ValueError, match="log: file not found"):
        viz.plot_training(tmp_path / "none.jsonl")


def test_gallery_shows_where_the_models_differ_most():
    gt = np.stack([np.c_[POSE, np.full(5, 2.0)]] * 3)
    a = gt[..., :2] + np.array([1.0, 0.0])  # error 1 px everywhere
    b = gt[..., :2].copy()
    b[1] += [6.0, 8.0]  # image 1: error 10 px, image 2: 3 px
    b[2] += [3.0, 0.0]
    fig = viz.plot_gallery([white(), white(), white()], gt, {"CNN": b, "CRF": a}, TOY, num=2)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["ground truth\n", "CNN\n10.0 px", "CRF\n1.0 px", "ground truth\n", "CNN\n3.0 px", "CRF\n1.0 px"]
    assert viz.most_different(gt, {"CNN": b, "CRF": a}, TOY, 3) == [1, 2, 0]
    tall = np.full((80, 40, 3), 255, np.uint8)  # rows take the height of their own image: no empty bands
    fig = viz.plot_gallery([white(), tall, white()], gt, {"CNN": b, "CRF": a}, TOY, num=2)
    heights = [ax.get_position().height for ax in fig.axes[::3]]
    assert heights[0] / heights[1] == pytest.approx(80 / 40 / (white().shape[0] / white().shape[1]), rel=0.02)


@pytest.mark.slow
def test_import_crfpose_does_not_import_matplotlib():
    code = "import sys, crfpose, crfpose.cli, crfpose.figures; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
