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
    # the chapter renders the committed la-real study once it has a run, the earlier export before that
    from versemi.companion import la_study

    study = la_study.committed_la_study(REPO_ROOT / "results" / "studies")
    if study is not None:
        ref = la_study.as_la_results(study).released()
        assert "committed `la-real` study" in nb.read_text()
    else:
        summary = pd.read_csv(REPO_ROOT / "results" / "la-real" / "summary.csv")
        ref = summary[summary["grid"].str.startswith("released")].set_index("method")
    assert values["la_dice_full"].strip("'") == f"{100 * ref.loc['Fully supervised 100%', 'dice_mean']:.1f}"


def test_la_chapter_renders_the_committed_study_when_it_has_runs(tmp_path):
    """With committed runs of the la-real study (small fake exports) the page shows them: the intervals over
    seeds and cases, the Holm-corrected comparisons, and says so."""
    from versemi.companion import la_study

    from ..companion.la_exports import write_la_exports

    studies = write_la_exports(tmp_path / "studies")
    res = execute_notebooks(["08_la_real"], "smoke", {"studies_out": str(studies)}, tmp_path / "out", root=REPO_ROOT)
    assert res[0].status == "ok", res[0].error
    nb = tmp_path / "out" / "08_la_real.ipynb"
    assert errors(nb) == []
    values = glued(nb)
    assert referenced(nb) <= set(values)
    text = nb.read_text()
    assert "committed `la-real` study" in text and "p_holm" in text and "95% CI" in text
    study = la_study.committed_la_study(studies)
    ref = la_study.as_la_results(study).released()
    assert values["la_dice_hybrid"].strip("'") == f"{100 * ref.loc['VerSemi hybrid (real LA + phantom CT) 10%', 'dice_mean']:.1f}"
    assert "x0.5 grid" in values["la_grid"]
