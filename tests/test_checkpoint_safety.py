"""Checkpoints are read with ``weights_only=True``: a pickle that carries code is refused without
running it, and files that are not crfpose checkpoints give one line naming the file and the problem."""

import os

import pytest
import torch

from crfpose.builders import model_from_config
from crfpose.checkpoint import load_checkpoint, load_initial_weights, load_model, plain, save_checkpoint
from crfpose.cli import main
from crfpose.config import Config, to_dict
from crfpose.models import build_model
from crfpose.models.official import load_official_checkpoint


class Payload:
    """Unpickling this object runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def tiny_checkpoint(path):
    config = Config()
    config.model.name, config.model.options = "cnn", {"width": 4, "blocks": 1}
    config.data.input_size, config.data.heatmap_size = [32, 32], [8, 8]
    model = model_from_config(config)
    save_checkpoint(path, {"model": model.state_dict(), "config": to_dict(config), "metrics": {}, "best": 0.0})
    return path


def test_a_pickle_carrying_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "extra": Payload(marker)}, evil)
    model = build_model("cnn", "lsp14", input_size=(32, 32), width=4, depth=1)
    for load in (load_checkpoint, load_official_checkpoint, lambda p: load_initial_weights(model, p)):
        with pytest.raises(ValueError, match=r"evil\.pt: refused: it holds Python objects") as info:
            load(evil)
        assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "kind, message",
    [
        ("text", "not a torch file"),
        ("truncated", "not a readable torch file, truncated or corrupt"),
        ("tensor", r"not a crfpose checkpoint \(expected a dict with 'model' and 'config', got a Tensor\)"),
        ("other dict", r"not a crfpose checkpoint \(expected a dict with 'model' and 'config', got a dict with keys \['a'\]\)"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_gives_one_line_naming_it(tmp_path, kind, message):
    path = tmp_path / "model.pt"
    if kind == "text":
        path.write_text("hello, I am a text file\n")
    elif kind == "truncated":
        data = tiny_checkpoint(tmp_path / "full.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        torch.save({"a": 1}, path)
    with pytest.raises(ValueError, match=message) as info:
        load_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_saved_checkpoint_loads_with_weights_only(tmp_path):
    """What train() writes (state dicts, config dict, metrics with numpy values) loads back safely."""
    import numpy as np

    state = torch.load(tiny_checkpoint(tmp_path / "ok.pt"), weights_only=True)
    model, config = load_model(tmp_path / "ok.pt")
    assert config.model.options == {"width": 4, "blocks": 1}
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())
    values = plain({"pck": np.float64(0.5), "per": np.arange(2), "path": tmp_path})
    assert values == {"pck": 0.5, "per": [0, 1], "path": str(tmp_path)} and type(values["pck"]) is float


def test_cli_eval_on_a_bad_checkpoint_prints_one_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    assert main(["eval", str(path), "--data", "synthetic"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and "not a torch file" in err
