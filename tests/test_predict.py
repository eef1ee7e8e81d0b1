"""Predictor and ``crfpose predict``, checked with an oracle backbone whose maps are built from known
keypoints in each crop: what comes back in original-image pixels must be those keypoints."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from crfpose.codec import heatmap_to_input, input_to_heatmap
from crfpose.crf import FreePairwise
from crfpose.data.transforms import affine_points, crop_box, flip_heatmaps, invert_affine
from crfpose.detect import load_detections
from crfpose.models import IdentityUnary, PoseModel, TreeHead
from crfpose.predict import Predictor, read_image, whole_image_box
from crfpose.export import PredictionWriter, collect_sources
from crfpose.skeletons import COCO17, LSP14

INPUT, GRID = (48, 64), (12, 16)
STRIDE = (INPUT[0] / GRID[0], INPUT[1] / GRID[1])


class Oracle(nn.Module):
    """Returns, for a crop it was told about, log-Gaussian maps (sigma 1.5 cells) around that crop's
    keypoints, and their mirror for the mirrored crop (an exactly flip-equivariant network)."""

    def __init__(self, skeleton, input_size=INPUT, grid=GRID, padding=1.25):
        super().__init__()
        self.skeleton, self.num_joints = skeleton, skeleton.num_joints
        self.input_size, self.grid, self.padding = input_size, grid, padding
        self.stride = input_size[0] // grid[0]
        self.dummy = nn.Parameter(torch.zeros(()))
        self.maps = {}

    def add(self, image, box, keypoints):
        """Register the crop of ``box`` in ``image`` (3, h, w) with ``keypoints`` (K, 2) original pixels."""
        crop, affine = crop_box(image, box, self.input_size, self.padding, normalized=False)
        stride = (self.input_size[0] / self.grid[0], self.input_size[1] / self.grid[1])
        cells = input_to_heatmap(affine_points(np.asarray(keypoints, dtype=np.float64), affine), stride)  # (K, 2)
        x, y = np.arange(self.grid[0]), np.arange(self.grid[1])
        d2 = (x[None, None, :] - cells[:, 0, None, None]) ** 2 + (y[None, :, None] - cells[:, 1, None, None]) ** 2
        maps = torch.as_tensor(-d2 / (2 * 1.5**2), dtype=torch.float32)  # (K, H, W)
        self.maps[crop.numpy().tobytes()] = maps
        self.maps[crop.flip(-1).numpy().tobytes()] = flip_heatmaps(maps[None], self.skeleton)[0]

    def forward(self, images):
        return torch.stack([self.maps[image.numpy().tobytes()] for image in images]) + 0 * self.dummy


def crf_oracle(skeleton, input_size=INPUT, grid=GRID, padding=1.25):
    """A PoseModel whose CRF marginals are the oracle's normalised Gaussians: flat pairwise over the whole grid."""
    oracle = Oracle(skeleton, input_size, grid, padding)
    head = TreeHead(skeleton, FreePairwise(skeleton.num_edges, max(grid)), IdentityUnary())
    return oracle, PoseModel(oracle, skeleton, input_size, head)


def grid_keypoints(image, box, rng, k):
    """Keypoints (K, 2) in original pixels that fall on heatmap cell centres of the box's crop."""
    _, affine = crop_box(image, box, INPUT, normalized=False)
    cells = np.stack([rng.integers(1, GRID[0] - 1, k), rng.integers(1, GRID[1] - 1, k)], axis=1).astype(np.float64)
    return affine_points(heatmap_to_input(cells, STRIDE), invert_affine(affine))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Noise images of different sizes and aspect ratios, each with person boxes (one partly outside)."""
    folder = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate([(90, 160), (300, 120), (64, 64), (241, 377)]):
        path = folder / f"{i + 1:012d}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        boxes = np.array([[w * 0.1, h * 0.2, w * 0.5, h * 0.6, 0.9], [w * 0.6, -h * 0.1, w * 0.5, h * 0.5, 0.7]])
        out.append((path, boxes))
    return out


@pytest.mark.parametrize("decoder, flip", [("marginals", True), ("map", False), ("unary", True)])
def test_given_boxes_round_trip_to_original_pixels(scenes, decoder, flip):
    rng = np.random.default_rng(1)
    oracle, model = crf_oracle(LSP14)
    truth = []
    for path, boxes in scenes:
        image = read_image(path)
        kps = [grid_keypoints(image, box[:4], rng, 14) for box in boxes]
        for box, kp in zip(boxes, kps):
            oracle.add(image, box[:4], kp)
        truth.append(kps)
    predictor = Predictor(model, decoder=decoder, flip=flip, normalized=False, batch_size=3)
    results = predictor([p for p, _ in scenes], [b for _, b in scenes])
    for (path, boxes), persons, kps in zip(scenes, results, truth):
        assert len(persons) == 2
        for person, box, kp in zip(persons, boxes, kps):
            assert np.abs(person["keypoints"] - kp).max() < 0.01  # < 0.5 px required; exact up to float32
            assert person["bbox"] == pytest.approx(box[:4].tolist()) and person["bbox_score"] == pytest.approx(box[4])
            assert person["keypoint_scores"].shape == (14,)
            assert person["score"] == pytest.approx(person["keypoint_scores"].mean() * box[4])
    one = predictor(np.asarray(Image.open(scenes[0][0])), scenes[0][1][:1, :4])  # one array in, one list out
    assert len(one) == 1 and np.abs(one[0]["keypoints"] - truth[0][0]).max() < 0.01


def test_keypoint_scores_are_crf_marginal_probabilities(scenes):
    oracle, model = crf_oracle(LSP14)
    image = read_image(scenes[0][0])
    box = scenes[0][1][0, :4]
    oracle.add(image, box, grid_keypoints(image, box, np.random.default_rng(2), 14))
    person = Predictor(model, flip=False, normalized=False)(image, [box], return_maps=True)[0]
    marginals = person["marginals"]  # (K, H, W), each a distribution
    assert not marginals.requires_grad
    assert torch.allclose(marginals.sum((-2, -1)), torch.ones(14), atol=1e-5)
    w = marginals.shape[-1]
    cells = marginals.flatten(1).argmax(-1)
    block = [marginals[k, max(c // w - 1, 0) : c // w + 2, max(c % w - 1, 0) : c % w + 2].sum() for k, c in enumerate(cells.tolist())]
    assert np.allclose(person["keypoint_scores"], torch.stack(block).numpy(), atol=1e-6)  # mass within one cell
    gauss = torch.exp(person["unary"] - person["unary"].flatten(1).logsumexp(-1)[:, None, None])  # independent joints
    assert torch.allclose(marginals, gauss, atol=1e-5)


def test_whole_image_mode_round_trips(scenes):
    rng = np.random.default_rng(3)
    oracle, model = crf_oracle(LSP14)
    truth = {}
    for path, _ in scenes:
        image = read_image(path)
        box = whole_image_box(image)[0, :4]
        truth[path] = grid_keypoints(image, box, rng, 14)
        oracle.add(image, box, truth[path])
    results = Predictor(model, normalized=False)([p for p, _ in scenes])
    for (path, _), persons in zip(scenes, results):
        h, w = read_image(path).shape[-2:]
        assert len(persons) == 1 and persons[0]["bbox"] == [0.0, 0.0, w, h]
        assert np.abs(persons[0]["keypoints"] - truth[path]).max() < 0.01


def test_detections_json_round_trip_through_the_command_writer(scenes, tmp_path):
    """COCO detection results keyed by numeric image ids (COCO's file names), one image with none."""
    rng = np.random.default_rng(4)
    oracle, model = crf_oracle(LSP14)
    records, truth = [], {}
    for i, (path, boxes) in enumerate(scenes[:3]):
        image = read_image(path)
        truth[path.stem] = [grid_keypoints(image, b[:4], rng, 14) for b in boxes]
        for b, kp in zip(boxes, truth[path.stem]):
            oracle.add(image, b[:4], kp)
            records.append({"image_id": i + 1, "category_id": 1, "bbox": b[:4].tolist(), "score": float(b[4])})
    records.append({"image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5], "score": 0.99})  # a car: ignored
    (tmp_path / "dets.json").write_text(json.dumps(records))
    oracle.add(read_image(scenes[3][0]), whole_image_box(read_image(scenes[3][0]))[0, :4], np.zeros((14, 2)))
    predictor = Predictor(model, normalized=False, batch_size=2)
    writer = PredictionWriter(predictor, tmp_path / "out", detections=load_detections(tmp_path / "dets.json"))
    writer.run(collect_sources([str(scenes[0][0].parent)]))
    assert writer.processed == 4 and not writer.skipped
    for path, boxes in scenes[:3]:
        instances = json.loads((tmp_path / "out" / "predictions" / f"{path.stem}.json").read_text())
        order = np.argsort(-boxes[:, 4])
        assert len(instances) == 2
        for inst, j in zip(instances, order):
            assert np.abs(np.array(inst["keypoints"]) - truth[path.stem][j]).max() < 0.01
            x, y, w, h = boxes[j, :4]
            assert inst["bbox"] == [pytest.approx([x, y, x + w, y + h])] and len(inst["keypoint_scores"]) == 14
    assert json.loads((tmp_path / "out" / "predictions" / f"{scenes[3][0].stem}.json").read_text()) == []


def test_coco_json_scores_ap_1_for_the_oracle_on_coco_mini(coco_mini_root, tmp_path):
    """Annotated boxes as detections, the oracle's keypoints decoded with DARK: pycocotools' loadRes reads
    the results file, and COCOeval gives AP 1.0."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann = coco_mini_root / "annotations" / "person_keypoints_train2017.json"
    data = json.loads(ann.read_text())
    names = {im["id"]: im["file_name"] for im in data["images"]}
    people = [a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    size, padding = (96, 128), 2.0  # joints >= 6 cells from the crop's border, where DARK is exact
    oracle, model = crf_oracle(COCO17, size, (24, 32), padding)
    images = {}
    for a in people:
        path = coco_mini_root / "train2017" / names[a["image_id"]]
        image = images.setdefault(path, read_image(path))
        oracle.add(image, a["bbox"], np.asarray(a["keypoints"], dtype=np.float64).reshape(17, 3)[:, :2])
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0} for a in people]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    predictor = Predictor(model, refine="dark", padding=padding, normalized=False, batch_size=32)
    writer = PredictionWriter(
        predictor,
        tmp_path / "out",
        coco_json=tmp_path / "results.json",
        detections=load_detections(tmp_path / "dets.json", ann),
        image_ids={im["file_name"]: im["id"] for im in data["images"]},
    )
    writer.run(sorted(images))
    gt = COCO(str(ann))
    result = gt.loadRes(str(tmp_path / "results.json"))
    assert len(result.getAnnIds()) == len(people)
    evaluation = COCOeval(gt, result, "keypoints")
    evaluation.params.imgIds = sorted({a["image_id"] for a in people})
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_truncated_and_non_image_files_are_named_skipped_and_the_rest_processed(scenes, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = scenes[0][0].read_bytes()
    (folder / "good.png").write_bytes(good)
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    (folder / "notes.txt").write_text("not an image")
    oracle, model = crf_oracle(LSP14)
    image = read_image(folder / "good.png")
    oracle.add(image, whole_image_box(image)[0, :4], np.zeros((14, 2)))
    writer = PredictionWriter(Predictor(model, normalized=False), tmp_path / "out")
    writer.run(collect_sources([str(folder)]))
    err = capsys.readouterr().err
    assert writer.processed == 1 and sorted(writer.skipped) == sorted([str(folder / "cut.png"), str(folder / "notes.txt")])
    assert f"skipped {folder / 'cut.png'}" in err and f"skipped {folder / 'notes.txt'}" in err
    assert sorted(p.name for p in (tmp_path / "out" / "predictions").iterdir()) == ["good.json"]


def test_bad_input_is_named():
    _, model = crf_oracle(LSP14)
    predictor = Predictor(model)
    with pytest.raises(ValueError, match=r"boxes\[0\]: expected finite \(N, 4\) or \(N, 5\)"):
        predictor(np.zeros((20, 20, 3), np.uint8), [[1, 2, 3]])
    with pytest.raises(ValueError, match="boxes: expected one entry per image"):
        predictor([np.zeros((20, 20, 3), np.uint8)] * 2, [[[1, 2, 3, 4]]])
    with pytest.raises(ValueError, match="decoder: a model without a CRF has only 'unary'"):
        Predictor(PoseModel(Oracle(LSP14), LSP14, INPUT), decoder="marginals")
    with pytest.raises(TypeError, match="model: expected a crfpose PoseModel .*got Oracle"):
        Predictor(Oracle(LSP14))
    with pytest.raises(ValueError, match="SOURCE: no such file"):
        collect_sources(["/nonexistent/*.jpg"])
    assert predictor(np.zeros((20, 20, 3), np.uint8), np.zeros((0, 4))) == []


def test_predict_command_end_to_end_and_on_a_bad_checkpoint(scenes, tmp_path, capsys):
    from crfpose.cli import main
    from test_checkpoint_safety import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(checkpoint),
                str(scenes[0][0].parent / "*.png"),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--coco-json",
                str(tmp_path / "coco.json"),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"processed": 4, "skipped": 0, "out": str(out)}
    instances = json.loads((out / "predictions" / f"{scenes[1][0].stem}.json").read_text())
    assert len(instances) == 1 and np.array(instances[0]["keypoints"]).shape[1] == 2
    ids = json.loads((tmp_path / "coco.image_ids.json").read_text())
    assert sorted(ids.values()) == sorted(str(p) for p, _ in scenes)
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    assert main(["predict", str(tmp_path / "notes.pt"), str(scenes[0][0])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{tmp_path / 'notes.pt'}: not a torch file" in err
    assert main(["predict", str(checkpoint), str(tmp_path / "nothing.txt"), "--out", str(out)]) == 2
