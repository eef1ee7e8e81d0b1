"""crfpose predict on a video (one JSON per video, an MP4 overlay) and the torchvision person detector's
plumbing (class filter, threshold, box layout, empty result) with random weights: nothing downloads."""

import json

import numpy as np
import pytest
import torch

from crfpose.detect import PersonDetector
from crfpose.predict import Predictor, whole_image_box
from crfpose.export import PredictionWriter, read_video, write_video
from crfpose.skeletons import LSP14
from test_predict import crf_oracle, grid_keypoints

av = pytest.importorskip("av")


def test_short_video_gives_one_json_per_video_and_an_mp4_overlay(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(5)]
    write_video(tmp_path / "clip.mp4", frames, fps=5)
    decoded, fps, _ = read_video(tmp_path / "clip.mp4")
    decoded = list(decoded)  # lossy codec: the oracle is told about the frames as decoded
    assert len(decoded) == 5 and decoded[0].shape == (48, 64, 3) and fps == 5
    oracle, model = crf_oracle(LSP14)
    truth = []
    for frame in decoded:
        image = torch.from_numpy(frame.transpose(2, 0, 1).copy()).float() / 255
        box = whole_image_box(image)[0, :4]
        truth.append(grid_keypoints(image, box, rng, 14))
        oracle.add(image, box, truth[-1])
    writer = PredictionWriter(Predictor(model, normalized=False, batch_size=2), tmp_path / "out", draw=True)
    writer.run([tmp_path / "clip.mp4"])
    entries = json.loads((tmp_path / "out" / "predictions" / "clip.json").read_text())
    assert [e["frame_id"] for e in entries] == [0, 1, 2, 3, 4]
    for entry, kp in zip(entries, truth):
        assert len(entry["instances"]) == 1
        assert np.abs(np.array(entry["instances"][0]["keypoints"]) - kp).max() < 0.01
    overlay, _, _ = read_video(tmp_path / "out" / "visualizations" / "clip.mp4")
    overlay = list(overlay)
    assert len(overlay) == 5 and overlay[0].ndim == 3
    assert not list((tmp_path / "out" / "visualizations").glob(".*"))  # no temp file left


@pytest.fixture(scope="module")
def random_detector():
    """A Faster R-CNN (MobileNet) with random weights that keeps every raw detection (threshold 0)."""
    torch.manual_seed(0)
    return PersonDetector.from_torchvision(
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        model_options={"box_score_thresh": 0.0, "min_size": 160, "max_size": 160},
        score_threshold=0.0,
        nms_iou=1.0,
        max_persons=1000,
    )


def test_detector_keeps_persons_above_threshold_as_xywh(random_detector):
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    tensor = torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255
    with torch.no_grad():
        raw = random_detector.model([tensor])[0]
    # random weights rarely rank COCO's person class (1) first: let a class that occurs play the person
    random_detector.person_label = label = int(raw["labels"][0])
    persons = raw["labels"] == label
    assert (~persons).any()  # other classes present: the filter matters
    threshold = float(raw["scores"][persons].median())
    random_detector.score_threshold = threshold
    boxes = random_detector(image)
    keep = persons & (raw["scores"] >= threshold)
    xyxy = raw["boxes"][keep].double().numpy()
    expected = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2], raw["scores"][keep].double().numpy()[:, None]], 1)
    assert boxes.shape == (int(keep.sum()), 5)

    def by_rows(a):  # random weights tie scores: compare as sets
        return a[np.lexsort(np.round(a, 3).T[::-1])]

    assert np.allclose(by_rows(boxes), by_rows(expected), atol=1e-4)  # (x, y, w, h, score)
    assert (np.diff(boxes[:, 4]) <= 0).all() and boxes[:, 4].min() >= threshold
    random_detector.score_threshold = 1.0
    assert random_detector(image).shape == (0, 5)  # nobody: an empty (0, 5) array
    random_detector.score_threshold, random_detector.person_label = 0.0, 1


def test_detector_loads_a_local_weights_file(random_detector, tmp_path):
    torch.save(random_detector.model.state_dict(), tmp_path / "det.pth")
    loaded = PersonDetector.from_torchvision("fasterrcnn_mobilenet_v3_large_320_fpn", weights_path=tmp_path / "det.pth")
    assert all(torch.equal(v, random_detector.model.state_dict()[k]) for k, v in loaded.model.state_dict().items())
    with pytest.raises(ValueError, match="detector: expected one of"):
        PersonDetector.from_torchvision("yolo")
    torch.save(torch.zeros(2), tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"detector weights .*bad\.pth: expected a state dict"):
        PersonDetector.from_torchvision("fasterrcnn_mobilenet_v3_large_320_fpn", weights_path=tmp_path / "bad.pth")
