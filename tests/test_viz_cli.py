"""``crfpose viz``: the figure set of a checkpoint trained here, the --log and --results forms, errors."""

import json

import pytest

from crfpose.cli import build_parser, main
from crfpose.config import load_config, save_config
from tiny_config import TINY_SYNTHETIC

pytestmark = pytest.mark.slow  # trains or runs subprocesses: the full suite, not the fast tier

CHECKPOINT_FIGURES = {"overlays", "heatmaps", "heatmaps_top", "pairwise", "deformation", "samples", "pck_curves", "joint_pck", "training"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CNN + tree CRF trained on synthetic figures (seconds), its run folder and two eval results."""
    tmp = tmp_path_factory.mktemp("viz_cli")
    config = load_config(
        None,
        [
            "train.mode=separate",
            f"output_dir={tmp / 'run'}",
            *TINY_SYNTHETIC,
            "data.train={length: 8, seed: 0}",
            "data.val={length: 4, seed: 1}",
            "train.batch_size=4",
            "train.stage1_epochs=1",
            "train.stage2_epochs=1",
            "eval.every=1",
        ],
    )
    assert main(["train", str(save_config(config, tmp / "tiny.yaml"))]) == 0
    for name, decoder in (("crf", "marginals"), ("cnn", "unary")):
        assert (
            main(["eval", str(tmp / "run" / "best.pt"), "--data", "synthetic", "--decoder", decoder, "--out", str(tmp / f"{name}.json")])
            == 0
        )
    return tmp


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["viz", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    sub = build_parser()._subparsers._group_actions[0].choices["viz"]
    for action in sub._actions:
        assert action.help, action.dest
        for flag in action.option_strings:
            assert flag in text


def test_checkpoint_figure_set(trained, tmp_path, capsys):
    out = tmp_path / "figs"
    assert (
        main(
            [
                "viz",
                str(trained / "run" / "best.pt"),
                "--data",
                "synthetic",
                "--set",
                "length=6",
                "--num",
                "3",
                "--format",
                "svg",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    written = {p.stem for p in out.iterdir()}
    assert written == CHECKPOINT_FIGURES and all(p.suffix == ".svg" for p in out.iterdir())
    captured = capsys.readouterr()
    assert sorted(captured.out.split()) == sorted(str(out / f"{name}.svg") for name in CHECKPOINT_FIGURES)
    assert "crfpose viz: overlays: examples shown: " in captured.err  # the gallery's selection rule, for the caption
    overlays = (out / "overlays.svg").read_text()
    assert overlays.count(">mean error ") == 2 * 3 and ">CNN + CRF<" in overlays  # --num rows, an error under each prediction
    assert ">neck → head top<" in (out / "pairwise.svg").read_text()  # lsp14 edge titles: parent → child


def test_log_and_results_forms(trained, tmp_path, capsys):
    out = tmp_path / "figs"
    assert (
        main(
            [
                "viz",
                "--log",
                str(trained / "run" / "log.jsonl"),
                "--results",
                str(trained / "crf.json"),
                str(trained / "cnn.json"),
                "--labels",
                "CNN + CRF",
                "CNN",
                "--format",
                "pdf",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["compare_joint_pck.pdf", "compare_pck_curves.pdf", "training.pdf"]
    assert all(p.read_bytes().startswith(b"%PDF-") for p in out.iterdir())
    result = json.loads((trained / "crf.json").read_text())
    assert len(result["pck_curve"]["alphas"]) == len(result["pck_curve"]["mean"]) == 51


def test_errors_exit_with_status_2(trained, tmp_path, capsys):
    assert main(["viz", "--out", str(tmp_path)]) == 2
    assert "expected CHECKPOINT (with --data), --log or --results" in capsys.readouterr().err
    assert main(["viz", str(trained / "run" / "best.pt"), "--out", str(tmp_path)]) == 2
    assert "--data: expected a dataset name with CHECKPOINT" in capsys.readouterr().err
    assert main(["viz", "--results", str(trained / "crf.json"), "--labels", "A", "B", "--out", str(tmp_path)]) == 2
    assert "--labels: expected 1 labels" in capsys.readouterr().err
    assert main(["viz", "--results", str(tmp_path / "none.json"), "--out", str(tmp_path)]) == 2
    assert "--results: file not found" in capsys.readouterr().err
    assert main(["viz", "--log", str(tmp_path / "log.jsonl"), "--out", str(tmp_path)]) == 2
    assert "log: file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["viz", "--log", "x", "--format", "jpg", "--out", str(tmp_path)])


def test_checkpoint_figures_of_the_chain_baseline(tmp_path):
    """A chain checkpoint (crf.structure=chain) gets the heatmaps-vs-marginals figures and no tree tables."""
    config = load_config(
        None,
        [
            "train.mode=joint",
            "crf.structure=chain",
            "crf.cell=2",
            f"output_dir={tmp_path / 'run'}",
            *TINY_SYNTHETIC,
            "data.train={length: 8, seed: 0}",
            "data.val={length: 4, seed: 1}",
            "train.batch_size=4",
            "train.epochs=1",
            "eval.every=0",
            "eval.decoder=marginals",
        ],
    )
    assert main(["train", str(save_config(config, tmp_path / "chain.yaml"))]) == 0
    out = tmp_path / "figs"
    checkpoint = str(tmp_path / "run" / "last.pt")
    assert main(["viz", checkpoint, "--data", "synthetic", "--set", "length=4", "--num", "2", "--out", str(out)]) == 0
    assert {p.stem for p in out.iterdir()} == CHECKPOINT_FIGURES - {"pairwise", "deformation", "samples"}
