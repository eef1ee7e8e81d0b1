"""Import hygiene: ``import crfpose`` and ``import crfpose.crf`` load nothing beyond torch; the
heavy parts load on first use; ``crfpose.evaluate`` is the module, not the function."""

from __future__ import annotations

import subprocess

import pytest
import sys

pytestmark = pytest.mark.slow  # fresh interpreters in subprocesses

HEAVY = ("pycocotools", "scipy", "PIL", "tqdm", "torchcrf", "matplotlib", "cv2", "yaml", "numpy")


def new_top_level_modules(statement: str) -> set[str]:
    """Top-level packages that ``statement`` imports on top of ``import torch``, in a fresh interpreter."""
    code = (
        "import sys, torch\nbefore = set(sys.modules)\n" + statement + "\n"
        "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_crf_and_package_load_only_torch():
    for statement in ("import crfpose.crf", "import crfpose", "from crfpose import TreeCRF, COCO17"):
        new = new_top_level_modules(statement)
        assert new == {"crfpose"}, (statement, new)


def test_lazy_names_load_on_first_use():
    assert {"torchcrf"} <= new_top_level_modules("from crfpose.crf import ChainCRF")
    new = new_top_level_modules("import crfpose.crf.distribution, crfpose.crf.tree, crfpose.crf.reference")
    assert not new & set(HEAVY)


def test_evaluate_is_the_module_and_its_function_stays_reachable():
    import crfpose
    import crfpose.evaluate as module

    assert crfpose.evaluate is module
    assert crfpose.evaluate.evaluate is crfpose.evaluate_model
    from crfpose import evaluate

    assert evaluate is module
