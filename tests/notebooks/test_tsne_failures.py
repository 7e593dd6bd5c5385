"""Notebooks 05 (t-SNE) and 06 (failure cases) execute in the smoke profile and write their outputs.

The runs they need (VerSemi, Uni-Sup-only, VerSemi w/o L_aux; 6 steps each in smoke) come from the
session's run cache: trained by whichever test asks first.
"""

import json

import nbformat
import pandas as pd
import pytest

from versemi.companion.notebooks import ROOT, declared_parameters, execute_notebooks

from ..notebook_helpers import glued, referenced


@pytest.fixture(scope="module")
def executed(smoke_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("executed")
    results = execute_notebooks(["05_tsne", "06_failures"], "smoke", None, out,
                                results_dir=smoke_root, data_dir=smoke_root / "data", quiet=True)
    return {r.name: r for r in results}


def test_sources_have_one_parameters_cell_and_no_outputs():
    for name in ("05_tsne", "06_failures"):
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
        for p in ("profile", "data_dir", "results_dir", "seed", "device", "ratio"):
            assert p in declared_parameters(ROOT / "notebooks" / f"{name}.ipynb")


def test_tsne_notebook(executed, smoke_root):
    r = executed["05_tsne"]
    assert r.ok, r.error
    out = smoke_root / "smoke" / "05_tsne"
    scores = pd.read_csv(out / "tables" / "silhouette.csv")
    assert set(scores["model"]) == {"VerSemi 10%", "Uni-Sup-only 10%"}
    assert set(scores["space"]) == {"t-SNE 2-D", "features (standardised)"}
    assert scores["silhouette"].between(-1, 1).all()
    emb = pd.read_csv(out / "tables" / "tsne_embedding.csv")
    assert emb.groupby(["model", "feature"]).size().eq(8).all()  # 8 smoke test volumes
    assert (out / "figures" / "tsne.png").stat().st_size > 1000
    keys = set(glued(r.output))
    assert {"n_volumes", "sil_tsne_global_versemi", "sil_tsne_global_baseline", "sil_raw_decoder_versemi",
            "verdict_tsne_global", "data_note"} <= keys
    assert referenced(ROOT / "notebooks" / "05_tsne.ipynb") <= keys


def test_failures_notebook(executed, smoke_root):
    r = executed["06_failures"]
    assert r.ok, r.error
    out = smoke_root / "smoke" / "06_failures"
    fid = pd.read_csv(out / "tables" / "prompt_fidelity_cases.csv")
    assert set(fid["model"]) == {"VerSemi (full)", "w/o L_aux"}
    assert len(fid) == 2 * 8 * 5  # models x test volumes x prompts
    # both runs are trained on the four datasets: prompt 5 asks for the union of the four targets
    assert (fid.loc[fid["prompt"] == 5, "structure"] == "pancreas+left_atrium+spleen+tumour").all()
    for stem in ("dice", "fp_voxels"):
        for slug in ("versemi_full", "w_o_l_aux", "difference"):
            m = pd.read_csv(out / "tables" / f"{stem}_{slug}.csv", index_col=0)
            assert list(m.index) == ["pancreas", "la", "spleen", "lung"] and m.shape[1] == 5
    summary = pd.read_csv(out / "tables" / "summary.csv", index_col=0)
    assert list(summary.index) == ["VerSemi (full)", "w/o L_aux"]
    assert (out / "tables" / "worst_cases.csv").is_file()
    for fig in ("fidelity_dice", "fidelity_fp", "fidelity_difference", "gallery_full", "gallery_no_laux"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
    keys = set(glued(r.output))
    assert {"offtarget_fp_voxels_full", "offtarget_fp_voxels_nolaux", "own_dice_full", "own_dice_nolaux",
            "fp_verdict", "n_volumes"} <= keys
    assert referenced(ROOT / "notebooks" / "06_failures.ipynb") <= keys
    prov = json.loads((r.output.parent / "run_summary.json").read_text())
    assert prov
