"""Keypoint R-CNN with the tree CRF on its keypoint maps: the loss equivalence with torchvision's keypoint
loss, torchvision's own training losses and decoding reproduced, the box grid, the flip test, persons in and
out of images, evaluation of a detector's persons, and bad input."""

import json

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import keypointrcnn_loss, keypoints_to_heatmap

from crfpose.checkpoint import load_initial_weights, load_weights, save_checkpoint
from crfpose.codec import BoxGridCodec, flip_heatmaps
from crfpose.config import load_config, to_dict
from crfpose.crf import TreeCRF
from crfpose.crf.pairwise import FlatPairwise
from crfpose.evaluate import compute_metrics, predict_dataset
from crfpose.models import KeypointRCNNModel, PoseEstimator, build_model
from crfpose.models.estimator import Persons
from crfpose.models.keypoint_rcnn import keypoint_nll
from crfpose.predict import Predictor
from crfpose.skeletons import COCO17, LSP14

# a small network for the CPU: ResNet-18-FPN of 16 channels, one keypoint-head layer, 64-pixel images
TINY = {
    "backbone": "resnet18",
    "fpn_channels": 16,
    "head_channels": 16,
    "head_layers": 1,
    "box_representation": 32,
    "min_size": 64,
    "max_size": 96,
    "box_detections_per_img": 4,
    "box_batch_size_per_image": 16,
    "rpn_pre_nms_top_n_test": 50,
    "rpn_post_nms_top_n_test": 20,
    "rpn_pre_nms_top_n_train": 50,
    "rpn_post_nms_top_n_train": 20,
}


def tiny(crf=None, skeleton=COCO17, **options) -> KeypointRCNNModel:
    torch.manual_seed(0)
    return build_model("keypoint_rcnn", skeleton, crf=crf, **(TINY | options))


def scene(seed: int = 0, size=(64, 96), persons: int = 2):
    """A random image with ``persons`` annotated persons: ``(image (3, h, w), boxes (M, 4) xywh, keypoints (M, K, 3))``."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    corner = torch.rand(persons, 2, generator=g) * torch.tensor([w / 2, h / 2])
    extent = torch.rand(persons, 2, generator=g) * torch.tensor([w / 3, h / 3]) + 12
    inside = corner[:, None] + torch.rand(persons, 17, 2, generator=g) * extent[:, None]
    keypoints = torch.cat([inside, torch.randint(0, 3, (persons, 17, 1), generator=g).float()], dim=-1)
    keypoints[keypoints[..., 2] == 0] = 0
    return torch.rand(3, h, w, generator=g), torch.cat([corner, extent], dim=1), keypoints


def test_crf_loss_with_zero_pairwise_is_torchvisions_keypoint_loss():
    """Zero pairwise (the flat table over the whole grid), one-hot targets, the same regions and labels: the
    tree CRF's NLL summed over the regions over the count of labelled (region, joint) pairs equals
    torchvision's keypointrcnn_loss (its cross-entropy averaged over those pairs), and so do the gradients."""
    g = torch.Generator().manual_seed(0)
    n = 6
    logits = (3 * torch.randn(n, 17, 56, 56, generator=g)).requires_grad_()
    corner = torch.rand(n, 2, generator=g) * 50
    boxes = torch.cat([corner, corner + torch.rand(n, 2, generator=g) * 80 + 10], dim=1)
    inside = corner[:, None] - 5 + torch.rand(n, 17, 2, generator=g) * (boxes[:, None, 2:] - boxes[:, None, :2] + 10)  # some off the box
    truth = torch.cat([inside, torch.randint(0, 3, (n, 17, 1), generator=g).float()], dim=-1)
    theirs = keypointrcnn_loss(logits, [boxes[:4], boxes[4:]], [truth[:4], truth[4:]], [torch.arange(4), torch.arange(2)])
    grid = BoxGridCodec(56).to_grid(truth, boxes)
    flat = FlatPairwise(COCO17.num_edges, 55)()
    ours = keypoint_nll(logits, grid, 0.0, lambda u: TreeCRF(u, flat, COCO17))
    assert abs(ours.item() - theirs.item()) < 1e-6
    (ours_grad,), (their_grad,) = torch.autograd.grad(ours, logits), torch.autograd.grad(theirs, logits)
    assert torch.allclose(ours_grad, their_grad, atol=1e-7)
    assert keypoint_nll(logits, grid).item() == pytest.approx(theirs.item(), rel=1e-6)  # joints independent: float32 sums


def test_the_box_grid_is_torchvisions_discretisation():
    """The nearest cell of BoxGridCodec.to_grid is torchvision's keypoint target cell, and to_image inverts it."""
    g = torch.Generator().manual_seed(1)
    corner = torch.rand(20, 2, generator=g) * 100
    boxes = torch.cat([corner, corner + torch.rand(20, 2, generator=g) * 150 + 5], dim=1)
    points = torch.cat([corner[:, None] + torch.rand(20, 17, 2, generator=g) * 200 - 25, torch.full((20, 17, 1), 2.0)], dim=-1)
    codec = BoxGridCodec(56)
    grid = codec.to_grid(points, boxes)
    target, valid = keypoints_to_heatmap(points, boxes, 56)
    cells = torch.floor(grid[..., :2] + 0.5).long()
    on = (cells >= 0).all(-1) & (cells < 56).all(-1)
    assert torch.equal(on, valid.bool())
    assert torch.equal((cells[..., 1] * 56 + cells[..., 0])[on], target[on])
    assert torch.allclose(codec.to_image(grid, boxes), points, atol=1e-4)


def test_unary_mode_is_torchvisions_own_training_loss():
    """Mode ``unary`` (loss "mse"): the proposal, box and keypoint losses torchvision's model computes on the
    same batch with the same random draws, summed."""
    model = tiny().train()
    image, boxes, keypoints = scene(0)
    other = scene(1, (80, 64), 1)
    batch = {"image": [image, other[0]], "boxes": [boxes, other[1]], "keypoints": [keypoints, other[2]]}
    torch.manual_seed(5)
    ours = model.training_loss(batch, "mse", "backbone", sigma=1.0, mse_weight=0.0)
    torch.manual_seed(5)
    targets = [
        {"boxes": torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1), "labels": torch.ones(len(b), dtype=torch.int64), "keypoints": k}
        for b, k in zip(batch["boxes"], batch["keypoints"])
    ]
    theirs = model.backbone(batch["image"], targets)
    assert set(theirs) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_keypoint"}
    assert abs(ours.loss.item() - sum(theirs.values()).item()) < 1e-5 and bool(ours.finite) and ours.peak is None


def test_gradients_reach_the_keypoint_head_through_the_crf():
    model = tiny({"pairwise": "gaussian", "radius": 8}).train()
    image, boxes, keypoints = scene(2)
    batch = {"image": [image], "boxes": [boxes], "keypoints": [keypoints]}
    step = model.training_loss(batch, "crf", "all", sigma=1.0, mse_weight=0.0)
    step.loss.backward()
    roi = model.backbone.roi_heads
    for name, p in [
        ("keypoint head", roi.keypoint_head[0].weight),
        ("keypoint logits", roi.keypoint_predictor.kps_score_lowres.weight),
        ("pairwise", model.head.pairwise.mean),
        ("box head", roi.box_head.fc6.weight),
    ]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    frozen = tiny({"pairwise": "gaussian", "radius": 8})
    frozen.backbone.eval()  # the CRF stage of 'separate': the network frozen, only the CRF's loss
    assert torch.isfinite(frozen.training_loss(batch, "crf", "crf", sigma=1.0, mse_weight=0.0).loss)


def test_the_flip_test_of_a_mirrored_image_is_the_mirror():
    """Without a resize or padding (64 x 96 at min_size 64), the flip test of a mirrored image and box is the
    mirror (left/right swapped) of the flip test of the original; a given box is the person's box."""
    model = tiny().eval()
    image = scene(3)[0]
    box = np.array([[20.0, 10.0, 30.0, 40.0, 1.0]])
    mirrored = box.copy()
    mirrored[0, 0] = 96 - 1 - (box[0, 0] + box[0, 2])
    a, b = (
        model.predict_images([im], [bx], ["unary"], flip=True, padding=1.25, normalized=True, maps=True)[0]
        for im, bx in ((image, box), (image.flip(-1), mirrored))
    )
    assert torch.allclose(flip_heatmaps(b.unary, COCO17), a.unary, atol=1e-5)
    assert np.allclose(a.boxes, box[:, :4]) and a.box_scores.tolist() == [1.0]


@pytest.mark.slow
def test_every_decoder_maps_each_person_into_its_box():
    model = tiny({"pairwise": "gaussian", "radius": 8}).eval()
    found = model.predict_images([scene(3)[0]], None, ["unary", "marginals", "map"], padding=1.25, normalized=True)[0]
    assert len(found) == 4  # box_detections_per_img of an untrained network
    for decoder, points in found.keypoints.items():
        assert points.shape == (4, 17, 3) and ((points[..., 2] > 0) & (points[..., 2] <= 1)).all(), decoder
        x0, y0 = found.boxes[:, None, 0], found.boxes[:, None, 1]  # every keypoint within its person's box
        assert ((points[..., 0] >= x0 - 1) & (points[..., 0] <= x0 + found.boxes[:, None, 2] + 1)).all(), decoder
        assert ((points[..., 1] >= y0 - 1) & (points[..., 1] <= y0 + found.boxes[:, None, 3] + 1)).all(), decoder


def test_an_image_without_a_person_gives_an_empty_list():
    model = tiny({"pairwise": "gaussian", "radius": 8}, box_score_thresh=1.0)  # nothing scores above 1
    predictor = Predictor(model, flip=False)
    assert predictor(np.zeros((48, 64, 3), np.uint8)) == []
    assert predictor(np.zeros((48, 64, 3), np.uint8), decoder="map", return_maps=True) == []
    kept = Predictor(tiny(), flip=False, score_threshold=0.0)(np.zeros((48, 64, 3), np.uint8))
    assert len(kept) == 4 and Predictor(tiny(), flip=False, score_threshold=1.0)(np.zeros((48, 64, 3), np.uint8)) == []


class Truth(PoseEstimator):
    """A stand-in detector that finds exactly the annotated persons, except the first image's (missed), plus
    one false detection in every image: what the evaluation must count."""

    def __init__(self):
        super().__init__()
        self.skeleton, self.head, self.backbone, self.calls = LSP14, None, torch.nn.Linear(1, 1), 0

    def persons(self, batch, decoders, *, flip=False, refine="none", maps=False):
        found = []
        for keypoints, boxes in zip(batch["meta"]["keypoints"], batch["meta"]["box"]):
            keep = slice(1, None) if self.calls == 0 else slice(None)
            self.calls += 1
            points = np.concatenate([np.asarray(keypoints)[keep], np.zeros((1, 14, 3))])
            points[..., 2] = 1.0
            boxes = np.concatenate([np.asarray(boxes)[keep], [[0.0, 0.0, 1.0, 1.0]]])
            found.append(Persons(boxes, np.ones(len(boxes)), {"unary": points}))
        return found

    training_loss = grid_keypoints = annotated_outputs = image_items = collate = view = None


def test_evaluation_pairs_a_detectors_persons_with_the_annotations(lsp_root):
    from crfpose.data import LSPDataset, PersonImages

    dataset = PersonImages(LSPDataset(lsp_root, split="test", limit=3, box="joints"))
    model = Truth()
    predictions = predict_dataset(model, dataset, decoders=["unary"], batch_size=2)["unary"]
    assert predictions["annotated"].tolist() == [True, False, True, False, True, False]
    assert np.isnan(predictions["pred"][0]).all()  # the missed person
    result = compute_metrics(predictions, LSP14, normalizer="torso")
    assert result["num_poses"] == 3 and result["missed"] == 1 and result["unmatched"] == 3
    assert result["pck"] == pytest.approx(2 / 3, abs=0.02) and result["epe"] == 0.0  # found persons exact, the missed one wrong


def test_a_checkpoint_of_another_architecture_names_both(tmp_path):
    detector = tiny({"pairwise": "gaussian", "radius": 8})
    config = load_config(None, ["model.name=keypoint_rcnn", "skeleton=coco17", "crf.unary=identity", f"model.options={json.dumps(TINY)}"])
    path = save_checkpoint(tmp_path / "krcnn.pt", {"model": detector.state_dict(), "config": to_dict(config)})
    other = load_config(None, ["skeleton=coco17", "model.options={width: 8, depth: 1}", "data.input_size=[32, 32]"])
    from crfpose.builders import model_from_config
    from crfpose.checkpoint import load_checkpoint

    with pytest.raises(ValueError, match=r"model\.name: 'keypoint_rcnn' in the checkpoint, 'cnn' here"):
        load_weights(model_from_config(other), load_checkpoint(path), "resume", other)
    with pytest.raises(ValueError, match=r"the checkpoint holds a 'keypoint_rcnn' model, the config a 'cnn'"):
        load_initial_weights(model_from_config(other), path, config=other)


# ----------------------------------------------------------------------------- runs on coco_mini (slow)


def test_the_shipped_config_reads_coco_mini_beside_the_checkout(coco_mini_root):
    config = load_config("coco_keypoint_rcnn")
    assert config.model.name == "keypoint_rcnn" and config.crf.unary == "identity" and config.crf.radius == 28
    assert config.data.train["root"] == config.data.val["root"] == str(coco_mini_root)


def _tiny_run(tmp_path, coco_mini_root, mode: str) -> list[str]:
    """``crfpose train`` arguments: the shipped config with the tiny network, 6 annotations' images, one epoch a stage."""
    data = {"root": str(coco_mini_root), "split": "train2017", "limit": 6}
    return [
        "train",
        "coco_keypoint_rcnn",
        f"output_dir={tmp_path / mode}",
        f"train.mode={mode}",
        f"model.options={json.dumps(TINY)}",
        f"data.train={json.dumps(data)}",
        f"data.val={json.dumps(data)}",
        "train.epochs=1",
        "train.stage1_epochs=1",
        "train.stage2_epochs=1",
        "train.batch_size=2",
        "train.workers=0",
        "train.mse_weight=0.5",
        "crf.radius=8",
        "crf.init_samples=8",
        "eval.batch_size=2",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["unary", "joint"])
def test_training_on_coco_mini(coco_mini_root, tmp_path, mode, capsys):
    from crfpose.cli import main

    assert main(_tiny_run(tmp_path, coco_mini_root, mode)) == 0
    records = [json.loads(line) for line in (tmp_path / mode / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["heatmap" if mode == "unary" else "joint"]
    assert all(np.isfinite(r["loss"]) and "peak" not in r for r in records)
    assert set(records[0]["val"]["coco"]) >= {"AP", "AR"}  # COCOeval ran on the model's own detections


@pytest.mark.slow
def test_separate_training_then_eval_predict_viz_and_the_app_on_coco_mini(coco_mini_root, tmp_path, capsys):
    """The CRF fitted on the frozen network; then every command with its checkpoint: eval (COCOeval and PCK
    for each decoder), predict (several persons per image, no separate detector), viz, and the app's requests."""
    from crfpose.app import _Session
    from crfpose.cli import main
    from crfpose.data.coco import load_coco

    assert main(_tiny_run(tmp_path, coco_mini_root, "separate")) == 0
    run = tmp_path / "separate"
    assert [json.loads(line)["stage"] for line in (run / "log.jsonl").read_text().splitlines()] == ["heatmap", "crf"]
    capsys.readouterr()
    out = tmp_path / "eval.json"
    options = ["--set", f"root={coco_mini_root}", "--set", "split=train2017", "--set", "limit=6"]
    assert (
        main(["eval", str(run / "last.pt"), "--data", "coco", *options, "--decoder", "unary", "marginals", "map", "--out", str(out)]) == 0
    )
    results = json.loads(out.read_text())
    coco = load_coco(coco_mini_root / "annotations" / "person_keypoints_train2017.json")
    images = sorted({a["image_id"] for a in coco.dataset["annotations"] if not a["iscrowd"]})  # the first 6 persons' images
    for decoder in ("unary", "marginals", "map"):
        assert set(results[decoder]["coco"]) >= {"AP", "AR"} and 0 <= results[decoder]["pck"] <= 1
        assert results[decoder]["num_poses"] >= 6 and results[decoder]["num_poses"] - results[decoder]["missed"] >= 0
    saved = np.load(tmp_path / "eval.npz")
    assert saved["annotated"].sum() == results["map"]["num_poses"] and len(images) > 0

    files = sorted((coco_mini_root / "train2017").iterdir())[:2]
    assert (
        main(["predict", str(run / "last.pt"), *map(str, files), "--out", str(tmp_path / "pred"), "--draw", "--score-threshold", "0"]) == 0
    )
    for f in files:
        instances = json.loads((tmp_path / "pred" / "predictions" / f"{f.stem}.json").read_text())
        assert len(instances) == 4 and all(len(i["keypoints"]) == 17 for i in instances)  # box_detections_per_img
        assert (tmp_path / "pred" / "visualizations" / f"{f.stem}.png").is_file()

    assert (
        main(["viz", str(run / "last.pt"), "--data", "coco", *options, "--num", "2", "--format", "png", "--out", str(tmp_path / "fig")])
        == 0
    )
    names = {p.stem for p in (tmp_path / "fig").iterdir()}
    assert {"overlays", "heatmaps", "pairwise", "deformation", "samples", "pck_curves", "training"} <= names

    session = _Session(Predictor.from_checkpoint(run / "last.pt", score_threshold=0.0), tmp_path / "app")
    for upload, webcam in ((str(files[0]), None), (None, np.zeros((60, 80, 3), np.uint8))):
        overlay, marginals, record, _, message = session.predict(upload, webcam, "CRF MAP", 0.3)
        assert len(record["instances"]) == 4 and "4 person(s)" in message and overlay and marginals


@pytest.mark.slow
def test_an_imported_torchvision_checkpoint_predicts_as_torchvision(coco_mini_root, tmp_path):
    """torchvision's keypointrcnn_resnet50_fpn state dict (random weights, no download) through
    ``crfpose import-official``: it loads strictly, the CRF's pairwise is fitted to the annotations' poses on
    their boxes' 56 x 56 grids, and the unary decoder gives torchvision's own keypoints (batch-norm epsilon 0,
    as torchvision sets it for its published weights)."""
    import torchvision

    from crfpose.checkpoint import load_checkpoint, load_model
    from crfpose.cli import main
    from crfpose.crf import GaussianPairwise
    from crfpose.import_official import annotated_poses

    torch.manual_seed(0)
    small = {"min_size": 96, "max_size": 128, "box_detections_per_img": 3}
    theirs = torchvision.models.detection.keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None, **small).eval()
    for module in theirs.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 0.0
    torch.save(theirs.state_dict(), tmp_path / "keypointrcnn.pth")
    ann = coco_mini_root / "annotations" / "person_keypoints_train2017.json"
    out = tmp_path / "krcnn.pt"
    weights = str(tmp_path / "keypointrcnn.pth")
    assert main(["import-official", weights, "--arch", "keypointrcnn_resnet50_fpn", "--keypoints", str(ann), "--out", str(out)]) == 0
    state = load_checkpoint(out)
    state["config"]["model"]["options"] |= small  # the image size and detections kept: no effect on the weights
    model, config = load_model(state)
    assert config.model.options["bn_eps"] == 0.0 and config.crf.radius == 28
    mine = model.backbone.state_dict()
    assert mine.keys() == {k for k in theirs.state_dict() if not k.endswith("num_batches_tracked")}
    assert all(torch.equal(mine[k], v) for k, v in theirs.state_dict().items() if k in mine)
    poses, boxes = annotated_poses(ann, 17)
    corners = torch.as_tensor(np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1), dtype=torch.float32)
    expected = GaussianPairwise.from_keypoints(BoxGridCodec(56).to_grid(torch.as_tensor(poses, dtype=torch.float32), corners), COCO17, 28)
    assert all(torch.allclose(v, expected.state_dict()[k]) for k, v in model.head.pairwise.state_dict().items())
    image = torch.rand(3, 120, 90, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = theirs([image])[0]
    persons = Predictor(model, decoder="unary", flip=False, score_threshold=0.0)(image)
    assert len(persons) == len(reference["boxes"]) == 3
    assert np.allclose(
        [p["bbox"] for p in persons], torch.cat([reference["boxes"][:, :2], reference["boxes"][:, 2:] - reference["boxes"][:, :2]], 1)
    )
    assert np.array_equal(np.stack([p["keypoints"] for p in persons]), reference["keypoints"][..., :2].double().numpy())
    torch.save({k: v for k, v in theirs.state_dict().items() if "keypoint_predictor" not in k}, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=r"cut\.pth: not a Keypoint R-CNN state dict"):
        from crfpose.import_official import import_official

        import_official(tmp_path / "cut.pth", "keypointrcnn_resnet50_fpn", ann, tmp_path / "x.pt")


@pytest.mark.parametrize("pairwise", ["gaussian", "freeform", "relation"])
def test_each_pairwise_kind_on_another_skeleton(pairwise):
    """LSP14's 14 maps per person and each pairwise kind in grid cells: the CRF's loss reaches the pairwise's
    parameters (the relation pairwise through the keypoint head's features), and every decoder gives 14 joints."""
    model = tiny({"pairwise": pairwise, "radius": 6}, skeleton=LSP14).train()
    image, boxes, keypoints = scene(4)
    batch = {"image": [image], "boxes": [boxes], "keypoints": [keypoints[:, :14]]}
    model.training_loss(batch, "crf", "all", sigma=1.0, mse_weight=0.0).loss.backward()
    grads = [p.grad for p in model.head.pairwise.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    if pairwise == "relation":
        assert model.backbone.roi_heads.keypoint_head[0].weight.grad.abs().sum() > 0
    found = model.eval().predict_images([image], None, ["unary", "marginals", "map"], padding=1.25, normalized=True)[0]
    assert len(found) == 4 and all(k.shape == (4, 14, 3) and np.isfinite(k).all() for k in found.keypoints.values())


def test_whole_images_keep_the_annotated_person_boxes(lsp_root, tmp_path):
    """A detector model's persons are the annotated ones (LSP's: the tight box of the joints), whatever box
    protocol the top-down data set would crop from by default; the whole image, or detections, is refused."""
    from crfpose.builders import make_dataset
    from crfpose.data import LSPDataset, PersonImages
    from crfpose.data.transforms import joints_box

    config = load_config(
        None, ["model.name=keypoint_rcnn", "skeleton=lsp14", "data.name=lsp", f"data.val={{root: {lsp_root}, split: test, limit: 2}}"]
    )
    item = make_dataset(config, "val", False, tiny(skeleton=LSP14).codec)[0]  # LSP's default protocol is the whole image
    assert np.allclose(item["boxes"][0].numpy(), joints_box(item["meta"]["keypoints"][0]), atol=1e-4)
    with pytest.raises(ValueError, match=r"and no detections \(got box 'image'\)"):
        PersonImages(LSPDataset(lsp_root, split="test", limit=2))
    (tmp_path / "det.json").write_text(json.dumps([{"image_id": 1001, "bbox": [1, 2, 30, 40], "score": 0.9}]))
    with pytest.raises(ValueError, match=r"\(got persons from a detections file\)"):
        PersonImages(LSPDataset(lsp_root, split="test", limit=2, box="joints", detections=tmp_path / "det.json"))
