"""``limit`` and ``indices``: a quick run reads only the records it asks for, in Python and in configs."""

import pytest

from crfpose.builders import make_dataset
from crfpose.codec import HeatmapCodec
from crfpose.config import load_config
from crfpose.data import COCODataset, LSPDataset


def test_lsp_subsets_are_chosen_before_any_image_is_opened(lsp_root, monkeypatch):
    opened = []
    import crfpose.data.base as base

    real = base._image_header
    monkeypatch.setattr(base, "_image_header", lambda path, record: opened.append(path) or real(path, record))
    first = LSPDataset(lsp_root, "test", limit=5)
    assert [r.image_id for r in first.records] == [1001, 1002, 1003, 1004, 1005] and len(opened) == 5
    picked = LSPDataset(lsp_root, "test", indices=[3, 0, 999])
    assert [r.image_id for r in picked.records] == [1004, 1001, 2000]
    for bad, said in [
        ({"limit": 0}, "limit: expected a positive int"),
        ({"indices": [1000]}, r"indices: expected record numbers in 0\.\.999, got \[1000\]"),
    ]:
        with pytest.raises(ValueError, match=said):
            LSPDataset(lsp_root, "test", **bad)
    with pytest.raises(ValueError, match="limit and indices: give one of them"):
        LSPDataset(lsp_root, "test", limit=2, indices=[1])


def test_a_config_takes_them_as_dataset_options(lsp_root, coco_mini_root):
    config = load_config(None, ["data.name=lsp", f"data.val={{root: '{lsp_root}', split: val, limit: 7}}"])
    assert len(make_dataset(config, "val", train=False, codec=HeatmapCodec((64, 64), (16, 16)))) == 7
    every = COCODataset(coco_mini_root, "train2017")
    some = COCODataset(coco_mini_root, "train2017", indices=[2, 5])
    assert [r.record for r in some.records] == [every.records[2].record, every.records[5].record]
