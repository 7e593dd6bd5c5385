"""The real-LA export (run on smoke phantoms of LA, whose raw layout is the UA-MT release's), its
code-fingerprint check, and the chapter's tables read back from the committed results."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from versemi.companion import la_real
from versemi.companion.reference import published_la_table
from versemi.config import make_config
from versemi.provenance import REPO_ROOT
from versemi.runs import run_group
from versemi.utils import VersemiError

COMMITTED = REPO_ROOT / "results" / "la-real"


@pytest.fixture(scope="module")
def la_runs(smoke_root):
    prepared = smoke_root / "data" / "smoke" / "prepared"
    cfgs = {"Sup-only 10%": make_config("sup_only", "smoke", datasets=("la",), steps=3),
            "VerSemi 10%": make_config("versemi", "smoke", datasets=("la",), steps=4)}
    return run_group(cfgs, prepared, smoke_root / "runs", progress=False), prepared


def test_export_writes_every_committed_file(la_runs, smoke_root, tmp_path):
    runs, prepared = la_runs
    out = la_real.export_la_results(runs, prepared, tmp_path / "la",
                                    raw_la_root=smoke_root / "data" / "smoke" / "raw" / "LA", n_gallery=2)
    for name in ("cases.csv", "cases_fullres.csv", "summary.csv", "curves.csv", "curves.png", "predictions.png",
                 "provenance.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 100, name
    s = pd.read_csv(out / "summary.csv")
    assert set(s["method"]) == set(runs) and set(s["grid"]) == {"x0.5 (1.25 mm)", "released (0.625 mm)"}
    cases = pd.read_csv(out / "cases.csv")
    n_test = len(cases) // 2
    assert (s["n"] == n_test).all()
    prov = json.loads((out / "provenance.json").read_text())
    assert set(prov["runs"]) == set(runs) and prov["libraries"]["torch"]
    # the one provenance record, and the runs' shared code fingerprint
    assert {"code", "git", "machine", "time"} <= set(prov) and prov["runs_code"]
    assert {r["code"] for r in prov["runs"].values()} == {prov["runs_code"]}
    assert not list(out.glob(".*"))  # no temporary files left
    # read back as the chapter does
    res = la_real.load_la_results(out)
    values = la_real.glue_values(res)
    assert values["la_dice_sup8"] == f"{100 * res.released().loc['Sup-only 10%', 'dice_mean']:.1f}"
    assert values["la_dice_full"] == "n/a (not run yet)"  # no fully supervised run exported
    assert values["la_commit"] == (prov["git"]["commit"] or "unknown")[:12]


def _copy_runs(runs, root):
    out = {}
    for label, r in runs.items():
        out[label] = root / r.name
        shutil.copytree(r, out[label])
    return out


def _set_code(run_dir, code):
    done = json.loads((run_dir / "DONE.json").read_text())
    if code is None:
        done.pop("provenance", None)
    else:
        done["provenance"]["code"] = code
    (run_dir / "DONE.json").write_text(json.dumps(done))


def test_export_refuses_runs_of_different_code(la_runs, tmp_path):
    runs, prepared = la_runs
    copies = _copy_runs(runs, tmp_path / "runs")
    _set_code(copies["VerSemi 10%"], "0123456789abcdef")
    with pytest.raises(VersemiError, match="different code"):
        la_real.export_la_results(copies, prepared, tmp_path / "out", n_gallery=1)
    assert not (tmp_path / "out").exists()  # checked before anything is written
    # a run without a provenance record (an older run) is not checked
    _set_code(copies["VerSemi 10%"], None)
    out = la_real.export_la_results(copies, prepared, tmp_path / "out", n_gallery=1)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["runs"]["VerSemi 10%"]["code"] is None and prov["runs_code"] == prov["runs"]["Sup-only 10%"]["code"]


def test_upsample_keeps_a_centred_blob():
    p = np.zeros((10, 10, 10), np.float32)
    p[3:7, 3:7, 3:7] = 1
    up = la_real.upsample_to(p, (20, 20, 20))
    assert up.shape == (20, 20, 20) and up[10, 10, 10] == 1 and up[0, 0, 0] == 0
    assert abs(int(up.sum()) - 8 * 64) < 0.3 * 8 * 64


def test_nothing_exported_yet(tmp_path):
    assert la_real.load_la_results(tmp_path) is None
    assert set(la_real.glue_values(None).values()) == {"n/a (not run yet)"}
    (tmp_path / "summary.csv").write_text("method,grid\n")
    with pytest.raises(VersemiError, match="provenance.json"):
        la_real.load_la_results(tmp_path)


# ------------------------------------------------------------------------- the committed results
@pytest.fixture(scope="module")
def committed():
    res = la_real.load_la_results(COMMITTED)
    if res is None:
        pytest.skip("results/la-real has no export")
    return res


def test_chapter_tables_of_the_committed_results(committed):
    s = committed.summary
    table = la_real.summary_table(s)
    first = s.iloc[0]
    assert table.iloc[0]["Dice (%)"] == f"{first['dice_mean'] * 100:.2f} ± {first['dice_std'] * 100:.2f}"
    assert table.iloc[0]["95HD (vox)"] == f"{first['hd95_mean']:.2f} ± {first['hd95_std']:.2f}"
    assert table.index.names == ["grid", "method"] and len(table) == len(s)
    settings = la_real.settings_table(committed.provenance)
    assert settings.loc["network width f", "paper profile"] == 16
    assert settings.loc["patch", "paper profile"] == "96x96x96"
    assert settings.loc["sliding window (patch, stride)", "paper profile"] == "(96, 96, 96), (16, 16, 4)"
    times = la_real.train_times(committed.provenance)
    assert list(times.index) == list(committed.provenance["runs"])
    values = la_real.glue_values(committed)
    released = s[s["grid"].str.startswith("released")].set_index("method")
    assert values["la_dice_full"] == f"{100 * released.loc['Fully supervised 100%', 'dice_mean']:.1f}"
    assert values["la_dice_uamt"] == f"{100 * released.loc['UA-MT 10%', 'dice_mean']:.1f}"
    assert len(values["la_commit"]) == 12 and "CPUs, torch" in values["la_machine"]


def test_published_comparison_matches_rows_on_fields(committed):
    pub = published_la_table(n_labeled=(8, 16, 80), methods=["UA-MT", "BCP", "V-Net"])
    got = la_real.published_comparison(committed, pub)
    # the pairs the chapter used to type by hand: (our key, labeled cases, published name prefix)
    pairs = [("Sup-only 10%", 8, "V-Net"), ("Sup-only 20%", 16, "V-Net"), ("UA-MT 10%", 8, "UA-MT"),
             ("BCP 10%", 8, "BCP"), ("Fully supervised 100%", 80, "V-Net")]
    ours = committed.released()
    expected = []
    for label, n, method in pairs:
        p = pub[(pub["n_labeled"] == n) & pub["method"].str.startswith(method)]["dice"].dropna()
        expected.append({"ours": label, "labeled cases (published setting)": n,
                         "our Dice (%)": round(100 * ours.loc[label, "dice_mean"], 2),
                         "published Dice (%), min-max over sources": (f"{p.min():.2f}-{p.max():.2f}" if len(p) else "n/a"),
                         "sources": len(p)})
    pd.testing.assert_frame_equal(got, pd.DataFrame(expected))
    assert "VerSemi 10%" not in got["ours"].tolist()  # no published LA number of VerSemi


def test_full_resolution_scoring_inverts_the_preparation_s_resampling():
    """A label downsampled x0.5 as `versemi prepare` does (scipy.ndimage.zoom, corner-aligned) and brought
    back by upsample_to keeps its place: no systematic shift, a high overlap."""
    from scipy import ndimage

    from versemi.companion.la_real import upsample_to
    from versemi.data.prepare import _zoom  # the preparation's resampling

    z, y, x = np.mgrid[:88, :80, :40]   # near two corners, where a grid mismatch shifts the most
    label = (((z - 79) / 6) ** 2 + ((y - 8.7) / 6) ** 2 + ((x - 22.2) / 8) ** 2 < 1).astype(np.uint8)
    small = _zoom(label.astype(np.float32), (0.5,) * 3, 1)
    back = upsample_to(small, label.shape)
    assert back.shape == label.shape
    shift = np.subtract(ndimage.center_of_mass(back), ndimage.center_of_mass(label))
    assert np.abs(shift).max() < 0.25   # trilinear with align_corners=False: 0.45 voxel
    dice = 2 * (back & label).sum() / (back.sum() + label.sum())
    assert dice > 0.9


def test_why_the_numbers_differ_is_generated_from_the_export():
    res = la_real.load_la_results(REPO_ROOT / "results" / "la-real")
    text = la_real.why_numbers_differ(res)
    steps = {int(r["config"]["steps"]) for r in res.provenance["runs"].values()}
    assert all(f"{s:,} steps" in text for s in steps) and res.provenance["data"] in text
    assert "degenerates" in text   # VerSemi trained on LA alone
    assert "x0.5" in text and "the paper's: 16" in text
    assert "cannot be described" in la_real.why_numbers_differ(None)


def _exported_study(la_runs, smoke_root, out):
    """The smoke LA runs exported as a committed la-real study (profile smoke) under ``out``: (study results,
    raw LA folder, prepared folder)."""
    from versemi.companion import la_study
    from versemi.studies import export_dir, export_run, load_study

    runs, prepared = la_runs
    for label, run_dir in runs.items():
        export_run(label, run_dir, 2333, export_dir(out, "smoke", la_study.STUDY, label, 2333))
    return load_study(la_study.STUDY, "smoke", out), smoke_root / "data" / "smoke" / "raw" / "LA", prepared


def test_committed_study_runs_are_scored_on_the_released_grid_once(la_runs, smoke_root, tmp_path):
    from versemi.companion import la_study

    runs = la_runs[0]
    out = tmp_path / "studies"
    results, raw, prepared = _exported_study(la_runs, smoke_root, out)
    assert la_study.released_cases(results, out) is None
    assert set(la_study.as_la_results(results, out).summary["grid"]) == {la_real.GRID_TRAINED}

    first = la_study.score_released(raw, prepared, smoke_root / "runs", out, "smoke", labels=["Sup-only 10%"],
                                    progress=False)
    assert [p.parent.parent.name for p in first] == ["sup-only-10"]
    assert la_study.released_cases(results, out) is None        # VerSemi is not scored yet: the page keeps x0.5
    rest = la_study.score_released(raw, prepared, smoke_root / "runs", out, "smoke", progress=False)
    assert len(rest) == 1 and la_study.score_released(raw, prepared, smoke_root / "runs", out, "smoke") == []
    full = la_study.released_cases(results, out)
    assert set(full["method"]) == set(runs) and {"seed", "case", "dice", "hd95"} <= set(full.columns)
    direct = la_real.evaluate_fullres(runs["VerSemi 10%"], prepared, raw).set_index("case")["dice"]
    mine = full[full["method"] == "VerSemi 10%"].set_index("case")["dice"]
    assert np.allclose(mine.loc[direct.index], direct, atol=1e-5)
    rec = json.loads((first[0].parent / la_study.RELEASED_RECORD).read_text())
    assert rec["run"] == runs["Sup-only 10%"].name and rec["retrained"] is None and rec["scored_by"]["code"]
    summary = la_study.as_la_results(results, out).summary
    assert set(summary["grid"]) == {la_real.GRID_TRAINED, la_real.GRID_RELEASED}
    assert (summary.groupby("grid")["method"].apply(list).map(sorted) == [sorted(runs)] * 2).all()


def test_a_committed_run_without_its_folder_is_named_or_trained_again(la_runs, smoke_root, tmp_path):
    from versemi.companion import la_study
    from versemi.studies import export_dir, export_run

    runs, prepared = la_runs
    raw = smoke_root / "data" / "smoke" / "raw" / "LA"
    out = tmp_path / "studies"
    export_run("Sup-only 10%", runs["Sup-only 10%"], 2333, export_dir(out, "smoke", la_study.STUDY, "Sup-only 10%", 2333))
    with pytest.raises(VersemiError, match="--retrain"):
        la_study.score_released(raw, prepared, tmp_path / "elsewhere", out, "smoke", progress=False)
    assert not list(out.rglob(la_study.RELEASED_FILE))
    # skip_missing (--skip-missing): scores what the run cache holds, here nothing, and stops at nothing
    assert la_study.score_released(raw, prepared, tmp_path / "elsewhere", out, "smoke", skip_missing=True,
                                   progress=False) == []
    assert not list(out.rglob(la_study.RELEASED_FILE))
    (written,) = la_study.score_released(raw, prepared, tmp_path / "elsewhere", out, "smoke", retrain=True,
                                         progress=False)
    assert (tmp_path / "elsewhere" / runs["Sup-only 10%"].name / "DONE.json").is_file()
    check = json.loads((written.parent / la_study.RELEASED_RECORD).read_text())["retrained"]
    # seeded: the retrained network scores the committed x0.5 cases again
    assert check["cases"] > 0 and check["x05_dice_max_abs_diff"] < 1e-4


def test_the_released_grid_table_lists_the_runs_scored_so_far(la_runs, smoke_root, tmp_path):
    from versemi.companion import la_study
    from versemi.studies import export_dir

    out = tmp_path / "studies"
    results, raw, prepared = _exported_study(la_runs, smoke_root, out)
    assert la_study.released_table(results, out).empty
    la_study.score_released(raw, prepared, smoke_root / "runs", out, "smoke", labels=["VerSemi 10%"], progress=False)
    table = la_study.released_table(results, out)
    assert list(table.index) == ["VerSemi 10%"] and table.loc["VerSemi 10%", "seeds"] == "2333"
    full = pd.read_csv(export_dir(out, "smoke", la_study.STUDY, "VerSemi 10%", 2333) / la_study.RELEASED_FILE)
    assert table.loc["VerSemi 10%", "Dice (%) released grid"] == pytest.approx(round(100 * full["dice"].mean(), 1))
    x05 = results.cases[(results.cases["method"] == "VerSemi 10%") & (results.cases["dataset"] == "la")]
    assert table.loc["VerSemi 10%", "Dice (%) x0.5 grid"] == pytest.approx(round(100 * x05["dice"].mean(), 1))


def test_the_prose_quotes_the_upper_bound_on_the_released_grid_once_scored(la_runs, smoke_root, tmp_path):
    from versemi.companion import la_study

    out = tmp_path / "studies"
    results, raw, prepared = _exported_study(la_runs, smoke_root, out)
    assert la_study.released_text(results, out, "Sup-only 10%") == "a value not scored yet"
    la_study.score_released(raw, prepared, smoke_root / "runs", out, "smoke", labels=["Sup-only 10%"], progress=False)
    table = la_study.released_table(results, out)
    assert la_study.released_text(results, out, "Sup-only 10%") == (
        f"{table.loc['Sup-only 10%', 'Dice (%) released grid']:.1f} % (seeds 2333)")
    assert "earlier export" in la_study.released_text(None)
