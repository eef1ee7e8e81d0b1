"""Synthetic figures: determinism, ground truth consistency, occlusion labels, any skeleton."""

import numpy as np
import pytest
import torch

from crfpose.codec import encode, input_to_heatmap
from crfpose.data import SyntheticDataset, build_dataset
from crfpose.skeletons import COCO17, LSP14, MPII16, Skeleton


def test_same_seed_same_item_in_any_order():
    a = SyntheticDataset(LSP14, length=6, seed=3)
    b = SyntheticDataset(LSP14, length=6, seed=3)
    later = [b[i] for i in (5, 2, 4)]
    for i, item in zip((5, 2, 4), later):
        ref = a[i]
        assert torch.equal(ref["image"], item["image"]) and torch.equal(ref["keypoints"], item["keypoints"])
        assert np.array_equal(ref["meta"]["angles"], item["meta"]["angles"])
    other = SyntheticDataset(LSP14, length=6, seed=4)[5]
    assert not torch.equal(other["image"], later[0]["image"])
    assert torch.equal(a[-1]["image"], a[5]["image"])


@pytest.mark.parametrize("skeleton", [LSP14, COCO17, MPII16])
def test_ground_truth_is_consistent(skeleton):
    ds = build_dataset("synthetic", skeleton=skeleton, length=8, seed=1, normalize=False)
    for i in range(8):
        item = ds[i]
        kp = item["keypoints"].double()
        assert item["image"].shape == (3, 128, 128) and 0 <= item["image"].min() and item["image"].max() <= 1
        assert ((kp[:, :2] >= 0) & (kp[:, :2] <= 127)).all()
        target, weight = encode(input_to_heatmap(item["meta"]["keypoints"], 4.0), (32, 32), 1.5)
        assert torch.equal(item["target"], target) and torch.equal(item["target_weight"], weight)
        assert np.allclose(item["meta"]["keypoints"], kp.numpy(), atol=1e-4)
        edges = np.array(skeleton.edges)
        lengths = np.linalg.norm(kp.numpy()[edges[:, 1], :2] - kp.numpy()[edges[:, 0], :2], axis=1)
        assert np.allclose(item["meta"]["lengths"], lengths)
        assert item["meta"]["angles"].shape == (skeleton.num_edges,)


def test_occluders_and_facing_set_visibility():
    clean = SyntheticDataset(COCO17, length=20, occluder_prob=0.0, seed=2)
    face = [COCO17.index(n) for n in ("nose", "left_eye", "right_eye")]
    for i in range(20):
        item = clean[i]
        v = item["keypoints"][:, 2]
        expected = torch.full((17,), 2.0)
        if item["meta"]["facing"] < 0:
            expected[face] = 1.0
        assert torch.equal(v, expected)
    occluded = SyntheticDataset(COCO17, length=20, occluder_prob=1.0, seed=2)
    fractions = [(occluded[i]["keypoints"][:, 2] == 1).float().mean() for i in range(20)]
    assert sum(f > 0 for f in fractions) >= 10
    assert {clean[i]["meta"]["facing"] for i in range(20)} == {-1, 1}


def test_occluder_pixels_cover_occluded_joints():
    # An occluder is a flat colour drawn on top: around a hidden joint the image is uniform, except for
    # joints right on an occluder's edge (then only part of the 3 x 3 patch is covered).
    ds = SyntheticDataset(LSP14, length=30, occluder_prob=1.0, distractor_prob=0.0, seed=5, normalize=False)
    checked, uniform = 0, 0
    for i in range(30):
        item = ds[i]
        kp, image = item["keypoints"], item["image"]
        for x, y, v in kp.tolist():
            xi, yi = int(round(x)), int(round(y))
            if v == 1 and 2 <= xi <= 125 and 2 <= yi <= 125:
                patch = image[:, yi - 1 : yi + 2, xi - 1 : xi + 2].reshape(3, -1)
                checked += 1
                uniform += int((patch - patch[:, 4:5]).abs().max() < 0.02)
    assert checked > 10 and uniform >= 0.8 * checked


def test_custom_skeleton_with_unknown_joint_names():
    tail = Skeleton("tail", joints=("a", "b", "c", "d"), parents=(-1, 0, 1, 1))
    item = SyntheticDataset(tail, length=2, input_size=(64, 48), heatmap_size=(16, 12))[1]
    assert item["image"].shape == (3, 48, 64) and item["target"].shape == (4, 12, 16)
    assert item["target_weight"].sum() == 4


def test_synthetic_errors():
    with pytest.raises(ValueError, match="length must be a positive int"):
        SyntheticDataset(length=0)
    with pytest.raises(ValueError, match="occluder_prob must be a probability"):
        SyntheticDataset(occluder_prob=1.5)
    with pytest.raises(ValueError, match="input_size"):
        SyntheticDataset(input_size=(8, 8))
    with pytest.raises(ValueError, match="heatmap_size"):
        SyntheticDataset(heatmap_size=(0, 8))
    with pytest.raises(IndexError, match="out of range"):
        SyntheticDataset(length=3)[3]
