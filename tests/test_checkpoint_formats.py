"""Checkpoints of format 1 (before the one model interface: a bare backbone, or PoseCRF's ``unary.`` and
``pairwise.`` keys) load into today's PoseModel with the same weights; a newer format is named."""

import pytest
import torch

from crfpose.builders import model_from_config
from crfpose.checkpoint import FORMAT, load_checkpoint, load_model
from crfpose.config import load_config, to_dict
from tiny_config import TINY_SYNTHETIC


def _format_1(state: dict, mode: str, structure: str) -> dict:
    """A state dict under format 1's names, as crfpose 0.1 wrote them."""
    if mode == "unary":
        return {k.removeprefix("backbone."): v for k, v in state.items()}
    slot = "head.chain." if structure == "chain" else "head.pairwise."
    return {("pairwise." + k[len(slot) :] if k.startswith(slot) else k.replace("head.unary.", "unary.")): v for k, v in state.items()}


@pytest.mark.parametrize("mode, structure", [("unary", "tree"), ("joint", "tree"), ("joint", "chain")])
def test_a_format_1_checkpoint_loads_with_the_same_weights(tmp_path, mode, structure):
    config = load_config(None, [f"train.mode={mode}", f"crf.structure={structure}", "crf.pairwise=relation", *TINY_SYNTHETIC])
    torch.manual_seed(0)
    model = model_from_config(config)
    old = _format_1(model.state_dict(), mode, structure)
    assert not any(k.startswith("head.") for k in old)
    torch.save({"model": old, "config": to_dict(config)}, tmp_path / "old.pt")  # no "format" key: format 1
    state = load_checkpoint(tmp_path / "old.pt")
    assert state["format"] == FORMAT and state["model"].keys() == model.state_dict().keys()
    loaded, _ = load_model(tmp_path / "old.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_newer_format_is_named(tmp_path):
    config = load_config(None, ["train.mode=unary", *TINY_SYNTHETIC])
    torch.save({"model": {}, "config": to_dict(config), "format": FORMAT + 1}, tmp_path / "new.pt")
    with pytest.raises(
        ValueError, match=rf"new\.pt: format {FORMAT + 1} was written by a newer crfpose \(this one reads formats 1 to {FORMAT}\)"
    ):
        load_model(tmp_path / "new.pt")


def test_a_config_that_builds_no_model_names_the_checkpoint(tmp_path):
    config = to_dict(load_config(None, ["train.mode=unary", *TINY_SYNTHETIC]))
    config["model"]["name"] = "no_such_backbone"
    torch.save({"model": {}, "config": config, "format": FORMAT}, tmp_path / "odd.pt")
    with pytest.raises(
        ValueError, match=r"checkpoint .*odd\.pt: its config does not build a model \(unknown model name 'no_such_backbone'"
    ):
        load_model(tmp_path / "odd.pt")
