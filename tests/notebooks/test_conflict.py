"""Notebook 10 (the conflict chapter): trained live on smoke phantoms, every glued value filled, the tables and
figures written, and the claims chapter's line saved."""

from __future__ import annotations

import pandas as pd

from versemi.companion.conflict import LIMITATION_STATEMENT
from versemi.companion.notebooks import execute_notebooks
from versemi.provenance import REPO_ROOT

from ..notebook_helpers import errors, glued, referenced


def test_conflict_chapter_live_on_smoke(smoke_root, tmp_path):
    params = {"studies_dir": str(tmp_path / "none"), "results_dir": str(smoke_root), "n_boot": 200,
              "data_dir": str(smoke_root / "data"), "progress": False}
    res = execute_notebooks(["10_conflict"], "smoke", params, tmp_path, root=REPO_ROOT)
    assert res[0].status == "ok", res[0].error
    nb = tmp_path / "10_conflict.ipynb"
    assert errors(nb) == []
    values = glued(nb)
    assert referenced(nb) <= set(values)
    base = smoke_root / "smoke" / "10_conflict"
    lines = pd.read_csv(base / "tables" / "conflict_lines.csv")
    assert {"VerSemi (probed)", "Uni-Sup-only (probed)"} == set(lines["method"]) and (lines["kind"] == "cos").any()
    transfer = pd.read_csv(base / "tables" / "transfer.csv")
    assert len(transfer) == 16 and transfer["p_holm"].between(0, 1).all()
    assert set(pd.read_csv(base / "tables" / "pcgrad.csv")["dataset"]) == {"pancreas", "la", "spleen", "lung", "average"}
    limitation = pd.read_csv(base / "tables" / "limitation.csv").iloc[0]
    assert limitation["statement"] == LIMITATION_STATEMENT and limitation["verdict"] in {"supported", "inconclusive",
                                                                                          "contradicted"}
    for fig in ("cosine_matrices", "cosine_trajectories", "transfer", "conflict_vs_transfer"):
        assert (base / "figures" / f"{fig}.png").stat().st_size > 1000, fig


def test_conflict_chapter_with_a_partly_committed_study_says_what_is_missing(smoke_root, tmp_path):
    from versemi.studies import run_study

    studies = tmp_path / "studies"
    run_study("conflict", "smoke", seeds=[2333], out=studies, data_dir=smoke_root / "data",
              runs_root=smoke_root / "runs", labels=["VerSemi 10%"], progress=False)
    params = {"studies_dir": str(studies), "results_dir": str(tmp_path / "res"), "n_boot": 100,
              "data_dir": str(smoke_root / "data")}
    res = execute_notebooks(["10_conflict"], "smoke", params, tmp_path, root=REPO_ROOT)
    assert res[0].status == "ok", res[0].error
    nb = tmp_path / "10_conflict.ipynb"
    values = glued(nb)
    assert referenced(nb) <= set(values) and values["cf_worst_pair"].strip("'") == "n/a"
    text = nb.read_text()
    assert "Not committed yet" in text and "VerSemi (probed)" in text and "No probed run" in text
    limitation = pd.read_csv(tmp_path / "res" / "smoke" / "10_conflict" / "tables" / "limitation.csv").iloc[0]
    assert limitation["verdict"] == "not testable here"
