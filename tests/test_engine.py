"""Training engine on tiny synthetic configs: each mode lowers its loss, separate stage 2 leaves the
backbone bit-identical, resume is exact, a NaN loss stops the run and keeps the last good checkpoint."""

import json
import math

import pytest
import torch

from crfpose import engine
from crfpose.models import pose_model
from crfpose.builders import make_dataset, model_from_config
from crfpose.checkpoint import load_checkpoint, load_initial_weights, load_model
from crfpose.codec import input_to_heatmap
from crfpose.config import load_config
from crfpose.crf import GaussianPairwise
from crfpose.crf.chain import ChainCRF
from crfpose.engine import NonFiniteLoss, plan_stages, train
from tiny_config import TINY_SYNTHETIC


def tiny(tmp_path, mode, *extra):
    """A config that trains in well under a second per epoch: 16 synthetic 32x32 figures, 8x8 grid."""
    return load_config(
        None,
        [
            f"train.mode={mode}",
            f"output_dir={tmp_path}",
            *TINY_SYNTHETIC,
            "train.batch_size=8",
            "train.epochs=2",
            "train.stage1_epochs=1",
            "train.stage2_epochs=1",
            "optim.lr=1e-2",
            "schedule.warmup_epochs=0.5",
            f"eval.decoder={'unary' if mode == 'unary' else 'marginals'}",
            *extra,
        ],
    )


def weights(path):
    return load_checkpoint(path)["model"]


@pytest.mark.parametrize(
    "mode, extra",
    [
        ("unary", ["train.epochs=4"]),
        ("separate", ["train.stage1_epochs=4", "train.stage2_epochs=4", "optim.crf_lr=0.1"]),
        ("joint", ["train.epochs=4", "train.mse_weight=10.0", "train.grad_clip=5.0"]),
    ],
)
def test_each_mode_lowers_its_loss(tmp_path, mode, extra):
    result = train(tiny(tmp_path, mode, *extra))
    for stage in {r["stage"] for r in result["history"]}:
        losses = [r["loss"] for r in result["history"] if r["stage"] == stage]
        assert losses[-1] < losses[0], (stage, losses)
    assert [r["stage"] for r in result["history"]] == [s.name for s in plan_stages(tiny(tmp_path, mode, *extra)) for _ in range(s.epochs)]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log] == [r["loss"] for r in result["history"]]
    assert all("val" in r and 0 <= r["val"]["pck"] <= 1 for r in log)
    assert result["last"].is_file() and result["best"].is_file() and (tmp_path / "config.yaml").is_file()
    model, config = load_model(result["last"])
    assert config.train.mode == mode and (model.head is not None) == (mode != "unary")


def test_separate_stage2_leaves_the_backbone_bit_identical(tmp_path):
    config = tiny(tmp_path, "separate", "optim.crf_lr=0.1")
    train(config, max_epochs=1)  # stage 1 only
    stage1 = load_checkpoint(tmp_path / "last.pt")
    assert stage1["stage_name"] == "heatmap" and (tmp_path / "stage1_heatmap.pt").is_file()
    train(config, resume=tmp_path / "last.pt")
    stage2 = load_checkpoint(tmp_path / "last.pt")
    assert stage2["stage_name"] == "crf"
    backbone = [k for k in stage1["model"] if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)  # BN statistics are compared too
    for key in backbone:
        assert torch.equal(stage1["model"][key], stage2["model"][key]), key
    for key in ("head.unary.log_scale", "head.pairwise.mean", "head.pairwise.log_diag"):
        assert not torch.equal(stage1["model"][key], stage2["model"][key]), key


def test_separate_crf_stage_can_fit_on_the_held_out_split(tmp_path):
    config = tiny(tmp_path, "separate", "crf.fit_split=val", "data.val={length: 4, seed: 1}")
    result = train(config)
    stages = [r for r in result["history"] if r["stage"] == "crf"]
    assert stages and all(r["images_per_s"] > 0 for r in stages)
    trainer = engine._Trainer(config, engine._context(config), tmp_path, model_from_config(config))
    crf_stage = plan_stages(config)[1]
    assert len(trainer.dataset(crf_stage)) == 4 and len(trainer.dataset(plan_stages(config)[0])) == 16


def test_crf_stage_starts_from_displacement_statistics(tmp_path):
    config = tiny(tmp_path, "joint")
    model = model_from_config(config)
    used = engine.init_pairwise_from_data(model, config)
    dataset = make_dataset(config, "train", train=False, codec=model.codec)
    keypoints = torch.stack([dataset[i]["keypoints"] for i in range(len(dataset))])
    grid = input_to_heatmap(keypoints, 4.0)  # 32 px input over an 8-cell grid
    expected = GaussianPairwise.from_keypoints(grid, model.skeleton, 3)
    assert used == 16
    pairwise = model.head.pairwise
    assert torch.allclose(pairwise.mean, expected.mean) and torch.allclose(pairwise.precision, expected.precision)


def test_resume_continues_exactly(tmp_path):
    extra = ("train.mse_weight=1.0", "train.grad_clip=1.0", "eval.every=1")
    straight = train(tiny(tmp_path / "a", "joint", *extra))
    train(tiny(tmp_path / "b", "joint", *extra), max_epochs=1)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    with open(tmp_path / "b" / "log.jsonl", "a") as f:  # an epoch logged after the checkpoint, then lost
        f.write(json.dumps({"global_epoch": 2, "loss": -1.0}) + "\n")
    resumed = train(tiny(tmp_path / "b", "joint", *extra), resume=tmp_path / "b" / "last.pt")
    a, b = load_checkpoint(straight["last"]), load_checkpoint(resumed["last"])
    assert a["epoch"] == b["epoch"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["scheduler"] == b["scheduler"]
    log_a = (tmp_path / "a" / "log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["loss"] for r in log_a] == [json.loads(r)["loss"] for r in log_b]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = pose_model.heatmap_mse

    def poisoned(*args, **kwargs):  # two steps per epoch: epoch 2 goes NaN
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * math.nan if calls["n"] > 2 else loss

    monkeypatch.setattr(pose_model, "heatmap_mse", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"training loss is nan at heatmap epoch 2/2, step 0.*last\.pt"):
        train(tiny(tmp_path, "unary", "train.epochs=2"))
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1


def test_joint_can_start_from_a_unary_checkpoint(tmp_path):
    unary = train(tiny(tmp_path / "u", "unary", "train.epochs=1"))
    config = tiny(tmp_path / "j", "joint", f"train.init_checkpoint={unary['last']}")
    model = model_from_config(config)
    assert load_initial_weights(model, config.train.init_checkpoint) is False  # backbone only: pairwise from data
    for key, value in weights(unary["last"]).items():
        assert torch.equal(model.state_dict()[key], value)


def test_unary_can_continue_from_a_crf_checkpoint_backbone(tmp_path):
    first = train(tiny(tmp_path / "a", "separate"))
    result = train(tiny(tmp_path / "b", "unary", "train.epochs=1", f"train.init_checkpoint={first['last']}", "optim.lr=1e-12"))
    before, after = load_checkpoint(first["last"])["model"], load_checkpoint(result["last"])["model"]
    key = "backbone.final_layer.weight"
    assert torch.allclose(before[key], after[key], atol=1e-8)  # loaded, then (almost) not moved


def test_joint_with_another_pairwise_takes_backbone_and_unary_of_the_init_checkpoint(tmp_path):
    first = train(tiny(tmp_path / "a", "separate"))
    config = tiny(tmp_path / "b", "joint", "crf.pairwise=flat", "crf.radius=7", f"train.init_checkpoint={first['last']}")
    model = model_from_config(config)
    assert load_initial_weights(model, first["last"]) is False  # its Gaussian pairwise does not fit a flat one
    before = load_checkpoint(first["last"])["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # everything but the pairwise came from the checkpoint
    bad = {k.removeprefix("backbone."): v for k, v in before.items() if k.startswith("backbone.") and "final_layer" not in k}
    torch.save(bad, tmp_path / "bad.pt")  # a bare backbone state dict without its last layer
    with pytest.raises(ValueError, match=r"its backbone does not fit this model \(missing or reshaped: \['backbone.final_layer"):
        load_initial_weights(model_from_config(config), tmp_path / "bad.pt")


def test_joint_from_a_stage1_checkpoint_still_fits_the_pairwise(tmp_path):
    """A separate run's stage-1 checkpoint holds a CRF model whose pairwise never trained: joint
    training from it must fit the pairwise to the data, while a finished CRF stage counts as fitted."""
    separate = tiny(tmp_path / "s", "separate")
    train(separate)
    config = tiny(tmp_path / "j", "joint", f"train.init_checkpoint={tmp_path / 's' / 'stage1_heatmap.pt'}")
    assert load_initial_weights(model_from_config(config), config.train.init_checkpoint) is False
    assert load_initial_weights(model_from_config(config), str(tmp_path / "s" / "last.pt")) is True


def test_errors(tmp_path):
    with pytest.raises(TypeError, match="config: expected a crfpose.config.Config"):
        train({"train": {}})
    with pytest.raises(ValueError, match="checkpoint: file not found"):
        load_checkpoint(tmp_path / "none.pt")
    with pytest.raises(
        ValueError,
        match=r"data\.train: unknown option 'lenght'; valid options of dataset "
        r"'synthetic': \[.*'length', 'seed'",
    ):
        train(tiny(tmp_path, "unary", "data.train.lenght=1"))
    train(tiny(tmp_path / "u", "unary", "train.epochs=1"))
    with pytest.raises(ValueError, match="resume: checkpoint is a 'unary' run, config.train.mode is 'joint'"):
        train(tiny(tmp_path / "u", "joint"), resume=tmp_path / "u" / "last.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for machines without CUDA")
def test_cuda_requested_without_cuda(tmp_path):
    with pytest.raises(ValueError, match="train.device: 'cuda' requested but CUDA is not available"):
        train(tiny(tmp_path, "unary", "train.device=cuda"))


def test_dataset_skeleton_must_match(lsp_root, tmp_path):
    config = tiny(tmp_path, "unary", "skeleton=coco17", "data.name=lsp", f"data.train={{root: '{lsp_root}'}}")
    with pytest.raises(ValueError, match="skeleton: dataset 'lsp' has skeleton 'lsp14', config says 'coco17'"):
        make_dataset(config, "train", train=False, codec=model_from_config(config).codec)


def test_stall_messages_name_the_cause():
    from crfpose.engine import stall_message

    assert stall_message({"stage": "heatmap", "val": {"pck": 0.01}, "peak": 0.5}, 2) is None  # too early to tell
    assert "validation PCK is 1.0% after 3 epochs" in stall_message({"stage": "heatmap", "val": {"pck": 0.01}}, 3)
    assert "collapsing to zero" in stall_message({"stage": "heatmap", "peak": 0.01}, 4)
    assert stall_message({"stage": "heatmap", "val": {"pck": 0.3}, "peak": 0.6}, 9) is None


def test_a_run_that_does_not_learn_warns_once(tmp_path):
    config = tiny(tmp_path, "unary", "train.epochs=4", "optim.lr=1e-12", "schedule.warmup_epochs=0")
    with pytest.warns(engine.TrainingStalled, match="after 3 epochs"):
        result = train(config)
    assert sum("stalled" in r for r in result["history"]) == 1
    assert all(r["peak"] < 0.05 for r in result["history"])  # the near-zero initial maps never grew


def test_chain_baseline_trains_end_to_end_and_reloads(tmp_path):
    """crf.structure=chain: the pytorch-crf baseline starts from the data (finite transitions peaked at the
    mean chain displacement), lowers its loss and comes back from its checkpoint as the same model."""
    config = tiny(tmp_path, "joint", "crf.structure=chain", "crf.cell=2", "train.epochs=3")
    result = train(config)
    losses = [r["loss"] for r in result["history"]]
    assert losses[-1] < losses[0], losses
    model, loaded = load_model(result["last"])
    assert isinstance(model.head.chain, ChainCRF) and loaded.crf.structure == "chain" and model.head.chain.num_tags == 16
    transitions = model.head.chain.crf.transitions
    assert torch.isfinite(transitions).all() and transitions.std() > 0
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    again, _ = load_model(result["last"])
    again.eval()
    points, other = model.predict(images, ["marginals", "map"]).keypoints, again.predict(images, ["marginals", "map"]).keypoints
    for decoder in ("marginals", "map"):
        assert points[decoder].shape == (2, 14, 3) and torch.equal(points[decoder], other[decoder])


@pytest.mark.slow
def test_axis_gaussian_trains_from_statistics_with_a_map_decoder_and_reloads_axis_aligned(tmp_path):
    config = tiny(tmp_path, "joint", "crf.pairwise=axis_gaussian", "eval.decoder=map")
    train(config)
    model, loaded = load_model(tmp_path / "last.pt")
    pairwise = model.head.pairwise
    assert loaded.crf.pairwise == "axis_gaussian" and pairwise.axis_aligned
    assert torch.equal(pairwise.off_diag, torch.zeros_like(pairwise.off_diag))
    # started from the data's per-axis variances, then trained: the diagonal moved, no correlation appeared
    assert pairwise.precision[:, 0, 1].abs().max() == 0 and pairwise.log_diag.abs().max() > 0
