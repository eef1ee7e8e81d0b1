"""Config: YAML round trip, overrides, and the errors that name the key."""

from pathlib import Path

import pytest
import yaml

from crfpose.config import MODES, Config, from_dict, load_config, save_config, to_dict

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "crfpose" / "configs").glob("*.yaml"))


def test_defaults_round_trip_through_yaml(tmp_path):
    config = load_config(None, ["optim.lr=1e-2", "train.mode=joint", "data.input_size=[32, 48]"])
    path = save_config(config, tmp_path / "sub" / "c.yaml")
    again = load_config(path)
    assert again == config
    assert again.optim.lr == 0.01 and again.train.mode == "joint" and again.data.input_size == [32, 48]
    assert from_dict(to_dict(config)) == config
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temp file


def test_overrides_parse_yaml_values_and_extend_option_dicts(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"batch_size": 8}, "model": {"name": "cnn", "options": {"width": 8}}}))
    config = load_config(
        path, ["model.options.depth=1", "data.train.root=/x", "eval.flip_test=true", "train.grad_clip=null", "optim.crf_lr=0.5"]
    )
    assert config.train.batch_size == 8
    assert config.model.options == {"width": 8, "depth": 1}
    assert config.data.train["root"] == "/x" and config.eval.flip_test is True
    assert config.train.grad_clip is None and config.optim.crf_lr == 0.5
    assert Config().train.batch_size == 32  # defaults untouched


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["optim.foo=1"], r"optim\.foo: unknown key.*valid keys.*'lr'"),
        (["nope.lr=1"], r"nope: unknown section.*valid keys"),
        (["optim.lr=fast"], r"optim\.lr: expected float, got str"),
        (["train.batch_size=2.5"], r"train\.batch_size: expected int, got float"),
        (["train.amp=1"], r"train\.amp: expected bool, got int"),
        (["train.mode=both"], r"train\.mode: expected one of \('unary', 'separate', 'joint'\)"),
        (["crf.pairwise=spline"], r"crf\.pairwise: expected one of .*'gaussian'"),
        (["schedule.name=linear"], r"schedule\.name: expected one of \('step', 'cosine'\)"),
        (["train.epochs=-1"], r"train\.epochs: expected an int >= 0, got -1"),
        (["train.batch_size=0"], r"train\.batch_size: expected an int >= 1"),
        (["optim.lr=0"], r"optim\.lr: expected a positive float"),
        (["crf.radius=-1"], r"crf\.radius: expected an int >= 0, got -1"),
        (["data.input_size=[64]"], r"data\.input_size: expected \[W, H\]"),
        (["model=3"], r"model: expected a mapping of ModelConfig"),
        (["optim.lr"], r"overrides: expected 'key\.sub=value'"),
        (["model.options={width: 8"], r"model\.options: cannot parse the value of override"),
    ],
)
def test_bad_values_name_the_key(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, overrides)


def test_unknown_key_in_yaml_names_its_dotted_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("eval:\n  flip: true\n")
    with pytest.raises(ValueError, match=r"eval\.flip: unknown key; valid keys of eval\.: \[.*'flip_test'"):
        load_config(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="path: .* must hold a YAML mapping, got list"):
        load_config(path)
    with pytest.raises(ValueError, match="path: no config file .*shipped configs, usable by name: .*synthetic_separate"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="config: expected a mapping"):
        from_dict([1])


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.output_dir.startswith("runs/")
    named = path.stem.rsplit("_", 1)[-1]  # e.g. synthetic_joint; a grid's base config (lsp_cnn) names none
    assert config.train.mode == named or named not in MODES


def test_shipped_configs_load_by_name_from_anywhere(tmp_path, monkeypatch):
    from crfpose.config import shipped_configs

    monkeypatch.chdir(tmp_path)  # not the checkout: the configs ship inside the package
    assert "synthetic_separate" in shipped_configs()
    for name in ("synthetic_separate", "synthetic_separate.yaml"):
        assert load_config(name).train.mode == "separate"
    (tmp_path / "synthetic_separate.yaml").write_text("train: {mode: joint}\n")
    assert load_config("synthetic_separate.yaml").train.mode == "joint"  # a file of that name comes first
