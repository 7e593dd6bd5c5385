"""The conflict chapter's tables, figures and prose on a small fake study with known effects: adding pancreas
hurts LA, the LA / pancreas gradients conflict most, PCGrad adds one point."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from versemi.companion import conflict as K
from versemi.conflict import SYNTHETIC
from versemi.data.registry import ALL_DATASETS
from versemi.experiments import CONFLICT_PCGRAD, CONFLICT_PROBED, CONFLICT_UNI_PROBED, conflict_loo_label

SEEDS = (2333, 1)
FAST = {"n_boot": 300, "n_perm": 600}


def _cases():
    rng = np.random.default_rng(0)
    rows = []

    def add(method, datasets, dice):
        for s, d, i in itertools.product(SEEDS, datasets, range(10)):
            rows.append({"method": method, "seed": s, "dataset": d, "case": f"{d}{i}",
                         "dice": dice(d, s, i) + rng.normal(0, 0.002)})

    base = lambda d, s, i: 0.8 + 0.01 * np.sin(i + s)  # noqa: E731
    add(K.full_label(), ALL_DATASETS, base)
    add(CONFLICT_PCGRAD, ALL_DATASETS, lambda d, s, i: base(d, s, i) + 0.01)
    for k in ALL_DATASETS:   # without pancreas, LA does 5 points better: pancreas hurts LA
        add(conflict_loo_label(k), [d for d in ALL_DATASETS if d != k],
            lambda d, s, i, k=k: base(d, s, i) + (0.05 if (k, d) == ("pancreas", "la") else 0.0))
    for d in ALL_DATASETS:   # alone, each dataset does 3 points worse: the other three help together
        add(K.alone_label(d), [d], lambda dd, s, i: base(dd, s, i) - 0.03)
    return pd.DataFrame(rows)


class _Results:
    def __init__(self, conflict):
        self.conflict = conflict


def _results():
    rows = []
    tasks = {CONFLICT_PROBED: [*ALL_DATASETS, SYNTHETIC], CONFLICT_UNI_PROBED: list(ALL_DATASETS)}
    for method, names in tasks.items():
        for s, step in itertools.product(SEEDS, (0, 20, 40)):
            row = {"method": method, "seed": s, "step": step}
            for g in ("encoder", "decoder", "head", "all"):
                for a, b in itertools.combinations(names, 2):
                    worst = {a, b} == {"la", "pancreas"}
                    row[f"conflict/{g}/cos/{a}~{b}"] = (-0.4 if worst else 0.2) + 0.01 * step / 20
                for a in names:
                    row[f"conflict/{g}/norm/{a}"] = 1.0
            rows.append(row)
    return _Results(pd.DataFrame(rows))


@pytest.fixture(scope="module")
def study():
    cases = _cases()
    lines = K.conflict_lines(_results())
    transfer = K.transfer_table(cases, **FAST)
    return cases, lines, transfer


def test_the_cosine_matrix_and_its_summaries(study):
    _, lines, _ = study
    mat = K.cosine_matrix(lines, CONFLICT_PROBED)
    assert list(mat.index) == [*ALL_DATASETS, SYNTHETIC]
    assert mat.loc["la", "pancreas"] == pytest.approx(-0.39) and mat.loc["pancreas", "la"] == mat.loc["la", "pancreas"]
    pairs = K.pair_table(lines)
    first = pairs[pairs["method"] == CONFLICT_PROBED].iloc[0]
    assert {first["a"], first["b"]} == {"pancreas", "la"} and first["share_negative"] == 1.0 and first["n"] == 6
    summary = K.group_summary(lines)
    assert set(summary["group"]) == {"encoder", "decoder", "head", "all"} and set(summary["method"]) == set(K.PROBED)
    assert (summary["most conflicting pair"] == "pancreas / la").all()
    norms = K.norm_table(lines)
    assert list(norms.columns) == ["method", "task", "encoder", "decoder", "head", "all"] and (norms["all"] == 1).all()
    assert list(norms[norms["method"] == CONFLICT_PROBED]["task"]) == [*ALL_DATASETS, SYNTHETIC]
    uni = K.cosine_matrix(lines, CONFLICT_UNI_PROBED)
    assert SYNTHETIC not in uni.index
    for fig in (K.plot_cosine_matrices(lines), K.plot_trajectories(lines)):
        assert fig.axes
    with pytest.raises(Exception, match="no probed steps"):
        K.cosine_matrix(lines, "nope")


def test_the_transfer_table_finds_the_pair_that_hurts(study):
    cases, _, transfer = study
    assert len(transfer) == 4 * 3 + 4   # 12 ordered pairs + joint vs alone for each dataset
    hurt = transfer[(transfer["target"] == "la") & (transfer["added"] == "pancreas")].iloc[0]
    assert hurt["effect"] == pytest.approx(-5.0, abs=0.2) and hurt["significant"] and hurt["lo"] < hurt["effect"] < hurt["hi"]
    alone = transfer[transfer["added"] == K.ALONE]
    assert np.allclose(alone["effect"], 3.0, atol=0.2) and alone["significant"].all()
    neutral = transfer[(transfer["added"] != K.ALONE) & ~((transfer["target"] == "la") & (transfer["added"] == "pancreas"))]
    assert (neutral["effect"].abs() < 0.5).all() and not neutral["significant"].any()
    assert (transfer["p_holm"] >= transfer["p"]).all()
    assert K.hurting_pairs(transfer) == [f"adding pancreas hurts la ({hurt['effect']:+.1f} points)"]
    m = K.transfer_matrix(transfer)
    assert list(m.columns) == [*ALL_DATASETS, K.ALONE] and np.isnan(m.loc["la", "la"])
    assert K.plot_transfer(transfer).axes


def test_conflict_against_transfer_and_pcgrad(study):
    cases, lines, transfer = study
    pairs, corr = K.conflict_vs_transfer(lines, transfer, n_boot=300)
    assert corr["n"] == 12 and len(pairs) == 12
    from scipy.stats import spearmanr
    assert corr["rho"] == pytest.approx(spearmanr(pairs["cosine"], pairs["effect"])[0])
    assert corr["lo"] <= corr["rho"] <= corr["hi"]
    assert K.plot_conflict_vs_transfer(pairs, corr).axes
    pc = K.pcgrad_table(cases, **FAST)
    assert list(pc["dataset"]) == [*ALL_DATASETS, "average"]
    assert pc.set_index("dataset").loc["average", "effect"] == pytest.approx(1.0, abs=0.1)
    values = K.glue_values(lines, transfer, corr, pc)
    assert values["cf_worst_pair"] == "pancreas / la" and values["cf_pcgrad"] == "+1.0"
    assert values["cf_hurting"].startswith("adding pancreas hurts la") and values["cf_seeds"] == "2"
    line = K.limitation_row(lines, transfer, corr, pc, seeds=SEEDS)
    assert line["verdict"] == "supported" and line["note"].startswith("1 of 16 transfer effects")
    assert line["measured"] == pytest.approx(transfer["effect"].min()) and line["compared"].endswith("on la")
    from versemi.companion.claims import display_table
    assert display_table(pd.DataFrame([line])).loc[0, "verdict"] == "supported"


def test_without_the_study_nothing_is_claimed():
    empty = K.conflict_lines(None)
    transfer = K.transfer_table(pd.DataFrame(columns=["method", "seed", "dataset", "case", "dice"]))
    assert empty.empty and transfer.empty
    line = K.limitation_row(empty, transfer, {"rho": float("nan")}, K.pcgrad_table(
        pd.DataFrame(columns=["method", "seed", "dataset", "case", "dice"])))
    assert line["verdict"] == "not testable here"


def test_the_claims_table_gains_the_limitation_line(study, tmp_path):
    from versemi.companion import claims as cl

    cases, lines, transfer = study
    pairs, corr = K.conflict_vs_transfer(lines, transfer, n_boot=100)
    table = cl.evaluate_claims({}, cl.select_claims([cl.CLAIMS[0].key]), n_boot=50, n_perm=50)
    missing = cl.with_limitation(table, tmp_path / "absent.csv")
    assert len(missing) == 2 and missing.iloc[-1]["verdict"] == "not testable here"
    assert "absent.csv" in missing.iloc[-1]["note"] and "conflict" in cl.untested_list(missing)
    csv = tmp_path / "limitation.csv"
    pd.DataFrame([K.limitation_row(lines, transfer, corr, K.pcgrad_table(cases, **FAST))]).to_csv(csv, index=False)
    full = cl.with_limitation(table, csv)
    last = full.iloc[-1]
    assert last["statement"] == K.LIMITATION_STATEMENT and last["verdict"] == "supported"
    assert last["measured"] == pytest.approx(transfer["effect"].min()) and list(full.columns) == list(table.columns)
    shown = cl.display_table(full).iloc[-1]
    assert shown["verdict"] == "supported" and shown["claimed"] == "n/a" and shown["claimed in CI"] == "n/a"
    assert cl.verdict_counts(full)["supported"] >= 1
