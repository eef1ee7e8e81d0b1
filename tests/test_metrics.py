"""Metrics against hand-computed fixtures, brute-force loops and pycocotools' COCOeval.

Shape legend: N poses, K joints, L limbs, A thresholds.
"""

import copy
import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from crfpose import metrics as M
from crfpose.skeletons import COCO17, LSP14, MPII16, Skeleton

# ----------------------------------------------------------------------------- fixtures


def lsp_fixture():
    """Two LSP poses; torso (left shoulder 9 -> right hip 2) is 50 px in both, head (12 -> 13) 10 px.

    Pose 0: errors 10 (j0), 10 (j1), sqrt(128) (j4), 10.5 (j5), 1000 (j6, unlabelled), 0 elsewhere;
    j7 is labelled-occluded (v = 1). Pose 1: right hip unlabelled (so its torso is undefined),
    error 20 at j3, 0 elsewhere.
    """
    xy = np.stack([100.0 + 10 * np.arange(14), np.full(14, 100.0)], -1)  # (K, 2)
    xy[2] = (160.0, 140.0)  # right hip: 50 px from the left shoulder at (190, 100)
    gt = np.repeat(np.concatenate([xy, np.full((14, 1), 2.0)], -1)[None], 2, 0)  # (2, K, 3)
    gt[0, 6, 2], gt[0, 7, 2], gt[1, 2, 2] = 0, 1, 0
    pred = gt[..., :2].copy()
    pred[0, 0] += (10, 0)
    pred[0, 1] += (6, 8)
    pred[0, 4] += (8, 8)
    pred[0, 5] += (0, 10.5)
    pred[0, 6] += (1000, 0)
    pred[1, 3] += (0, 20)
    return pred, gt


def chain_fixture():
    """Two 4-joint poses for PCP/EPE; pose 1 has joint 1 unlabelled.

    gt: (0,0) (10,0) (20,0) (20,0); pred errors 5, 4, 6, 0.
    """
    gt = np.array([[[0, 0, 2], [10, 0, 2], [20, 0, 2], [20, 0, 2]]] * 2, float)
    gt[1, 1, 2] = 0
    pred = np.array([[[0, 5], [10, -4], [26, 0], [20, 0]]] * 2, float)
    return pred, gt


def pck_loop(pred, gt, alpha, norm):
    """Brute-force PCK: per-joint rates and the pooled mean over labelled joints of valid poses."""
    hits, counts = np.zeros(gt.shape[1]), np.zeros(gt.shape[1])
    for n in range(gt.shape[0]):
        if not norm[n] > 0:
            continue
        for k in range(gt.shape[1]):
            if gt[n, k, 2] > 0:
                counts[k] += 1
                hits[k] += math.dist(pred[n, k, :2], gt[n, k, :2]) <= alpha * norm[n]
    return [h / c if c else math.nan for h, c in zip(hits, counts)], hits.sum() / counts.sum()


def random_poses(rng, n, k, labelled=0.7):
    gt = np.concatenate([rng.uniform(0, 200, (n, k, 2)), 2.0 * (rng.random((n, k, 1)) < labelled)], -1)
    pred = gt[..., :2] + rng.normal(0, 8, (n, k, 2))
    return pred, gt


# ----------------------------------------------------------------------------- PCK


def test_pck_torso_hand_computed_excludes_undefined_torso():
    pred, gt = lsp_fixture()
    r = M.pck(pred, gt, 0.2, "torso", skeleton=LSP14)
    expected = np.ones(14)
    expected[[4, 5]] = 0
    expected[6] = np.nan  # only pose 0 counts, where joint 6 is unlabelled
    np.testing.assert_array_equal(r.per_item, expected)
    assert r.mean == pytest.approx(11 / 13)
    np.testing.assert_array_equal(r.counts, [1] * 6 + [0] + [1] * 7)
    assert r.excluded == 1


def test_pck_all_joints_lsp_protocol():
    pred, gt = lsp_fixture()
    r = M.pck(pred, gt, 0.2, "torso", skeleton=LSP14, all_joints=True)
    expected = np.ones(14)
    expected[[3, 4, 5, 6]] = 0.5
    np.testing.assert_array_equal(r.per_item, expected)
    assert r.mean == pytest.approx(24 / 28)
    assert r.excluded == 0 and (r.counts == 2).all()


def test_pck_head_and_explicit_normalisers():
    pred, gt = lsp_fixture()
    head = M.pck(pred, gt, 1.0, "head", skeleton=LSP14)  # threshold 10 px in both poses
    assert head.mean == pytest.approx(23 / 26) and head.excluded == 0
    zero = M.pck(pred, gt, 0.2, np.array([50.0, 0.0]))
    torso = M.pck(pred, gt, 0.2, "torso", skeleton=LSP14)
    np.testing.assert_array_equal(zero.per_item, torso.per_item)
    assert zero.excluded == 1
    wide = M.pck(pred, gt, 0.2, [50.0, 100.0])  # pose 1: the 20 px error is exactly on the threshold
    assert wide.mean == pytest.approx((11 + 13) / 26)


def test_normalizers_bbox_headbox_torso_head():
    _, gt = lsp_fixture()
    np.testing.assert_allclose(M.normalizers(gt, "bbox"), [130, 130])  # tight box of labelled joints
    np.testing.assert_allclose(M.normalizers(gt, "bbox", boxes=[[0, 0, 40, 50], [5, 5, 100, 20]]), [50, 100])
    np.testing.assert_allclose(M.normalizers(gt, "headbox", head_boxes=[[0, 0, 30, 40], [7, 7, 7, 7]]), [30, 0])
    np.testing.assert_allclose(M.normalizers(gt, "torso", skeleton=LSP14), [50, np.nan])
    np.testing.assert_allclose(M.normalizers(gt, "torso", skeleton=LSP14, all_joints=True), [50, 50])
    np.testing.assert_allclose(M.normalizers(gt, "head", skeleton=LSP14), [10, 10])
    pred, _ = lsp_fixture()
    r = M.pck(pred, gt, 0.5, "headbox", head_boxes=[[0, 0, 30, 40], [7, 7, 7, 7]])  # PCKh, zero box excluded
    assert r.excluded == 1 and r.mean == pytest.approx(13 / 13)


@pytest.mark.parametrize("skeleton, shoulder, hip, neck, top", [(MPII16, 13, 2, 8, 9), (COCO17, 5, 12, None, None), (LSP14, 9, 2, 12, 13)])
def test_torso_and_head_joint_pairs(skeleton, shoulder, hip, neck, top):
    k = skeleton.num_joints
    gt = np.concatenate([np.zeros((1, k, 2)), np.full((1, k, 1), 2.0)], -1)
    gt[0, shoulder, :2], gt[0, hip, :2] = (1, 1), (4, 5)  # 3-4-5 triangle; every other joint at 0
    assert M.normalizers(gt, "torso", skeleton=skeleton)[0] == pytest.approx(5)
    if neck is None:
        with pytest.raises(ValueError, match="skeleton: normalizer 'head' needs joints"):
            M.normalizers(gt, "head", skeleton=skeleton)
    else:
        gt[0, neck, :2], gt[0, top, :2] = (2, 2), (8, 10)
        assert M.normalizers(gt, "head", skeleton=skeleton)[0] == pytest.approx(10)


@pytest.mark.parametrize("name", ["bbox", "torso", "head", "explicit"])
def test_pck_matches_brute_force(name):
    rng = np.random.default_rng(1)
    pred, gt = random_poses(rng, 12, 14)
    pred[0, 0] = np.nan  # a missing prediction is a miss
    if name == "explicit":
        norm = rng.uniform(0, 60, 12)
        norm[3] = 0
        arg = norm
    else:
        norm = M.normalizers(gt, name, skeleton=LSP14)
        arg = name
    for alpha in (0.1, 0.3):
        per_joint, mean = pck_loop(pred, gt, alpha, np.nan_to_num(norm))
        r = M.pck(pred, gt, alpha, arg, skeleton=LSP14)
        np.testing.assert_allclose(r.per_item, per_joint)
        assert r.mean == pytest.approx(mean)


def test_lsp_benchmark_protocol_on_real_labels(lsp_root):
    import scipy.io

    joints = scipy.io.loadmat(lsp_root / "joints.mat")["joints"]  # (3, K, 2000): x, y, 1 = occluded
    gt = joints.transpose(2, 1, 0)[1000:].copy()  # the 1000 test images, (N, K, 3)
    gt[..., :2] -= 1  # 1-based MATLAB pixels
    gt[..., 2] = np.where(gt[..., 2] == 1, 1, 2)  # every joint is labelled: occluded 1, visible 2
    pred = gt[..., :2] + np.random.default_rng(7).normal(0, 6, (1000, 14, 2))
    torso = np.hypot(*(gt[:, 9, :2] - gt[:, 2, :2]).T)  # left shoulder (10, 1-based) to right hip (3)
    r = M.pck(pred, gt, 0.2, "torso", skeleton=LSP14, all_joints=True)
    per_joint, mean = pck_loop(pred, gt, 0.2, torso)
    np.testing.assert_allclose(r.per_item, per_joint)
    assert r.mean == pytest.approx(mean) and r.excluded == 0 and (r.counts == 1000).all()
    assert M.pck(gt, gt, 0.2, "torso", skeleton=LSP14, all_joints=True).mean == 1.0


def test_pck_empty_and_nothing_labelled():
    _, gt = lsp_fixture()
    r = M.pck(np.zeros((0, 14, 2)), np.zeros((0, 14, 3)), 0.2, "bbox")
    assert np.isnan(r.per_item).all() and math.isnan(r.mean) and (r.counts == 0).all() and r.excluded == 0
    unlabelled = gt.copy()
    unlabelled[..., 2] = 0
    r = M.pck(gt[..., :2], unlabelled, 0.2, "torso", skeleton=LSP14)
    assert math.isnan(r.mean) and r.counts.sum() == 0 and r.excluded == 0
    curve = M.pck_curve(np.zeros((0, 14, 2)), np.zeros((0, 14, 3)), [0, 0.5], "bbox")
    assert math.isnan(curve.auc) and curve.per_joint.shape == (2, 14)


def test_pck_curve_and_auc_hand_computed():
    pred, gt = lsp_fixture()
    c = M.pck_curve(pred, gt, [0, 0.1, 0.2, 0.3], "torso", skeleton=LSP14)
    np.testing.assert_allclose(c.mean, np.array([9, 9, 11, 13]) / 13)
    assert c.auc == pytest.approx(3.1 / 3.9)  # trapezoid 0.1 * (9 + 2 * 9 + 2 * 11 + 13) / 2 / 13 / 0.3
    assert c.excluded == 1 and c.per_joint.shape == (4, 14)
    for i, alpha in enumerate(c.alphas):
        np.testing.assert_array_equal(c.per_joint[i], M.pck(pred, gt, alpha, "torso", skeleton=LSP14).per_item)


def test_auc_definition():
    assert M.auc([0, 0.5, 1], [1, 1, 1]) == pytest.approx(1)
    assert M.auc([0, 1, 2], [0, 1, 2]) == pytest.approx(1)  # y = x on [0, 2]: area 2 over width 2
    assert M.auc([0, 0.25, 1], [0, 0.25, 1]) == pytest.approx(0.5)
    np.testing.assert_allclose(M.auc([0, 1], [[0, 1], [1, 1]]), [0.5, 1])


# ----------------------------------------------------------------------------- PCP, EPE


def test_strict_pcp_hand_computed():
    pred, gt = chain_fixture()
    limbs = {"a": (0, 1), "b": (1, 2), "zero": (2, 3), "mid": ((0, 1), 2)}
    r = M.pcp(pred, gt, limbs, 0.5)
    # a: length 10, errors 5 and 4 -> correct; b: errors 4 and 6 -> wrong (strict);
    # zero: length 0 -> excluded; mid: (5, 0) -> (20, 0) length 15, errors 0.5 and 6 -> correct.
    np.testing.assert_array_equal(r.per_item, [1, 0, np.nan, 1])
    np.testing.assert_array_equal(r.counts, [1, 1, 0, 1])  # pose 1 lacks joint 1
    assert r.excluded == 2 and r.mean == pytest.approx(2 / 3)
    assert M.pcp(pred, gt, list(limbs.values()), 0.6).per_item[1] == 1  # 6 <= 0.6 * 10


def test_pcp_default_sticks():
    assert len(M.pcp_limbs(LSP14)) == 10 and len(M.pcp_limbs(MPII16)) == 10 and len(M.pcp_limbs(COCO17)) == 9
    assert M.pcp_limbs(LSP14)["torso"] == ((3, 2), (9, 8)) and M.pcp_limbs(MPII16)["head"] == (8, 9)
    pred, gt = lsp_fixture()
    r = M.pcp(pred, gt, skeleton=LSP14, all_joints=True)
    assert r.per_item.shape == (10,) and (r.counts == 2).all()
    perfect = M.pcp(gt[..., :2], gt, skeleton=LSP14)
    assert perfect.mean == 1


def test_epe_hand_computed():
    pred, gt = chain_fixture()
    r = M.epe(pred, gt)
    np.testing.assert_allclose(r.per_item, [5, 4, 6, 0])
    np.testing.assert_array_equal(r.counts, [2, 1, 2, 2])
    assert r.mean == pytest.approx((15 + 11) / 7)
    pred[1, 1] = np.nan  # unlabelled: ignored
    assert M.epe(pred, gt).mean == pytest.approx((15 + 11) / 7)
    assert M.epe(pred, gt, all_joints=False).counts.sum() == 7
    assert math.isnan(M.epe(np.zeros((0, 4, 2)), np.zeros((0, 4, 3))).mean)


# ----------------------------------------------------------------------------- OKS


def test_oks_hand_computed():
    gt = np.array([[[0, 0, 2], [10, 10, 1], [50, 50, 0]]], float)
    pred = np.array([[[3, 4], [10, 10], [0, 0]]], float)
    area, s = 100.0, np.array([0.1, 0.2, 0.3])
    e0 = 25 / (2 * (area + np.spacing(1)) * (2 * 0.1) ** 2)  # d^2 / (2 s^2 k^2), k = 2 sigma
    assert M.oks(pred, gt, [area], s)[0] == pytest.approx((math.exp(-e0) + 1) / 2)
    gt[0, :, 2] = 0
    assert math.isnan(M.oks(pred, gt, [area], s)[0])


def test_oks_matches_pycocotools_compute_oks():
    rng = np.random.default_rng(2)
    pred, gt = random_poses(rng, 6, 17)
    areas = rng.uniform(500, 5000, 6)
    ours = M.oks(pred, gt, areas, COCO17)
    ev = COCOeval(iouType="keypoints")
    for n in range(6):
        ev._gts[1, 1] = [{"keypoints": gt[n].ravel().tolist(), "bbox": [0, 0, 1, 1], "area": areas[n]}]
        det = np.concatenate([pred[n], np.ones((17, 1))], -1)
        ev._dts[1, 1] = [{"keypoints": det.ravel().tolist(), "score": 1.0}]
        assert ours[n] == pytest.approx(ev.computeOks(1, 1)[0, 0], rel=1e-12)


# ----------------------------------------------------------------------------- purity, torch


def test_inputs_not_mutated_and_torch_equals_numpy():
    pred, gt = lsp_fixture()
    pred_t, gt_t = torch.tensor(pred), torch.tensor(gt)
    before = [pred.copy(), gt.copy(), pred_t.clone(), gt_t.clone()]
    norm = np.array([50.0, 0.0])
    for p, g in ((pred, gt), (pred_t, gt_t)):
        results = [
            M.pck(p, g, 0.2, "torso", skeleton=LSP14).per_item,
            M.pck(p, g, 0.2, norm).per_item,
            M.pck_curve(p, g, [0, 0.2], "bbox").mean,
            M.pcp(p, g, skeleton=LSP14).per_item,
            M.epe(p, g).per_item,
            M.oks(p, g, [900.0, 900.0], np.full(14, 0.05)),
        ]
        if p is pred:
            reference = results
        else:
            for a, b in zip(reference, results):
                np.testing.assert_array_equal(a, b)
    for a, b in zip(before, [pred, gt, pred_t, gt_t]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(norm, [50, 0])


# ----------------------------------------------------------------------------- COCO AP


def synthetic_coco(k=17):
    """A tiny COCO keypoint ground truth: 3 images, 4 people (large and medium), one crowd, one empty."""
    rng = np.random.default_rng(3)
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in (1, 2, 3)]
    anns = []
    for i, (img, x, y, w, h) in enumerate([(1, 10, 10, 200, 300), (1, 300, 50, 150, 250), (2, 40, 40, 60, 80), (3, 100, 100, 250, 200)]):
        kp = np.stack([rng.uniform(x, x + w, k), rng.uniform(y, y + h, k), np.full(k, 2.0)], -1)
        kp[rng.random(k) < 0.2] = 0  # unlabelled joints are (0, 0, 0) in COCO
        anns.append(
            {
                "id": i + 1,
                "image_id": img,
                "category_id": 1,
                "bbox": [x, y, w, h],
                "area": 0.6 * w * h,
                "iscrowd": 0,
                "num_keypoints": int((kp[:, 2] > 0).sum()),
                "keypoints": kp.ravel().tolist(),
            }
        )
    anns.append(
        {
            "id": 9,
            "image_id": 3,
            "category_id": 1,
            "bbox": [0, 0, 50, 50],
            "area": 900.0,
            "iscrowd": 0,
            "num_keypoints": 0,
            "keypoints": [0] * (3 * k),
        }
    )
    cat = {"id": 1, "name": "person", "supercategory": "person", "keypoints": [f"j{j}" for j in range(k)], "skeleton": []}
    return {"images": images, "annotations": anns, "categories": [cat]}


def gt_as_predictions(dataset, rng=None, noise=0.0):
    """Records for every keypoint-labelled, non-crowd person, optionally with Gaussian noise."""
    records = []
    for a in dataset["annotations"]:
        if a["num_keypoints"] == 0 or a["iscrowd"]:
            continue
        kp = np.array(a["keypoints"], float).reshape(-1, 3)
        if noise:
            kp[:, :2] += rng.normal(0, noise, (len(kp), 2))
        records.append(
            {
                "image_id": a["image_id"],
                "category_id": 1,
                "keypoints": kp.ravel().tolist(),
                "score": float(rng.random()) if rng is not None else 1.0,
            }
        )
    return records


def direct_cocoeval(gt_path, res_path, sigmas=None):
    coco_gt = COCO(str(gt_path))
    ev = COCOeval(coco_gt, coco_gt.loadRes(str(res_path)), iouType="keypoints")
    if sigmas is not None:
        ev.params.kpt_oks_sigmas = np.asarray(sigmas)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_coco_ap_ground_truth_scores_one_synthetic(tmp_path):
    gt_path = write_json(tmp_path / "gt.json", synthetic_coco())
    records = gt_as_predictions(synthetic_coco())
    kp = np.array([r["keypoints"] for r in records]).reshape(len(records), 17, 3)
    res = M.export_coco_results(tmp_path / "res.json", [r["image_id"] for r in records], kp, np.ones(len(records)))
    stats = M.coco_ap(gt_path, res)
    assert list(stats) == list(M.COCO_STATS)
    # both medium and large people are present; COCOeval's precision tp / (tp + fp + eps) rounds
    assert stats == pytest.approx(dict.fromkeys(M.COCO_STATS, 1.0), abs=1e-12)


def test_coco_ap_ground_truth_scores_one_coco_mini(coco_mini_root, tmp_path):
    gt_path = coco_mini_root / "annotations" / "person_keypoints_train2017.json"
    records = gt_as_predictions(json.loads(gt_path.read_text()))
    stats = M.coco_ap(gt_path, records)
    assert stats["AP"] == pytest.approx(1.0, abs=1e-12) and stats["AR"] == pytest.approx(1.0, abs=1e-12)
    assert all(v == pytest.approx(1.0, abs=1e-12) or v == -1.0 for v in stats.values()), stats


@pytest.mark.parametrize("noise", [2.0, 8.0])
def test_coco_ap_perturbed_equals_direct_cocoeval(tmp_path, noise):
    dataset = synthetic_coco()
    gt_path = write_json(tmp_path / "gt.json", dataset)
    rng = np.random.default_rng(4)
    records = gt_as_predictions(dataset, rng, noise)
    kp = np.array([r["keypoints"] for r in records]).reshape(len(records), 17, 3)
    res = M.export_coco_results(tmp_path / "res.json", [r["image_id"] for r in records], kp, [r["score"] for r in records])
    stats = M.coco_ap(COCO(str(gt_path)), res)
    assert stats["AP"] < 1.0
    np.testing.assert_array_equal(list(stats.values()), direct_cocoeval(gt_path, res))


def test_coco_ap_perturbed_coco_mini_equals_direct_cocoeval(coco_mini_root, tmp_path):
    gt_path = coco_mini_root / "annotations" / "person_keypoints_train2017.json"
    records = gt_as_predictions(json.loads(gt_path.read_text()), np.random.default_rng(5), 3.0)
    res = write_json(tmp_path / "res.json", records)
    stats = M.coco_ap(gt_path, res)
    assert 0 < stats["AP"] < 1
    np.testing.assert_array_equal(list(stats.values()), direct_cocoeval(gt_path, res))


def test_coco_ap_custom_sigmas_for_lsp(tmp_path):
    dataset = synthetic_coco(k=14)
    gt_path = write_json(tmp_path / "gt.json", dataset)
    res = write_json(tmp_path / "res.json", gt_as_predictions(dataset, np.random.default_rng(6), 4.0))
    sigmas = np.linspace(0.03, 0.1, 14)
    stats = M.coco_ap(gt_path, res, sigmas)
    np.testing.assert_array_equal(list(stats.values()), direct_cocoeval(gt_path, res, sigmas))
    assert M.coco_ap(gt_path, res, sigmas * 3)["AP"] > stats["AP"]  # looser sigmas, higher AP
    with pytest.raises(ValueError, match=r"sigmas: expected \(14,\) sigmas for a 14-keypoint dataset"):
        M.coco_ap(gt_path, res)
    with pytest.raises(ValueError, match="sigmas: skeleton 'lsp14' has no OKS sigmas"):
        M.coco_ap(gt_path, res, LSP14)


def test_coco_ap_image_subset_and_purity(tmp_path):
    dataset = synthetic_coco()
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(dataset)
    coco_gt.createIndex()
    records = [r for r in gt_as_predictions(dataset) if r["image_id"] == 1]
    before = copy.deepcopy(records)
    assert M.coco_ap(coco_gt, records)["AR"] < 1  # images 2 and 3 have unmatched people
    assert M.coco_ap(coco_gt, records, image_ids=[1])["AP"] == pytest.approx(1.0, abs=1e-12)
    assert records == before and coco_gt.dataset == dataset  # neither loadRes nor COCOeval touched them


def test_export_coco_results_round_trip_atomic(tmp_path):
    kp = np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2)
    path = M.export_coco_results(tmp_path / "res.json", torch.tensor([7, 9]), kp, [0.5, 0.25], category_id=3)
    records = json.loads(path.read_text())
    assert records[1] == {"image_id": 9, "category_id": 3, "keypoints": [6, 7, 1, 8, 9, 1, 10, 11, 1], "score": 0.25}
    assert [p.name for p in tmp_path.iterdir()] == ["res.json"]  # no temp file left behind


# ----------------------------------------------------------------------------- tables


def test_format_joint_table():
    pred, gt = chain_fixture()
    table = M.format_joint_table(
        {"EPE": M.epe(pred, gt).per_item, "PCK": [1, np.nan, 0.5, 0.25]},
        ["left_a", "right_a", "b", "c"],
        groups={"a": [0, 1], "b": [2], "c": [3]},
        means={"EPE": 26 / 7},
        digits=2,
    )
    lines = table.splitlines()
    assert lines[0].split() == ["joint", "EPE", "PCK"]
    assert lines[1].split() == ["a", "4.50", "1.00"]  # (5 + 4) / 2; the NaN is left out of the average
    assert lines[2].split() == ["b", "6.00", "0.50"]
    assert lines[4].split() == ["mean", "3.71", "-"]
    assert M.symmetric_groups(LSP14)["knee"] == [1, 4] and M.symmetric_groups(LSP14)["neck"] == [12]
    assert len(M.format_joint_table({"x": np.zeros(14)}, LSP14).splitlines()) == 15


# ----------------------------------------------------------------------------- errors


def test_value_errors_name_the_argument(tmp_path):
    pred, gt = lsp_fixture()
    with pytest.raises(ValueError, match=r"gt: expected shape \(N, K, 3\)"):
        M.pck(pred, gt[..., :2])
    with pytest.raises(ValueError, match=r"pred: expected shape \(N, K, 2\) or \(N, K, 3\)"):
        M.epe(pred[:, :3], gt)
    bad = gt.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="gt: expected finite"):
        M.epe(pred, bad)
    with pytest.raises(ValueError, match="skeleton: expected a Skeleton"):
        M.pck(pred, gt, 0.2, "torso")
    with pytest.raises(ValueError, match="skeleton: expected 14 joints as in gt"):
        M.pck(pred, gt, 0.2, "torso", skeleton=COCO17)
    no_torso = Skeleton("chain", [f"j{k}" for k in range(14)], [-1] + list(range(13)))
    with pytest.raises(ValueError, match="has no joint 'left_shoulder'"):
        M.pck(pred, gt, 0.2, "torso", skeleton=no_torso)
    with pytest.raises(ValueError, match="normalizer: expected one of"):
        M.pck(pred, gt, 0.2, "torsoo")
    with pytest.raises(ValueError, match="normalizer: expected a name in .* finite non-negative"):
        M.pck(pred, gt, 0.2, [50.0, -1.0])
    with pytest.raises(ValueError, match=r"boxes: expected finite shape \(2, 4\)"):
        M.pck(pred, gt, 0.2, "bbox", boxes=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="head_boxes: expected .* got None"):
        M.pck(pred, gt, 0.5, "headbox")
    with pytest.raises(ValueError, match=r"head_boxes: expected finite shape \(2, 4\)"):
        M.pck(pred, gt, 0.5, "headbox", head_boxes=np.zeros(4))
    with pytest.raises(ValueError, match="alpha: expected a finite number >= 0"):
        M.pck(pred, gt, -0.1, "bbox")
    with pytest.raises(ValueError, match="alpha: expected a finite number >= 0"):
        M.pcp(pred, gt, skeleton=LSP14, alpha=float("nan"))
    with pytest.raises(ValueError, match="alphas: expected a 1-D strictly increasing finite array"):
        M.pck_curve(pred, gt, [0.2, 0.1], "bbox")
    with pytest.raises(ValueError, match="alphas: expected a 1-D strictly increasing finite array"):
        M.auc([0.0], [1.0])
    with pytest.raises(ValueError, match=r"values: expected shape \(2, ...\)"):
        M.auc([0, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="limbs: expected pairs"):
        M.pcp(pred, gt, [(0, 1, 2)])
    with pytest.raises(ValueError, match=r"limbs: joint indices must lie in \[0, 14\)"):
        M.pcp(pred, gt, [(0, 14)])
    with pytest.raises(ValueError, match="skeleton: expected a Skeleton"):
        M.pcp(pred, gt)
    nan_pred = pred.copy()
    nan_pred[1, 0] = np.nan
    with pytest.raises(ValueError, match="pred: expected finite"):
        M.epe(nan_pred, gt)
    with pytest.raises(ValueError, match=r"areas: expected \(2,\) finite non-negative"):
        M.oks(pred, gt, [1.0, -1.0], np.full(14, 0.05))
    with pytest.raises(ValueError, match=r"sigmas: expected \(14,\) positive values"):
        M.oks(pred, gt, [1.0, 1.0], np.full(13, 0.05))
    with pytest.raises(ValueError, match=r"columns\['x'\]: expected \(14,\) per-joint values"):
        M.format_joint_table({"x": np.zeros(3)}, LSP14)
    with pytest.raises(ValueError, match=r"groups\['g'\]: expected joint indices in \[0, 14\)"):
        M.format_joint_table({"x": np.zeros(14)}, LSP14, groups={"g": [20]})
    with pytest.raises(TypeError, match="pred: expected a numeric array"):
        M.epe("not poses", gt)


def test_coco_value_errors(tmp_path):
    dataset = synthetic_coco()
    gt_path = write_json(tmp_path / "gt.json", dataset)
    records = gt_as_predictions(dataset)
    kp = np.zeros((2, 17, 2))
    with pytest.raises(ValueError, match="keypoints: expected finite shape"):
        M.export_coco_results(tmp_path / "r.json", [1, 2], kp[..., :1], [1, 1])
    with pytest.raises(ValueError, match=r"image_ids: expected \(2,\) integer image ids"):
        M.export_coco_results(tmp_path / "r.json", [1.5, 2], kp, [1, 1])
    with pytest.raises(ValueError, match=r"scores: expected \(2,\) finite pose scores"):
        M.export_coco_results(tmp_path / "r.json", [1, 2], kp, [1])
    with pytest.raises(ValueError, match="gt: expected a COCO annotation JSON file, got missing path"):
        M.coco_ap(tmp_path / "missing.json", records)
    with pytest.raises(TypeError, match="gt: expected a path or a pycocotools COCO"):
        M.coco_ap(dataset, records)
    with pytest.raises(ValueError, match="predictions: expected a non-empty list .* got an empty list"):
        M.coco_ap(gt_path, [])
    with pytest.raises(ValueError, match="predictions: expected a non-empty list .* got dict"):
        M.coco_ap(gt_path, write_json(tmp_path / "dict.json", {"image_id": 1}))
    with pytest.raises(ValueError, match="predictions: expected records with image_id, keypoints, score"):
        M.coco_ap(gt_path, [{"image_id": 1}])
    with pytest.raises(ValueError, match="predictions: expected 51 keypoint values"):
        M.coco_ap(gt_path, [dict(records[0], keypoints=[0] * 42)])
    with pytest.raises(ValueError, match=r"predictions: image ids not in gt, got \[99\]"):
        M.coco_ap(gt_path, [dict(records[0], image_id=99)])
    empty = write_json(tmp_path / "empty.json", {"images": [], "annotations": [], "categories": []})
    with pytest.raises(ValueError, match="gt: expected keypoint annotations"):
        M.coco_ap(empty, records)


def test_reliability_and_ece_hand_computed():
    # bins of width 0.1: 0.05 -> bin 0 (0 of 1 correct); 0.15, 0.15 -> bin 1 (1 of 2); four at 0.95 -> bin 9 (3 of 4)
    scores = np.array([0.05, 0.15, 0.15, 0.95, 0.95, 0.95, 0.95])
    correct = np.array([0, 1, 0, 1, 1, 1, 0], bool)
    r = M.reliability(scores, correct)
    assert r.counts.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 4]
    assert r.accuracy[[0, 1, 9]].tolist() == [0.0, 0.5, 0.75] and np.isnan(r.accuracy[2:9]).all()
    assert r.confidence[[0, 1, 9]] == pytest.approx([0.05, 0.15, 0.95])
    assert r.ece == pytest.approx((1 * 0.05 + 2 * 0.35 + 4 * 0.2) / 7)  # = 0.2214...
    # clipping (a heatmap maximum of 1.3 claims certainty), a score of exactly 1 in the last bin, and a mask
    r = M.reliability([[1.3, 1.0], [-0.2, 0.5]], [[True, True], [False, True]], counted=[[True, True], [True, False]], bins=2)
    assert r.counts.tolist() == [1, 2] and r.confidence.tolist() == [0.0, 1.0] and r.ece == 0.0
    with pytest.raises(ValueError, match="expected one shape"):
        M.reliability([0.5, 0.5], [True])
    with pytest.raises(ValueError, match="bins: expected an int >= 1"):
        M.reliability([0.5], [True], bins=0)
