"""Evaluation: flip test and the map back to original pixels, checked with an oracle network whose
maps are the encoded ground truth of each crop (so every error is the evaluation's own)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from crfpose.crf import FreePairwise
from crfpose.data import COCODataset, PersonRecord, PoseDataset, TopDownTransform
from crfpose.data.transforms import flip_heatmaps
from crfpose.evaluate import evaluate, merge_predictions, predict_dataset
from crfpose.models import PoseModel, ScaledUnary, TreeHead
from crfpose.skeletons import COCO17, LSP14


class Oracle(nn.Module):
    """Returns the target heatmaps of each crop it was shown, and their mirror (flip_heatmaps) for the
    mirrored crop, as an exactly flip-equivariant network would. Counts the mirrored crops it saw."""

    stride = 4

    def __init__(self, dataset, skeleton):
        super().__init__()
        self.num_joints = skeleton.num_joints
        self.dummy = nn.Parameter(torch.zeros(()))
        self.maps, self.mirrored = {}, 0
        for item in (dataset[i] for i in range(len(dataset))):
            image, target = item["image"], item["target"][None]
            self.maps[image.numpy().tobytes()] = (target[0], False)
            self.maps[image.flip(-1).numpy().tobytes()] = (flip_heatmaps(target, skeleton)[0], True)

    def forward(self, images):
        out = []
        for image in images:
            target, mirrored = self.maps[image.numpy().tobytes()]
            self.mirrored += mirrored
            out.append(target)
        return torch.stack(out) + 0 * self.dummy


@pytest.fixture(scope="module")
def person_dataset(tmp_path_factory):
    """Six LSP14 persons in noise images of different sizes, cropped by a real top-down transform."""
    folder = tmp_path_factory.mktemp("persons")
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        w, h = int(rng.integers(90, 160)), int(rng.integers(90, 160))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        box = np.array([rng.uniform(5, 20), rng.uniform(5, 20), rng.uniform(40, w - 25), rng.uniform(50, h - 25)])
        xy = box[:2] + rng.uniform(0.05, 0.95, (14, 2)) * box[2:]
        kp = np.concatenate([xy, np.full((14, 1), 2.0)], axis=1)
        kp[3] = 0  # one unlabelled joint
        records.append(PersonRecord(folder / f"{i}.png", i, f"person {i}", box, kp))
    transform = TopDownTransform(LSP14, input_size=(48, 64), heatmap_size=(12, 16), sigma=1.0, normalize=False)
    return PoseDataset(records, LSP14, transform)


@pytest.mark.parametrize("flip", [False, True])
def test_oracle_scores_perfectly_in_original_pixels(person_dataset, flip):
    oracle = Oracle(person_dataset, LSP14)
    model = PoseModel(oracle, LSP14, (48, 64))
    result = evaluate(model, person_dataset, flip=flip, decoder="unary", refine="dark", alpha=0.05, normalizer="bbox", batch_size=4)
    assert result["num_poses"] == 6
    assert result["pck"] == 1.0 and result["auc"] > 0.85
    assert result["epe"] < 0.5  # original pixels; a crop-pixel or un-flipped answer is off by many pixels
    assert (oracle.mirrored > 0) == flip
    assert np.isnan(result["pck_per_joint"][LSP14.joints[3]])  # never labelled: no rate
    assert "PCK@0.05" in result["table"] and "mean" in result["table"]
    assert {k: result[k] for k in ("metric", "normalizer", "joints")} == {"metric": "PCK@0.05", "normalizer": "bbox", "joints": "labelled"}


def test_flip_test_swaps_left_and_right(person_dataset):
    """With flipped maps averaged in but the left/right channels NOT swapped back, each paired joint
    gets two equal peaks and PCK falls: the swap is what makes the flip test exact."""
    oracle = Oracle(person_dataset, LSP14)
    images = torch.stack([person_dataset[i]["image"] for i in range(6)])
    model = PoseModel(oracle, LSP14, (48, 64))
    straight = model.predict(images, ["unary"], flip=False).keypoints["unary"]
    flipped = model.predict(images, ["unary"], flip=True).keypoints["unary"]
    assert torch.allclose(straight, flipped)
    unswapped = LSP14.__class__(LSP14.name, LSP14.joints, LSP14.parents)  # no flip pairs
    wrong = PoseModel(oracle, unswapped, (48, 64)).predict(images, ["unary"], flip=True).keypoints["unary"]
    assert not torch.allclose(straight[..., :2], wrong[..., :2])
    maps = oracle(images)
    averaged = model.outputs(images, flip=True).maps  # the mirrored crops' maps, flipped back, averaged in
    assert torch.allclose(averaged, 0.5 * (maps + flip_heatmaps(oracle(images.flip(-1)), LSP14)))


@pytest.mark.parametrize("decoder", ["marginals", "map"])
def test_crf_decoders_through_the_flip_test(person_dataset, decoder):
    """A flat pairwise covering the whole grid makes the joints independent: the CRF's marginals and
    MAP fall on the oracle's peaks (whole cells, so judged at PCK@0.2)."""
    oracle = Oracle(person_dataset, LSP14)
    head = TreeHead(LSP14, FreePairwise(LSP14.num_edges, 16), ScaledUnary(14, 30.0))
    model = PoseModel(oracle, LSP14, (48, 64), head)
    result = evaluate(model, person_dataset, flip=True, decoder=decoder, alpha=0.2, batch_size=6)
    assert result["pck"] == 1.0
    assert result["epe"] < 5.0


def test_predict_dataset_shards_merge_to_the_whole(person_dataset):
    model = PoseModel(Oracle(person_dataset, LSP14), LSP14, (48, 64))
    whole = predict_dataset(model, person_dataset, decoders=["unary"])["unary"]
    shards = [predict_dataset(model, person_dataset, decoders=["unary"], indices=range(r, 6, 4))["unary"] for r in range(4)]
    shards.append(predict_dataset(model, person_dataset, decoders=["unary"], indices=[0])["unary"])  # a padded duplicate
    merged = merge_predictions(shards)
    assert merged.keys() == whole.keys()
    for key in whole:
        np.testing.assert_array_equal(merged[key], whole[key])


def test_errors_name_the_argument(person_dataset):
    oracle = Oracle(person_dataset, LSP14)
    model = PoseModel(oracle, LSP14, (48, 64))
    with pytest.raises(ValueError, match="decoder: a model without a CRF has only 'unary'"):
        evaluate(model, person_dataset, decoder="marginals")
    with pytest.raises(ValueError, match=r"decoder: expected one of \('unary', 'marginals', 'map'\)"):
        evaluate(model, person_dataset, decoder="argmax")
    with pytest.raises(ValueError, match="normalizer: expected one of"):
        evaluate(model, person_dataset, decoder="unary", normalizer="height")
    with pytest.raises(TypeError, match=r"model: expected a crfpose model \(PoseModel, KeypointRCNNModel\), got Oracle"):
        predict_dataset(oracle, person_dataset, decoders=["unary"])


def test_coco_ap_of_the_oracle(coco_mini_root):
    """COCO-format data gets COCO AP; the oracle's predictions score close to 1 (joints outside the
    crop have no target, so a few are missed)."""
    transform = TopDownTransform(COCO17, input_size=(96, 128), heatmap_size=(24, 32), sigma=1.0)
    dataset = COCODataset(coco_mini_root, "train2017", transform=transform)
    model = PoseModel(Oracle(dataset, COCO17), COCO17, (96, 128))
    result = evaluate(model, dataset, decoder="unary", refine="dark", batch_size=16)
    assert result["coco"]["AP"] > 0.9
    assert result["pck"] > 0.95
