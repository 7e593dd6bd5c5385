"""Notebook 09 (the budget chapter): learning curves from a committed study, speed tables from the bench CSVs."""

from __future__ import annotations

import pandas as pd

from versemi.companion.notebooks import execute_notebooks
from versemi.provenance import REPO_ROOT
from versemi.studies import run_study

from ..notebook_helpers import errors, glued, referenced


def test_budget_chapter_without_a_curve_study_says_how_to_make_one(tmp_path):
    params = {"studies_dir": str(tmp_path / "none"), "results_dir": str(tmp_path / "res")}
    res = execute_notebooks(["09_budget"], "smoke", params, tmp_path, root=REPO_ROOT)
    assert res[0].status == "ok", res[0].error
    nb = tmp_path / "09_budget.ipynb"
    assert errors(nb) == []
    values = glued(nb)
    assert referenced(nb) <= set(values) and values["budget_curves"].strip("'") == "not committed"
    speed = pd.read_csv(tmp_path / "res" / "smoke" / "09_budget" / "tables" / "train_speed.csv")
    committed = pd.read_csv(REPO_ROOT / "results" / "bench" / "train_speed.csv")
    assert speed["ratio"].tolist() == committed["speedup"].tolist()
    # whole runs before / after (bench/run_speed.py's committed CSV): the table and the glued VerSemi ratio
    runs = pd.read_csv(tmp_path / "res" / "smoke" / "09_budget" / "tables" / "run_speed.csv")
    assert set(runs["run"]) == set(pd.read_csv(REPO_ROOT / "results" / "bench" / "run_speed.csv")["run"])
    assert values["budget_run_speedup_versemi"].strip("'") != "not measured"


def test_budget_chapter_draws_the_committed_learning_curves(smoke_root, tmp_path):
    studies = tmp_path / "studies"
    run_study("curves", "smoke", seeds=[2333], out=studies, data_dir=smoke_root / "data",
              runs_root=smoke_root / "runs", labels=["Fully supervised (la) 100%"], progress=False)
    params = {"studies_dir": str(studies), "results_dir": str(tmp_path / "res")}
    res = execute_notebooks(["09_budget"], "smoke", params, tmp_path, root=REPO_ROOT)
    assert res[0].status == "ok", res[0].error
    assert glued(tmp_path / "09_budget.ipynb")["budget_curves"].strip("'") == "committed"
    base = tmp_path / "res" / "smoke" / "09_budget"
    conv = pd.read_csv(base / "tables" / "convergence.csv")
    assert conv["run"].tolist() == ["Fully supervised (la) 100%"] and (conv["best"] >= conv["best within schedule"]).all()
    assert (base / "figures" / "learning_curves.png").stat().st_size > 1000
