"""The real-LA chapter read from the la-real study's committed exports: small fake exports (a few runs, two
seeds, 20 real LA cases, the joint run with phantom CT cases too) read back through versemi.studies, with
intervals over seeds and cases, the Holm-corrected family and the chapter's adapter."""

from __future__ import annotations

import numpy as np
import pytest

from versemi.companion import la_real, la_study
from versemi.companion.reference import published_la_table
from versemi.experiments import HYBRID_LABEL, la_real_study_configs
from versemi.provenance import REPO_ROOT

from .la_exports import N_CASES, RUNS, write_la_exports

FAST = {"n_boot": 300}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return write_la_exports(tmp_path_factory.mktemp("studies"))


@pytest.fixture(scope="module")
def study(exports):
    return la_study.committed_la_study(exports)


def test_nothing_committed_yet(tmp_path):
    assert la_study.committed_la_study(tmp_path) is None
    assert "No LA results" in la_study.source_note(None, None)


def test_the_committed_exports_read_back_with_what_is_missing(study):
    assert study.source == "committed" and study.seeds == [1, 2333]
    assert set(study.missing) == set(la_real_study_configs()) - set(RUNS)   # e.g. UA-MT 10%, VerSemi 20%
    table = la_study.run_table(study)
    assert list(table.index) == ["Sup-only 10%", "BCP 10%", "MagicNet 10%", "VerSemi 10%", HYBRID_LABEL,
                                 "Sup-only 20%", "BCP 20%", "Fully supervised 100%"]
    assert table.loc[HYBRID_LABEL, "trained on"] == la_study.HYBRID_TEXT
    assert table.loc["MagicNet 10%", "seeds"] == "2333" and table.loc["BCP 20%", "seeds"] == "1, 2333"
    assert set(la_study.la_cases(study)["dataset"]) == {"la"}   # the joint run's phantom CT cases left out


def test_intervals_over_seeds_and_cases(study):
    ci = la_study.intervals(study, **FAST)
    cases = la_study.la_cases(study)
    sup = cases[cases["method"] == "Sup-only 10%"]
    assert ci.loc["Sup-only 10%", "mean"] == pytest.approx(100 * sup.groupby("seed")["dice"].mean().mean())
    assert (ci["lo"] <= ci["mean"]).all() and (ci["mean"] <= ci["hi"]).all()
    assert ci.loc["MagicNet 10%", "seed_resamples"] == 1 and ci.loc["BCP 10%", "n_cases"] == 2 * N_CASES
    table = la_study.interval_table(study, **FAST)
    assert table.loc[HYBRID_LABEL, "cases x seeds"] == 2 * N_CASES
    assert table.loc["VerSemi 10%", "Dice (%) [95% CI]"].startswith(f"{ci.loc['VerSemi 10%', 'mean']:.1f} [")
    assert (table["empty predictions"] == 0).all()


def test_the_family_is_holm_corrected_and_asks_each_pair_once(study):
    family = la_study.comparison_family(study)
    pairs = [frozenset((a, b)) for a, b, _ in family]
    assert len(pairs) == len(set(pairs))
    asked = {(a, b) for a, b, _ in family}
    assert ("VerSemi 10%", "BCP 10%") in asked and ("BCP 20%", "Sup-only 20%") in asked
    assert (HYBRID_LABEL, "VerSemi 10%") in asked and ("Fully supervised 100%", "VerSemi 10%") in asked
    assert family[0][:2] == (HYBRID_LABEL, "VerSemi 10%")   # the best at 10 % against the runner-up, first
    df = la_study.comparisons(study, n_boot=200, n_perm=400)
    from statsmodels.stats.multitest import multipletests

    assert np.allclose(df["p_holm"], multipletests(df["p"], method="holm")[1])
    assert (df["p_holm"] >= df["p"]).all() and len(df) == len(family)
    big = df[(df["a"] == "VerSemi 10%") & (df["b"] == "Sup-only 10%")].iloc[0]
    assert big["effect"] == pytest.approx(8.0, abs=1.0) and big["significant"] and big["n_pairs"] == 2 * N_CASES
    text = la_study.verdict_text(study, df)
    assert text.startswith(f"At 10% the highest mean Dice is {HYBRID_LABEL}'s") and "At 20%" in text


def test_the_chapter_s_tables_read_the_study(study):
    res = la_study.as_la_results(study)
    assert list(res.summary["method"]) == list(la_study.run_table(study).index)
    assert set(res.summary["grid"]) == {la_real.GRID_TRAINED} and (res.summary["n"][:2] == 2 * N_CASES).all()
    settings = la_real.settings_table(res.provenance)
    assert "13 of the unlabeled" in settings.loc["training cases", "this page"]
    assert settings.loc["VerSemi trained on LA alone", "this page"].endswith("with phantom CT sets instead")
    values = la_real.glue_values(res)
    ref = res.released()
    assert values["la_dice_versemi"] == f"{100 * ref.loc['VerSemi 10%', 'dice_mean']:.1f}"
    assert values["la_dice_hybrid"] == f"{100 * ref.loc[HYBRID_LABEL, 'dice_mean']:.1f}"
    assert values["la_dice_uamt"] == la_real.NOT_RUN
    why = la_real.why_numbers_differ(res)
    assert "2 seed(s) (1, 2333)" in why and "hybrid run" in why and "13 of the unlabeled" in why
    pub = published_la_table(n_labeled=(8, 16, 80), methods=["UA-MT", "BCP", "V-Net"])
    assert "BCP 10%" in la_real.published_comparison(res, pub)["ours"].tolist()
    times = la_study.study_times(study)
    assert times.loc["BCP 10%", "seeds"] == 2 and times.loc["MagicNet 10%", "seeds"] == 1
    assert la_study.validation_size() == 13


def test_the_page_says_which_results_it_shows(study, exports):
    note = la_study.source_note(study, None, exports)
    assert "committed `la-real` study" in note and "0123456789ab" in note and "MagicNet 10%" in note
    assert "Not committed yet" in note and "UA-MT 10%" in note
    legacy = la_real.load_la_results(REPO_ROOT / la_study.LEGACY_DIR)
    if legacy is not None:   # the earlier export, rendered until the study has a run
        assert "earlier export" in la_study.source_note(None, legacy)


def test_the_prose_names_the_grid_of_its_numbers(study):
    assert la_study.grid_text(la_study.as_la_results(study)) == "on the x0.5 grid the models ran on (1.25 mm)"
    legacy = la_real.load_la_results(REPO_ROOT / la_study.LEGACY_DIR)
    if legacy is not None:
        assert la_study.grid_text(legacy) == "on the released grid (0.625 mm)"
