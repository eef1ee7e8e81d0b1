"""Temperature scaling of the CRF (crfpose.calibration, the heads' temperature, crfpose calibrate): tempered
marginals against brute-force enumeration of p(x)^(1/T) / Z, the fitted temperature against a dense grid
and against a known over-confidence, the checkpoint and config round trips."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from brute_force import enumerate_scores, random_tree
from tiny_config import TINY_SYNTHETIC

from crfpose.builders import evaluation_dataset, model_from_config
from crfpose.calibration import Potentials, collect_potentials, fit_temperature, tempered_nll
from crfpose.checkpoint import load_checkpoint, load_model, save_checkpoint
from crfpose.cli import main
from crfpose.config import from_dict, load_config, to_dict
from crfpose.crf import TreeCRF
from crfpose.crf.chain import ChainCRF
from crfpose.crf.pairwise import FreePairwise
from crfpose.models import ChainHead, TreeHead
from crfpose.skeletons import LSP14


def tiny_tree(seed: int, k: int = 3, h: int = 3, w: int = 3, radius: int = 1, scale: float = 2.0):
    """A random tree head (a TreeHead on a random tree) and random potentials (B = 2)."""
    g = torch.Generator().manual_seed(seed)
    skeleton = random_tree(k, g)
    unary = scale * torch.randn(2, k, h, w, generator=g, dtype=torch.float64)
    pairwise = scale * torch.randn(k - 1, 2 * radius + 1, 2 * radius + 1, generator=g, dtype=torch.float64)
    return TreeHead(skeleton, FreePairwise(k - 1, radius)), unary, pairwise


def brute_force_tempered(unary, pairwise, skeleton, temperature):
    """Every pose, its probability under p(x)^(1/T) / Z (B, S), and the marginals (B, K, H, W)."""
    poses, scores = enumerate_scores(unary, pairwise, skeleton)
    prob = torch.softmax(scores / temperature, dim=1)  # p^(1/T) / Z: exp(s / T) normalised
    b, k, h, w = unary.shape
    marginals = torch.zeros(b, k, h, w, dtype=torch.float64)
    for j in range(k):
        marginals[:, j].view(b, -1).index_add_(1, poses[:, j, 1] * w + poses[:, j, 0], prob)
    return poses, prob, marginals


def test_temperature_one_leaves_the_distribution_bit_identical():
    head, unary, pairwise = tiny_tree(0)
    plain = TreeCRF(unary, pairwise, head.skeleton)
    ours = head.distribution(unary, pairwise)
    assert head.temperature == 1.0
    assert torch.equal(ours.marginals, plain.marginals) and torch.equal(ours.log_partition, plain.log_partition)
    assert torch.equal(ours.argmax, plain.argmax) and torch.equal(ours.entropy(), plain.entropy())
    head.temperature = 2.5  # and back: nothing is left of it
    head.temperature = 1
    assert torch.equal(head.distribution(unary, pairwise).marginals, plain.marginals)
    chain = ChainCRF(LSP14, 4, 3)
    torch.nn.init.normal_(chain.crf.transitions)
    chain_unary = torch.randn(2, 14, 4, 3)
    assert torch.equal(ChainHead(LSP14, chain).distribution(chain_unary).marginals, chain.distribution(chain_unary).marginals)


@pytest.mark.parametrize("temperature", [0.4, 3.0])
def test_tempered_queries_are_brute_force_enumeration_of_p_to_the_one_over_t(temperature):
    head, unary, pairwise = tiny_tree(1)
    head.temperature = temperature
    crf = head.distribution(unary, pairwise)
    poses, prob, marginals = brute_force_tempered(unary, pairwise, head.skeleton, temperature)
    torch.testing.assert_close(crf.marginals, marginals, rtol=1e-9, atol=1e-12)
    entropy = -(prob * prob.clamp_min(1e-300).log()).sum(1)
    torch.testing.assert_close(crf.entropy(), entropy, rtol=1e-8, atol=1e-10)
    pose = poses[prob.argmax(1)]  # (B, K, 2) the most probable pose, unchanged by T
    assert torch.equal(crf.argmax, pose)
    torch.testing.assert_close(crf.log_prob(pose), prob.max(1).values.log(), rtol=1e-9, atol=1e-10)
    # the fit's NLL of labelled poses is -log p_T(pose), from the same enumeration
    keypoints = torch.cat([pose.double(), torch.full((*pose.shape[:2], 1), 2.0, dtype=torch.float64)], dim=-1)
    nll = tempered_nll(head, [Potentials(unary, pairwise, keypoints)], temperature)
    torch.testing.assert_close(nll, -prob.max(1).values.log(), rtol=1e-9, atol=1e-10)


def test_the_tempered_chain_is_the_chain_of_tempered_scores():
    torch.manual_seed(0)
    chain = ChainCRF(LSP14, 4, 3)
    for p in chain.crf.parameters():
        torch.nn.init.normal_(p)
    unary = torch.randn(2, 14, 4, 3, dtype=torch.float64)
    t = 2.5
    cooled = ChainCRF(LSP14, 4, 3)
    cooled.load_state_dict({k: v / t for k, v in chain.state_dict().items()})
    head = ChainHead(LSP14, chain, temperature=t)
    torch.testing.assert_close(
        head.distribution(unary).marginals, cooled.double().distribution(unary / t).marginals.to(unary), rtol=1e-6, atol=1e-7
    )
    head.distribution(unary.float()).log_partition.sum().backward()  # the chain's own parameters still train
    assert chain.crf.transitions.grad is not None and chain.crf.transitions.grad.abs().sum() > 0


def sampled(seed: int, persons: int, factor: float):
    """Poses sampled from a random tree CRF, with that CRF's potentials multiplied by ``factor``."""
    head, unary, pairwise = tiny_tree(seed, k=4, h=5, w=5, radius=2, scale=1.0)
    torch.manual_seed(seed)
    poses = TreeCRF(unary[:1], pairwise, head.skeleton).sample((persons,))[:, 0]  # (N, K, 2)
    keypoints = torch.cat([poses.double(), torch.full((persons, 4, 1), 2.0, dtype=torch.float64)], dim=-1)
    return head, [Potentials(factor * unary[:1].expand(persons, -1, -1, -1), factor * pairwise, keypoints)]


def test_the_fitted_temperature_is_the_minimum_of_the_nll_over_a_dense_grid():
    head, potentials = sampled(2, 300, 1.7)
    fit = fit_temperature(head, potentials, bounds=(0.25, 20.0), tol=1e-4)
    grid = torch.logspace(math.log10(0.25), math.log10(20.0), 201, dtype=torch.float64)
    nll = torch.stack([tempered_nll(head, potentials, float(t)).mean() for t in grid])
    best = int(nll.argmin())
    assert abs(math.log(fit.temperature) - math.log(float(grid[best]))) <= math.log(float(grid[1] / grid[0]))
    assert fit.fitted <= float(nll[best]) + 1e-9 and fit.fitted < fit.before
    assert fit.before == pytest.approx(float(tempered_nll(head, potentials, 1.0).mean()), rel=1e-12)
    assert (fit.persons, fit.excluded) == (300, 0)


def test_a_model_made_over_confident_gets_its_temperature_back():
    head, potentials = sampled(3, 3000, 3.0)  # the poses follow p; the model says p^3 / Z
    fit = fit_temperature(head, potentials)
    assert fit.temperature == pytest.approx(3.0, rel=0.1)
    honest = fit_temperature(*sampled(3, 3000, 1.0))
    assert honest.temperature == pytest.approx(1.0, rel=0.1)


def test_a_pose_of_probability_zero_is_left_out_of_the_fit_and_counted():
    head, potentials = sampled(4, 50, 1.0)
    keypoints = potentials[0].keypoints.clone()
    keypoints[0, :, :2] = torch.tensor([[0.0, 0.0], [4.0, 4.0], [0.0, 4.0], [4.0, 0.0]])  # displacements of 4 > R = 2
    bad = [Potentials(potentials[0].unary, potentials[0].pairwise, keypoints)]
    assert math.isinf(float(tempered_nll(head, bad, 1.0)[0]))
    fit = fit_temperature(head, bad)
    assert (fit.persons, fit.excluded) == (49, 1) and math.isfinite(fit.fitted)
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(head, potentials, bounds=(2.0, 1.0))


def test_the_temperature_lives_in_the_config_and_an_old_config_reads_as_one():
    config = load_config(None, TINY_SYNTHETIC + ["train.mode=joint"])
    assert config.crf.temperature == 1.0
    old = to_dict(config)
    del old["crf"]["temperature"]  # a config written before the key existed
    assert from_dict(old).crf.temperature == 1.0
    model = model_from_config(from_dict(old))
    assert model.head.temperature == 1.0
    warm = model_from_config(load_config(None, TINY_SYNTHETIC + ["train.mode=joint", "crf.temperature=2.5"]))
    assert warm.head.temperature == 2.5 and list(warm.state_dict()) == list(model.state_dict())  # not a weight
    for bad in ("0", "-1", ".nan"):
        with pytest.raises(ValueError, match="crf.temperature"):
            load_config(None, TINY_SYNTHETIC + ["train.mode=joint", f"crf.temperature={bad}"])
    with pytest.raises(ValueError, match="temperature"):
        model.head.temperature = 0.0


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny synthetic joint-mode checkpoint whose config predates the temperature key."""
    config = load_config(None, TINY_SYNTHETIC + ["train.mode=joint"])
    torch.manual_seed(0)
    model = model_from_config(config)
    saved = to_dict(config)
    del saved["crf"]["temperature"]
    return save_checkpoint(tmp_path / "model.pt", {"model": model.state_dict(), "config": saved, "epoch": 3})


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_calibrate_command_writes_a_new_checkpoint_and_never_touches_the_input(checkpoint, tmp_path, capsys):
    before = digest(checkpoint)
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", str(checkpoint), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert digest(checkpoint) == before
    state = load_checkpoint(out)
    t = state["config"]["crf"]["temperature"]
    assert f"temperature {t:.3f}" in printed and "before: NLL" in printed and "after : NLL" in printed
    assert state["epoch"] == 3 and state["calibration"]["temperature"] == t
    model, config = load_model(out)  # loads strictly into the same model
    assert model.head.temperature == t == config.crf.temperature
    # the fit's potentials are the model's own: refitting on them gives the same temperature
    val = evaluation_dataset(config, config.data.name, model.codec)
    refit = fit_temperature(model.head, collect_potentials(model, val, flip=config.eval.flip_test))
    assert refit.temperature == pytest.approx(t, rel=1e-9) and refit.fitted <= refit.before + 1e-12

    written = digest(out)
    assert main(["calibrate", str(checkpoint), "--out", str(out)]) == 2
    assert "exists already (pass --overwrite" in capsys.readouterr().err and digest(out) == written
    assert main(["calibrate", str(out), "--out", str(out), "--overwrite"]) == 2
    assert "is the input checkpoint" in capsys.readouterr().err and digest(out) == written
    assert main(["calibrate", str(checkpoint), "--out", str(out), "--overwrite", "--device", "cpu"]) == 0
    assert load_checkpoint(out)["config"]["crf"]["temperature"] == pytest.approx(t, rel=1e-9)


def test_a_model_without_a_crf_is_one_clear_line(tmp_path, capsys):
    config = load_config(None, TINY_SYNTHETIC + ["train.mode=unary"])
    path = save_checkpoint(tmp_path / "unary.pt", {"model": model_from_config(config).state_dict(), "config": to_dict(config)})
    assert main(["calibrate", str(path), "--out", str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no CRF (mode 'unary')" in err and str(path) in err
    assert not (tmp_path / "out.pt").exists()


def block_scores(marginals: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """(B, K): the mass of ``marginals`` in the 3 x 3 block around each cell ``at`` (B, K, 2) (x, y), from its definition."""
    padded = torch.nn.functional.pad(marginals, (1, 1, 1, 1))
    x, y = at[..., 0], at[..., 1]
    b, k = x.shape
    return torch.stack(
        [torch.stack([padded[i, j, y[i, j] : y[i, j] + 3, x[i, j] : x[i, j] + 3].sum() for j in range(k)]) for i in range(b)]
    )


def test_a_tempered_model_scores_with_the_tempered_crf_and_places_joints_as_trained():
    torch.manual_seed(3)  # a random model whose tempered marginals move one mode
    model = model_from_config(load_config(None, TINY_SYNTHETIC + ["train.mode=joint"])).eval()
    images = torch.rand(2, 3, 32, 32)
    out = model.outputs(images)
    trained = model.predict(images, ["marginals", "map"])
    model.head.temperature = 2.5
    prediction = model.predict(images, ["marginals", "map"])
    marginals = TreeCRF(out.unary / 2.5, out.pairwise / 2.5, model.skeleton).marginals
    torch.testing.assert_close(prediction.marginals, marginals)
    grid = marginals.shape[-1]
    for decoder in ("marginals", "map"):  # calibration moves no joint; its scores are the tempered CRF's
        torch.testing.assert_close(prediction.keypoints[decoder][..., :2], trained.keypoints[decoder][..., :2])
    cells = {"map": TreeCRF(out.unary, out.pairwise, model.skeleton).argmax}
    index = TreeCRF(out.unary, out.pairwise, model.skeleton).marginals.flatten(2).argmax(-1)
    cells["marginals"] = torch.stack([index % grid, index // grid], dim=-1)
    for decoder, at in cells.items():
        torch.testing.assert_close(prediction.keypoints[decoder][..., 2], block_scores(marginals, at))
    moved = (cells["marginals"] != torch.stack([marginals.flatten(2).argmax(-1) % grid, marginals.flatten(2).argmax(-1) // grid], -1)).any()
    assert moved  # the tempered marginals' own modes differ here: the case the rule is for


def test_a_detector_is_calibrated_at_its_annotated_boxes():
    import numpy as np
    from test_keypoint_rcnn import scene, tiny

    from crfpose.skeletons import COCO17

    model = tiny({"pairwise": "gaussian", "radius": 55}).eval()  # the window covers the grid: every pose is possible
    image, boxes, keypoints = scene(0)
    outputs, grid = model.annotated_outputs({"image": [image], "boxes": [boxes], "keypoints": [keypoints]})
    assert outputs.unary.shape == (2, 17, 56, 56)
    corners = torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)
    torch.testing.assert_close(grid[..., :2], (keypoints[..., :2] - corners[:, None, :2]) * 56 / boxes[:, None, 2:] - 0.5)
    model.head.temperature = 2.0
    given = np.concatenate([boxes.numpy(), np.ones((2, 1), np.float32)], axis=1)
    persons = model.persons({"image": [image], "given_boxes": [given]}, ["marginals"], maps=True)[0]
    torch.testing.assert_close(persons.marginals, TreeCRF(outputs.unary / 2, outputs.pairwise / 2, COCO17).marginals)
    fit = fit_temperature(model.head, [Potentials(outputs.unary, outputs.pairwise, grid)])
    assert fit.persons == 2 and 0.25 <= fit.temperature <= 20 and fit.fitted <= fit.before
