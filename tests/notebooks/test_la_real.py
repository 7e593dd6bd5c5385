"""Notebook 08 (the real Left Atrium chapter) without the data: it reads the committed results/la-real."""

from __future__ import annotations

import pandas as pd

from versemi.companion.notebooks import execute_notebooks
from versemi.provenance import REPO_ROOT

from ..notebook_helpers import errors, glued, referenced


def test_la_chapter_renders_the_committed_results(tmp_path):
    res = execute_notebooks(["08_la_real"], "smoke", {}, tmp_path, root=REPO_ROOT)
    assert res[0].status == "ok", res[0].error
    nb = tmp_path / "08_la_real.ipynb"
    assert errors(nb) == []
    values = glued(nb)  # fails on a key glued twice
    assert referenced(nb) <= set(values)
    summary = pd.read_csv(REPO_ROOT / "results" / "la-real" / "summary.csv")
    full = summary[(summary["method"] == "Fully supervised 100%") & summary["grid"].str.startswith("released")]
    assert values["la_dice_full"].strip("'") == f"{100 * full['dice_mean'].iloc[0]:.1f}"
