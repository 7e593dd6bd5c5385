"""The data, training and explorer notebooks (01_data, 02_train, 07_explorer) executed with papermill on
the smoke profile, plus the live explorer on the trained run (versemi.companion.widgets).

The notebooks share the session's smoke root (prepared phantoms, run cache ``<root>/runs``), so the
VerSemi and Uni-UA-MT smoke runs are trained once (by 02_train) and reused by 07_explorer.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from versemi.companion import widgets as X
from versemi.companion.notebooks import execute_notebooks
from versemi.experiments import sota_configs
from versemi.runs import run_dir_for

from ..notebook_helpers import errors, glued

NAMES = ("01_data", "02_train", "07_explorer")
N_SLICES = 4  # slices per case in the static explorers (the book uses 9; fewer keeps the test quick)
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _csv(path: Path, columns) -> pd.DataFrame:
    assert path.is_file(), path
    df = pd.read_csv(path)
    assert len(df) > 0, path
    missing = set(columns) - set(df.columns)
    assert not missing, f"{path.name}: missing columns {missing}"
    return df


def _png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1024, path


@pytest.fixture(scope="module")
def executed(smoke_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("executed")
    results = execute_notebooks(list(NAMES), "smoke", {"n_slices": N_SLICES}, out_dir=out, results_dir=smoke_root,
                                data_dir=smoke_root / "data", quiet=True)
    return {r.name: r for r in results}, out, smoke_root


def test_notebooks_run_ok(executed):
    results, out, _ = executed
    for name in NAMES:
        r = results[name]
        assert r.ok, f"{name}: {r.error}"
        nb = nbformat.read(out / f"{name}.ipynb", as_version=4)
        assert not errors(nb), name
        assert nb.metadata["papermill"]["parameters"]["profile"] == "smoke"


def test_data_notebook_outputs(executed, smoke_root):
    _, out, root = executed
    base = root / "smoke" / "01_data"
    prep = _csv(base / "tables" / "preprocessing.csv", ["dataset", "modality", "intensity", "target spacing (mm)",
                                                         "crop", "min size (voxels)"])
    assert list(prep["dataset"]) == ["pancreas", "la", "spleen", "lung"]
    assert prep.set_index("dataset").loc["lung", "intensity"].startswith("clip HU to [-1000, 400]")
    splits = _csv(base / "tables" / "splits.csv", ["dataset", "ratio (%)", "labeled", "unlabeled", "val", "test",
                                                    "complete", "authors labeled"])
    assert sorted(splits["ratio (%)"].unique()) == [10, 20] and len(splits) == 8
    assert not splits["complete"].any()  # the smoke phantoms hold only part of the authors' lists
    manifest = json.loads((smoke_root / "data" / "smoke" / "prepared" / "manifest.json").read_text())
    sp = manifest["datasets"]["spleen"]["splits"]["10"]
    row = splits[(splits["dataset"] == "spleen") & (splits["ratio (%)"] == 10)].iloc[0]
    assert (row["labeled"], row["unlabeled"], row["test"]) == (len(sp["labeled"]), len(sp["unlabeled"]),
                                                               len(sp["test"]))
    cases = _csv(base / "tables" / "cases.csv", ["dataset", "case", "shape", "mean", "p99", "has_spleen"])
    assert len(cases) == sum(len(e["cases"]) for e in manifest["datasets"].values())
    _csv(base / "tables" / "dataset_stats.csv", ["dataset", "cases", "shape min", "intensity mean"])
    hidden = _csv(base / "tables" / "hidden_structures.csv", ["dataset", "pancreas", "spleen", "tumour",
                                                              "left_atrium"]).set_index("dataset")
    assert hidden.loc["pancreas", "spleen"] > 0 and hidden.loc["la", "left_atrium"] == 1.0
    for fig in ("mid_slices", "intensity_histograms", "hidden_labels"):
        _png(base / "figures" / f"{fig}.png")
    shift = pd.read_csv(base / "tables" / "site_shift.csv").set_index("quantity")   # the unseen site, in numbers
    assert shift.loc["slice thickness (mm)", "unseen site"] > shift.loc["slice thickness (mm)", "MSD Spleen"]
    nb = nbformat.read(out / "01_data.ipynb", as_version=4)
    keys = set(glued(nb))
    assert {"data_source", "n_cases", "n_cases_pancreas", "n_labeled_10", "n_unlabeled_20",
            "pancreas_with_spleen", "unseen_site_note"} <= keys
    pngs = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) == 3


def test_train_notebook_outputs(executed):
    _, out, root = executed
    base = root / "smoke" / "02_train"
    cfg = _csv(base / "tables" / "versemi_config.csv", ["setting", "value"]).set_index("setting")["value"]
    assert cfg["method"] == "versemi" and cfg["profile"] == "smoke"
    tests = _csv(base / "tables" / "test_dice.csv", ["method", "dataset", "dice", "hd95", "train seconds"])
    assert set(tests["method"]) == {"VerSemi 10%"}   # the EMA section's Uni-UA-MT: committed or live (smoke: live)
    assert set(tests["dataset"]) == {"pancreas", "la", "spleen", "lung"}
    _csv(base / "tables" / "versemi_val.csv", ["step", "dataset", "dice", "model"])
    ema = _csv(base / "tables" / "ema_vs_student.csv", ["step", "dataset", "student", "ema", "ema - student"])
    assert np.allclose(ema["ema"] - ema["student"], ema["ema - student"])
    for fig in ("loss_curves", "val_dice", "ema_vs_student"):
        _png(base / "figures" / f"{fig}.png")
    # the runs are the SOTA group's: same folders as sota_configs would give
    configs = sota_configs("smoke", 10, 2333)
    prepared = root / "data" / "smoke" / "prepared"
    for label in ("VerSemi 10%", "Uni-UA-MT 10%"):
        assert (run_dir_for(configs[label], prepared, root / "runs") / "DONE.json").is_file(), label
    keys = set(glued(out / "02_train.ipynb"))
    assert {"train_seconds_versemi", "train_seconds_uamt", "test_dice_mean", "test_dice_spleen",
            "ema_minus_student_last", "n_steps"} <= keys


def test_explorer_notebook_saves_widget_state(executed):
    _, out, root = executed
    base = root / "smoke" / "07_explorer"
    scores = _csv(base / "tables" / "prompt_scores.csv", ["dataset", "case", "prompt", "own prompt",
                                                          "predicted voxels", "truth voxels", "dice"])
    assert len(scores) == 4 * 5 and sorted(scores["prompt"].unique()) == [1, 2, 3, 4, 5]
    _png(base / "figures" / "prompt_grid.png")
    nb = nbformat.read(out / "07_explorer.ipynb", as_version=4)
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    by_model: dict[str, list] = {}
    for mid, m in state.items():
        by_model.setdefault(m["model_name"], []).append((mid, m["state"]))
    assert len(by_model["TabModel"]) == 1
    prepared = root / "data" / "smoke" / "prepared"
    shapes = [cs[0]["image"].shape for cs in X.explorer_cases(prepared, split="test").values()]
    # per case: 5 prompts x the three planes' slices; one stack per (prompt, plane) plus the prompt stack
    assert len(by_model["ImageModel"]) == 5 * sum(len(X.slice_indices(n, N_SLICES)) for sh in shapes for n in sh)
    assert len(by_model["StackModel"]) == 4 * (5 * 3 + 1)
    links = [s for _, s in by_model["LinkModel"]]
    assert len(links) == 4 * (5 * 3 + 1)
    kinds = {mid: m["model_name"] for mid, m in state.items()}
    for link in links:
        (src, src_attr), (dst, dst_attr) = link["source"], link["target"]
        src_id, dst_id = src.replace("IPY_MODEL_", ""), dst.replace("IPY_MODEL_", "")
        assert kinds[src_id] in ("IntSliderModel", "ToggleButtonsModel") and kinds[dst_id] == "StackModel"
        assert (src_attr, dst_attr) in (("value", "selected_index"), ("index", "selected_index"))
    views = [o for c in nb.cells for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1
    assert views[0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] in state
    keys = set(glued(nb))
    assert {"n_explorer_cases", "own_prompt_dice", "absent_prompt_voxels"} <= keys


def test_changed_parameter_changes_the_split_table(executed, tmp_path):
    """Re-execute 01_data with ratios=[20] (same prepared data, another results folder): its split table
    holds only the 20% rows, identical to those of the first execution."""
    _, _, root = executed
    before = pd.read_csv(root / "smoke" / "01_data" / "tables" / "splits.csv")
    [r] = execute_notebooks(["01_data"], "smoke", {"ratios": [20]}, out_dir=tmp_path / "executed",
                            results_dir=tmp_path / "results", data_dir=root / "data", quiet=True)
    assert r.ok, r.error
    after = pd.read_csv(tmp_path / "results" / "smoke" / "01_data" / "tables" / "splits.csv")
    assert sorted(before["ratio (%)"].unique()) == [10, 20]
    assert list(after["ratio (%)"].unique()) == [20] and len(after) == 4
    pd.testing.assert_frame_equal(after.reset_index(drop=True),
                                  before[before["ratio (%)"] == 20].reset_index(drop=True))
    nb = nbformat.read(tmp_path / "executed" / "01_data.ipynb", as_version=4)
    assert nb.metadata["papermill"]["parameters"]["ratios"] == [20]
    caption = "".join(o.get("data", {}).get("text/html", "") for c in nb.cells for o in c.get("outputs", []))
    assert "Cases per split at 20% labels" in caption


# ------------------------------------------------------------------------------------ package functions
def test_live_explorer_runs_the_network(executed):
    _, _, root = executed
    prepared = root / "data" / "smoke" / "prepared"
    run = run_dir_for(sota_configs("smoke", 10, 2333)["VerSemi 10%"], prepared, root / "runs")
    w = X.live_explorer_for_run(run, prepared, per_dataset=1)
    (ds, _case), (prompt, _layer), plane, z, img, readout = (w.children[0].children, w.children[1].children,
                                                              *w.children[2:])
    assert plane.value == "axial" and list(plane.options) == ["axial", "coronal", "sagittal"]
    assert list(ds.options) == ["pancreas", "la", "spleen", "lung"] and img.value[:4] == b"\x89PNG"
    assert readout.value.startswith("Dice")
    first = img.value
    z.value = 0
    assert img.value != first
    # a pancreas scan under the spleen / LA prompt: the hidden labels give a reference for every prompt
    for p in (3, 2, 5):
        prompt.value = p
        assert readout.value.startswith("Dice"), (p, readout.value)
