"""One source of truth: the config's choices are the library's own tables and each value works where
the library uses it; one default pairwise radius and one default PCK normaliser everywhere."""

import inspect
import json
from dataclasses import fields

import numpy as np
import pytest
import torch
from PIL import Image

from crfpose import codec, evaluate, metrics
from crfpose.config import CHOICES, AugmentConfig, Config, load_config
from crfpose.data import DATASETS, TopDownTransform, build_dataset
from crfpose.builders import make_dataset
from crfpose.codec import HeatmapCodec
from crfpose.models import DECODERS, build_model
from crfpose.models.registry import BACKBONES, CRF_DEFAULTS, PAIRWISE, UNARY
from crfpose.skeletons import BUILTIN, LSP14, get_skeleton


def test_choices_are_the_library_tables():
    assert CHOICES["crf.pairwise"] == PAIRWISE and CHOICES["crf.unary"] == UNARY
    assert CHOICES["eval.decoder"] == DECODERS and CHOICES["eval.normalizer"] == metrics.NORMALIZERS
    assert CHOICES["eval.refine"] == codec.REFINEMENTS
    assert "model.name" not in CHOICES and set(CHOICES["data.name"]) == set(DATASETS)  # any registered backbone name
    assert set(CHOICES["skeleton"]) == set(BUILTIN)


@pytest.mark.parametrize("pairwise", CHOICES["crf.pairwise"])
@pytest.mark.parametrize("unary", CHOICES["crf.unary"])
def test_every_crf_choice_builds_and_decodes(pairwise, unary):
    crf = {"pairwise": pairwise, "unary": unary, "radius": 2}
    model = build_model("cnn", skeleton=LSP14, input_size=(32, 32), crf=crf, width=4, depth=1).eval()
    keypoints = model.predict(torch.rand(1, 3, 32, 32), CHOICES["eval.decoder"]).keypoints
    assert list(keypoints) == list(CHOICES["eval.decoder"]) and all(k.shape == (1, 14, 3) for k in keypoints.values())


def test_every_other_choice_is_accepted_where_it_is_used():
    maps = torch.rand(1, 14, 8, 8)
    for refine in CHOICES["eval.refine"]:
        assert codec.decode(maps, refine=refine).shape == (1, 14, 3)
    for name in CHOICES["skeleton"]:
        assert get_skeleton(name).name == name
    for name in BACKBONES:
        assert load_config(None, [f"model.name={name}"]).model.name == name
    gt = np.concatenate([np.random.default_rng(0).uniform(0, 50, (2, 14, 2)), np.full((2, 14, 1), 2.0)], -1)
    for normalizer in CHOICES["eval.normalizer"]:
        values = metrics.normalizers(gt, normalizer, skeleton=LSP14, head_boxes=np.tile([0, 0, 10, 10], (2, 1)))
        assert values.shape == (2,) and np.isfinite(values).all()
    assert len(build_dataset("synthetic", skeleton=LSP14, length=2)) == 2


def test_one_default_radius_and_one_default_normalizer():
    config = Config()
    assert config.crf.radius == CRF_DEFAULTS["radius"] == 6
    model = build_model("cnn", skeleton=LSP14, crf={}, width=4, depth=1)
    assert model.head.pairwise.radius == config.crf.radius
    assert {k: getattr(config.crf, k) for k in CRF_DEFAULTS} == CRF_DEFAULTS
    defaults = {
        f.__name__: inspect.signature(f).parameters["normalizer"].default
        for f in (metrics.pck, metrics.pck_curve, metrics.normalized_errors, evaluate.evaluate, evaluate.compute_metrics)
    }
    assert set(defaults.values()) == {config.eval.normalizer} == {metrics.DEFAULT_NORMALIZER} == {"bbox"}


def test_augment_options_are_the_transforms_with_its_defaults(tmp_path):
    transform = {f.name: f.default for f in fields(TopDownTransform)}
    augment = {f.name: f.default for f in fields(AugmentConfig) if f.name != "enabled"}
    assert augment == {k: transform[k] for k in augment}
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "imgs" / "a.jpg")
    category = {"id": 1, "name": "person", "keypoints": list(LSP14.joints), "skeleton": [[a + 1, b + 1] for a, b in LSP14.links]}
    ann = {
        "id": 1,
        "image_id": 1,
        "category_id": 1,
        "iscrowd": 0,
        "num_keypoints": 14,
        "bbox": [5, 5, 20, 20],
        "area": 400,
        "keypoints": [10.0, 10.0, 2.0] * 14,
    }
    image = {"id": 1, "file_name": "a.jpg", "width": 40, "height": 40}
    (tmp_path / "ann.json").write_text(json.dumps({"images": [image], "annotations": [ann], "categories": [category]}))
    options = {"ann_file": str(tmp_path / "ann.json"), "image_dir": str(tmp_path / "imgs")}
    config = load_config(
        None,
        ["data.name=coco", f"data.train={options}", "augment.rotation_factor=12.5", "augment.half_body_prob=0.25", "augment.padding=1.5"],
    )
    codec = HeatmapCodec((64, 64), (16, 16))
    made = make_dataset(config, "train", train=True, codec=codec).transform
    assert made.train and made.rotation_factor == 12.5 and made.half_body_prob == 0.25 and made.padding == 1.5
    assert made.flip_prob == transform["flip_prob"]
    config = load_config(None, ["data.name=coco", f"data.val={options}", "augment.padding=1.5"])
    plain = make_dataset(config, "val", train=False, codec=codec)
    assert not plain.transform.train and plain.transform.padding == 1.5
