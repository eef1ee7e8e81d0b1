"""Top-down transforms: affine crop geometry, exact inverse, image warp, flips, augmentation."""

import numpy as np
import pytest
import torch

from crfpose.codec import encode, heatmap_to_input, input_to_heatmap
from crfpose.data.transforms import (
    TopDownTransform,
    affine_points,
    box_to_center_scale,
    color_jitter,
    flip_heatmaps,
    flip_keypoints,
    get_affine,
    half_body_box,
    image_box,
    invert_affine,
    joints_box,
    warp_image,
)
from crfpose.skeletons import COCO17, LSP14


def test_box_to_center_scale_fixes_aspect_and_pads():
    center, scale = box_to_center_scale((10, 20, 30, 40), aspect_ratio=0.75, padding=1.25)
    assert center.tolist() == [25.0, 40.0]
    assert scale.tolist() == pytest.approx([30 * 1.25, 40 * 1.25])
    _, scale = box_to_center_scale((0, 0, 60, 40), aspect_ratio=0.75, padding=1.0)
    assert scale.tolist() == pytest.approx([60.0, 80.0])  # widened box -> taller
    _, scale = box_to_center_scale((0, 0, 10, 40), aspect_ratio=0.75, padding=2.0)
    assert scale.tolist() == pytest.approx([60.0, 80.0])


def test_affine_maps_region_edges_to_crop_edges():
    a = get_affine((50, 40), (100, 80), (10, 8))
    corners = affine_points(np.array([[0.0, 0.0], [100.0, 80.0], [50.0, 40.0]]), a)
    assert np.allclose(corners, [[-0.5, -0.5], [9.5, 7.5], [4.5, 3.5]])
    flipped = affine_points(np.array([[0.0, 0.0]]), get_affine((50, 40), (100, 80), (10, 8), flip=True))
    assert np.allclose(flipped, [[9.5, -0.5]])
    # +90 degrees: a point to the right of the centre appears above it on screen
    turned = affine_points(np.array([[60.0, 40.0]]), get_affine((50, 40), (100, 80), (10, 8), rotation=90))
    assert np.allclose(turned, [[4.5, 2.5]])


def test_crop_then_inverse_returns_original_points():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-50, 700, size=(200, 3))
    for _ in range(20):
        a = get_affine(rng.uniform(0, 640, 2), rng.uniform(20, 500, 2), (192, 256), rng.uniform(-60, 60), bool(rng.random() < 0.5))
        back = affine_points(affine_points(pts, a), invert_affine(a))
        assert np.abs(back - pts).max() < 1e-4
        assert np.array_equal(back[:, 2], pts[:, 2])
    t = torch.tensor(pts, dtype=torch.float64)
    assert torch.allclose(affine_points(affine_points(t, a), invert_affine(a)), t, atol=1e-6)


def test_warp_identity_and_integer_shift_are_exact():
    img = torch.rand(3, 7, 9, generator=torch.Generator().manual_seed(0))
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    assert torch.allclose(warp_image(img, ident, (9, 7)), img, atol=1e-6)
    shift = np.array([[1.0, 0, -2], [0, 1.0, -1]])  # crop pixel (u, v) = original (u + 2, v + 1)
    out = warp_image(img, shift, (5, 4))
    assert torch.allclose(out, img[:, 1:5, 2:7], atol=1e-6)


def test_warped_blob_lands_where_the_affine_sends_its_centre():
    h, w = 60, 80
    cx, cy = 31.3, 24.7
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 3.0**2)).float()[None].repeat(3, 1, 1)
    a = get_affine((35, 30), (60, 60), (64, 64), rotation=30, flip=True)
    out = warp_image(blob, a, (64, 64))[0].double()
    v, u = torch.meshgrid(torch.arange(64.0, dtype=torch.float64), torch.arange(64.0, dtype=torch.float64), indexing="ij")
    centroid = [(out * u).sum() / out.sum(), (out * v).sum() / out.sum()]
    expected = affine_points(np.array([[cx, cy]]), a)[0]
    assert abs(centroid[0].item() - expected[0]) < 0.05 and abs(centroid[1].item() - expected[1]) < 0.05


def test_flip_twice_is_identity_and_swaps_pairs():
    rng = np.random.default_rng(1)
    kp = np.concatenate([rng.uniform(0, 100, (17, 2)), rng.integers(0, 3, (17, 1))], axis=1)
    once = flip_keypoints(kp, 100, COCO17)
    assert np.allclose(flip_keypoints(once, 100, COCO17), kp)
    ls, rs = COCO17.index("left_shoulder"), COCO17.index("right_shoulder")
    assert once[ls].tolist() == pytest.approx([99 - kp[rs, 0], kp[rs, 1], kp[rs, 2]])
    nose = COCO17.index("nose")
    assert once[nose].tolist() == pytest.approx([99 - kp[nose, 0], kp[nose, 1], kp[nose, 2]])


def test_flip_heatmaps_agrees_with_flipped_keypoints():
    rng = np.random.default_rng(2)
    kp = np.concatenate([rng.uniform(2, 20, (14, 2)), np.full((14, 1), 2.0)], axis=1)
    maps, _ = encode(kp, (24, 22), sigma=1.5)
    flipped_maps, _ = encode(flip_keypoints(kp, 24, LSP14), (24, 22), sigma=1.5)
    assert torch.allclose(flip_heatmaps(maps[None], LSP14)[0], flipped_maps, atol=1e-6)
    assert torch.equal(flip_heatmaps(flip_heatmaps(maps[None], LSP14), LSP14)[0], maps)
    # a flip of the 96-pixel input crop is a flip of its 24-cell heatmap (stride 4), without a shift
    crop_kp = heatmap_to_input(kp, 4)
    from_crop, _ = encode(input_to_heatmap(flip_keypoints(crop_kp, 96, LSP14), 4), (24, 22), sigma=1.5)
    assert torch.allclose(flip_heatmaps(maps[None], LSP14)[0], from_crop, atol=1e-6)


def _person():
    rng = np.random.default_rng(3)
    kp = np.concatenate([rng.uniform(40, 120, (17, 2)), np.full((17, 1), 2.0)], axis=1)
    kp[3] = 0  # an unlabelled joint
    image = torch.rand(3, 160, 150, generator=torch.Generator().manual_seed(3))
    return image, kp, (40.0, 40.0, 80.0, 80.0)


def test_eval_transform_keypoints_targets_and_inverse():
    image, kp, box = _person()
    tf = TopDownTransform(COCO17, input_size=(48, 64), heatmap_size=(12, 16), normalize=False)
    out = tf(image, kp, box)
    assert out["image"].shape == (3, 64, 48) and out["target"].shape == (17, 16, 12)
    mapped = affine_points(kp, out["affine"])
    labelled = kp[:, 2] > 0
    assert np.allclose(out["keypoints"].numpy()[labelled], mapped[labelled], atol=1e-4)
    assert out["keypoints"][3].tolist() == [0.0, 0.0, 0.0] and out["target_weight"][3] == 0
    back = affine_points(out["keypoints"].double().numpy(), invert_affine(out["affine"]))
    assert np.abs(back[labelled, :2] - kp[labelled, :2]).max() < 1e-4
    assert torch.allclose(out["image"], warp_image(image, out["affine"], (48, 64)))


def test_train_transform_flip_rotation_is_exact_and_seeded():
    image, kp, box = _person()
    tf = TopDownTransform(COCO17, input_size=(48, 64), heatmap_size=(12, 16), train=True, flip_prob=1.0, rotation_prob=1.0)
    out = tf(image, kp, box, np.random.default_rng(5))
    again = tf(image, kp, box, np.random.default_rng(5))
    assert torch.equal(out["image"], again["image"]) and np.array_equal(out["affine"], again["affine"])
    assert out["flipped"] and out["rotation"] != 0
    perm = list(COCO17.flip_permutation)
    expected = affine_points(kp, out["affine"])[perm]
    labelled = kp[perm, 2] > 0
    assert np.allclose(out["keypoints"].numpy()[labelled], expected[labelled], atol=1e-4)


def test_half_body_box_covers_one_half():
    _, kp, _ = _person()
    box = half_body_box(kp, COCO17, np.random.default_rng(0))
    x, y, w, h = box
    inside = (kp[:, 0] >= x) & (kp[:, 0] <= x + w) & (kp[:, 1] >= y) & (kp[:, 1] <= y + h) & (kp[:, 2] > 0)
    upper = [i for i, j in enumerate(COCO17.joints) if not any(p in j for p in ("hip", "knee", "ankle")) and kp[i, 2] > 0]
    lower = [i for i, j in enumerate(COCO17.joints) if any(p in j for p in ("hip", "knee", "ankle"))]
    assert inside[upper].all() or inside[lower].all()
    assert half_body_box(np.zeros((17, 3)), COCO17, np.random.default_rng(0)) is None
    tf = TopDownTransform(
        COCO17,
        input_size=(48, 64),
        heatmap_size=(12, 16),
        train=True,
        half_body_prob=1.0,
        half_body_min_joints=4,
        scale_factor=0.0,
        rotation_prob=0.0,
        flip_prob=0.0,
        color_jitter=0.0,
    )
    image, kp, box = _person()
    out = tf(image, kp, box, np.random.default_rng(0))
    full = TopDownTransform(COCO17, input_size=(48, 64), heatmap_size=(12, 16))(image, kp, box)
    assert out["scale"][0] != pytest.approx(full["scale"][0])


def test_color_jitter_zero_strength_is_identity():
    img = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(color_jitter(img, 0.0, np.random.default_rng(0)), img, atol=1e-6)
    out = color_jitter(img, 0.5, np.random.default_rng(0))
    assert out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, img)


def test_transform_errors_name_the_argument():
    with pytest.raises(ValueError, match="box must be finite"):
        box_to_center_scale((0, 0, 0, 10), 1.0)
    with pytest.raises(ValueError, match="aspect_ratio and padding"):
        box_to_center_scale((0, 0, 5, 10), 0.0)
    with pytest.raises(ValueError, match="scale must be two positive"):
        get_affine((0, 0), (0, 10), (8, 8))
    with pytest.raises(ValueError, match="output_size"):
        get_affine((0, 0), (10, 10), (8, 0))
    with pytest.raises(ValueError, match="affine must have shape"):
        invert_affine(np.eye(3))
    with pytest.raises(ValueError, match="points must have shape"):
        affine_points(np.zeros((3, 1)), np.eye(3)[:2])
    with pytest.raises(ValueError, match="image must be a"):
        warp_image(torch.zeros(5, 5), np.eye(3)[:2], (4, 4))
    with pytest.raises(ValueError, match=r"keypoints must have shape \(\.\.\., 17, 3\)"):
        flip_keypoints(np.zeros((14, 3)), 10, COCO17)
    with pytest.raises(ValueError, match=r"heatmaps must have shape \(B, 14"):
        flip_heatmaps(torch.zeros(1, 17, 4, 4), LSP14)
    with pytest.raises(ValueError, match="strength"):
        color_jitter(torch.zeros(3, 2, 2), 1.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="flip_prob"):
        TopDownTransform(COCO17, flip_prob=2.0)
    with pytest.raises(ValueError, match="scale_factor"):
        TopDownTransform(COCO17, scale_factor=1.0)
    with pytest.raises(ValueError, match="color_jitter"):
        TopDownTransform(COCO17, color_jitter=-0.1)
    with pytest.raises(ValueError, match=r"keypoints must have shape \(17, 3\)"):
        TopDownTransform(COCO17)(torch.zeros(3, 8, 8), np.zeros((3, 3)), (0, 0, 4, 4))


@pytest.mark.parametrize("size, expect_rows, expect_cols", [((40, 20), (8, 24), (0, 32)), ((20, 40), (0, 32), (8, 24))])
def test_whole_image_box_crops_exactly_the_image_letterboxed(size, expect_rows, expect_cols):
    # a 40 x 20 image in a 32 x 32 crop: the crop covers its width exactly and pads 8 rows above and below
    image = torch.ones(3, size[1], size[0])
    transform = TopDownTransform(LSP14, input_size=(32, 32), heatmap_size=(8, 8), normalize=False)
    out = transform(image, np.zeros((14, 3)), image_box(size, transform.padding))
    filled = out["image"][0] > 0  # (32, 32) pixels read back
    rows, cols = np.flatnonzero(filled.any(1).numpy()), np.flatnonzero(filled.any(0).numpy())
    assert (rows[0], rows[-1] + 1) == expect_rows and (cols[0], cols[-1] + 1) == expect_cols
    assert bool(filled[expect_rows[0] : expect_rows[1], expect_cols[0] : expect_cols[1]].all())
    # the image's outer pixel edges land on the crop's edges along the covering axis, its centre on the crop's
    corners = affine_points(np.array([[-0.5, -0.5, 2], [size[0] - 0.5, size[1] - 0.5, 2]]), out["affine"])
    axis = 0 if size[0] > size[1] else 1
    assert corners[:, axis].tolist() == pytest.approx([-0.5, 31.5])
    centre = affine_points(np.array([[(size[0] - 1) / 2, (size[1] - 1) / 2, 2]]), out["affine"])
    assert centre[0, :2].tolist() == pytest.approx([15.5, 15.5])


def test_joints_box_is_the_tight_box_of_labelled_joints():
    kp = np.array([[1.0, 5.0, 2], [4.0, 2.0, 1], [9.0, 9.0, 0]])  # the third is unlabelled
    assert joints_box(kp).tolist() == [1.0, 2.0, 3.0, 3.0]
    assert np.isnan(joints_box(np.zeros((3, 3)))).all()
    with pytest.raises(ValueError, match=r"keypoints must have shape \(K, 3\)"):
        joints_box(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="padding must be positive"):
        image_box((10, 10), 0.0)


def test_shift_factor_moves_the_crop_centre_within_its_bound():
    image = torch.zeros(3, 100, 100)
    box = (30.0, 30.0, 40.0, 40.0)  # centre (50, 50), crop 50 x 50 after padding
    plain = dict(input_size=(32, 32), heatmap_size=(8, 8), train=True, scale_factor=0.0, rotation_prob=0.0, flip_prob=0.0, color_jitter=0.0)
    centres = np.array(
        [
            TopDownTransform(LSP14, shift_factor=0.2, **plain)(image, np.zeros((14, 3)), box, rng=np.random.default_rng(i))["center"]
            for i in range(200)
        ]
    )
    offsets = centres - 50.0
    assert np.abs(offsets).max() <= 0.2 * 50 and np.abs(offsets).max() > 0.15 * 50  # uniform in [-10, 10] px per axis
    unshifted = TopDownTransform(LSP14, **plain)(image, np.zeros((14, 3)), box, rng=np.random.default_rng(0))["center"]
    assert unshifted.tolist() == [50.0, 50.0]
    with pytest.raises(ValueError, match="shift_factor must be in"):
        TopDownTransform(LSP14, shift_factor=1.0)
