"""The committed experiment grids, checked as the runner checks them before training (every row's config,
decoders, references, data and test sets) without training anything; and the whole-image LSP grid's
declared design: the protocol, three seeds for every headline comparison, equal budgets on both sides."""

from pathlib import Path

import pytest

from experiments import run as runner

CHECKOUT = Path(__file__).resolve().parents[1]
GRIDS = ["lsp_whole_image.yaml", "lsp_ablation.yaml", "lsp_pilots.yaml"]


@pytest.fixture
def at_checkout(lsp_root, monkeypatch):
    """The grids' relative paths (../shared/data/lsp) are read from the checkout's root, as the runner does."""
    monkeypatch.chdir(CHECKOUT)


def _grid(name: str, variant=None) -> runner.Grid:
    return runner.load_grid(CHECKOUT / "experiments" / name, variant)


@pytest.mark.parametrize("name, variant", [(g, None) for g in GRIDS] + [("lsp_whole_image.yaml", "quick")])
def test_committed_grids_pass_the_runners_check(at_checkout, name, variant):
    runner.check_grid(_grid(name, variant))  # raises a ValueError naming the file and the row


def _epochs(grid: runner.Grid, row: runner.Row) -> int:
    """Training epochs of ``row`` and the rows it starts from, from their configs."""
    total = 0
    for r in [row, *grid.ancestors(row)]:
        t = runner.row_config(grid, r).train
        total += t.stage1_epochs + t.stage2_epochs if t.mode == "separate" else t.epochs
    return total


def test_whole_image_grid_declares_its_protocol_seeds_and_equal_budgets(at_checkout):
    grid = _grid("lsp_whole_image.yaml")
    assert grid.test["options"]["split"] == "test" and grid.test["options"]["box"] == "image"
    e = grid.evaluate
    assert (e["alpha"], e["normalizer"], e["all_joints"], e["flip"]) == (0.2, "torso", True, True)
    config = runner.row_config(grid, grid.row("mse_s0"))
    assert grid.test_set(config).box_protocol == "whole image"
    assert config.data.val["box"] == "image" and config.data.val["split"] == "val"  # validation never sees test
    assert len(grid.averages) >= 8
    for average in grid.averages:
        seeds = []
        for pair in average["pairs"]:
            a, b = (grid.row(name.split("/")[0]) for name in pair)
            seed = {runner.row_config(grid, r).train.seed for r in (a, b)}
            assert len(seed) == 1, f"{average['name']}: {pair} mixes seeds"
            seeds += seed
            if "separate" not in a.name:  # the separate CRF adds its fit on a frozen CNN: compared with that CNN
                assert _epochs(grid, a) == _epochs(grid, b), f"{average['name']}: {pair} has unequal budgets"
        assert sorted(seeds) == [0, 1, 2], average["name"]
    quick = _grid("lsp_whole_image.yaml", "quick")
    for row in quick.rows:
        t = runner.row_config(quick, row).train
        assert (t.stage2_epochs if t.mode == "separate" else t.epochs) == 1, row.name
    assert {r.name.rsplit("_", 1)[0] for r in quick.rows} == {r.name.rsplit("_", 1)[0] for r in grid.rows if r.name.endswith("_s0")}
