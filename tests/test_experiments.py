"""Experiment groups: which runs each table needs, chosen from config fields."""

import pytest

from versemi.config import ALL_DATASETS
from versemi.experiments import (
    ABLATIONS,
    DEVIATIONS,
    FULL_MODEL,
    HYBRID_LABEL,
    LA_REAL_METHODS,
    STUDY_GROUPS,
    ablation_configs,
    la_real_configs,
    la_real_study_configs,
    resolve_ratios,
    select_configs,
    sota_configs,
)
from versemi.utils import VersemiError


def test_sota_group_per_profile():
    demo = sota_configs("demo")
    rows = [c.row_name() for c in demo.values()]
    ssl = ("UA-MT", "DTC", "ASE-Net", "BCP", "CauSSL", "MagicNet")
    assert all(rows.count(r) == 4 for r in ("Sup-only", *ssl)) and "MT" not in rows
    assert {"Uni-Sup-only", "Uni-MT", *(f"Uni-{r}" for r in ssl), "UniSeg", "VerSemi"} <= set(rows)
    assert "DoDNet" not in rows   # in the CPU profiles DoDNet is the Uni-Sup-only run itself
    assert rows.count("Fully supervised") == 4 and len(demo) == 7 * 4 + 8 + 1 + 1 + 4
    assert all(k == c.label() for k, c in demo.items())
    paper = [c.row_name() for c in sota_configs("paper").values()]
    assert paper.count("MT") == 4 and {"DoDNet", "UniSeg"} <= set(paper)
    assert {c.ratio for c in sota_configs("demo", ratio=20).values()} == {20, 100}


def test_ablation_and_deviation_groups_change_one_thing_each():
    full = ablation_configs("smoke")[FULL_MODEL]
    abl = ablation_configs("smoke")
    assert list(abl) == list(ABLATIONS)
    assert abl["w/o L_aux"].options == {"laux": False} and abl["multi-head (no controller)"].head == "multi"
    dev = ablation_configs("smoke", variants=DEVIATIONS)
    assert dev["#5 released: selection on test"].selection == "test" and dev[FULL_MODEL] == full
    stage1 = dev["#1 released: stage 1 only"]   # the released 1,000 epochs: the first half of the schedule
    assert stage1.options == {"consistency": False} and stage1.steps == round(full.steps / 2)
    assert abl["w/o unlabeled consistency"].steps == full.steps
    merged = ablation_configs("smoke", options={"stage1_fraction": 0.25})["w/o L_aux"]
    assert merged.options == {"stage1_fraction": 0.25, "laux": False}


def test_la_real_group_is_la_only_with_plain_keys():
    g = la_real_configs()
    assert list(g) == ["Fully supervised 100%", "Sup-only 10%", "VerSemi 10%", "Sup-only 20%", "BCP 10%",
                       "UA-MT 10%"]
    assert all(c.datasets == ("la",) and c.profile == "la-real" for c in g.values())


def test_la_real_study_holds_both_ratios_the_upper_bound_and_the_joint_run():
    g = STUDY_GROUPS["la-real"]("la-real", 2333)
    assert g == la_real_study_configs("la-real", 2333) == STUDY_GROUPS["la-real"]("la-real", 2333, 20)
    la_only = {k: c for k, c in g.items() if c.datasets == ("la",)}
    per_ratio = {r: sorted(c.method for c in la_only.values() if c.ratio == r) for r in (10, 20, 100)}
    assert per_ratio == {10: sorted(LA_REAL_METHODS[10]), 20: ["bcp", "sup_only", "versemi"], 100: ["sup_only"]}
    assert len(LA_REAL_METHODS[10]) == 9 and len(g) == 9 + 3 + 1 + 1
    assert all(k == c.label(with_dataset=False) for k, c in la_only.items())   # 'BCP 10%', 'BCP 20%', ...
    joint = g[HYBRID_LABEL]
    assert joint.method == "versemi" and joint.datasets == ("pancreas", "la", "spleen", "lung") and joint.ratio == 10
    assert "hybrid" in HYBRID_LABEL and all(c.profile == "la-real" and c.seed == 2333 for c in g.values())
    assert len({c.identity("data") for c in g.values()}) == len(g)   # every label is its own run
    # the runs of the earlier real-LA group are the same runs (the cache and exports are shared) ...
    old = la_real_configs()
    assert all(old[k].identity("data") == g[k].identity("data") for k in old)
    # ... and a seed changes the training seed only: identities are stable across calls and seeds differ
    again = la_real_study_configs(seed=2333)
    assert [c.identity("data") for c in again.values()] == [c.identity("data") for c in g.values()]
    other = la_real_study_configs(seed=1)
    assert list(other) == list(g) and all(other[k].seed == 1 and other[k].identity("d") != g[k].identity("d") for k in g)
    assert list(STUDY_GROUPS["la-real"]("smoke", 2333)) == list(g)   # the same labels under a phantom profile


@pytest.fixture(scope="module")
def la_prepared(tmp_path_factory):
    from versemi.data.prepare import prepare

    from .data.factories import write_la_release

    root = tmp_path_factory.mktemp("la")
    write_la_release(root / "src")
    prepare(["la"], root / "src", root / "prepared", profile="la-real")
    return root / "prepared"


def test_la_real_study_cases_per_ratio_and_the_upper_bound(la_prepared):
    from versemi.data.prepare import load_manifest
    from versemi.train import split_cases

    g = la_real_study_configs()
    splits = load_manifest(la_prepared)["datasets"]["la"]["splits"]
    val = set(splits["10"]["val"])
    assert len(val) == 13 and val == set(splits["20"]["val"])   # one validation split for both ratios
    names = lambda cfg, split: [c["name"] for c in split_cases(cfg, la_prepared, split)]  # noqa: E731
    for key, (n_lab, n_unl) in {"BCP 10%": (8, 59), "BCP 20%": (16, 51)}.items():
        lab, unl = names(g[key], "labeled"), names(g[key], "unlabeled")
        assert (len(lab), len(unl), len(names(g[key], "test"))) == (n_lab, n_unl, 20)
        assert not (set(lab) | set(unl)) & val and len(lab) + len(unl) + len(val) == 80
    full = g["Fully supervised 100%"]
    train = set(splits["10"]["labeled"]) | set(splits["10"]["unlabeled"])
    assert set(names(full, "labeled")) == train - val and len(train - val) == 67
    assert names(full, "unlabeled") == [] and set(names(full, "val")) == val


def test_select_configs_by_row_or_key_and_ratios():
    demo = sota_configs("demo")
    kept = select_configs(demo, ["VerSemi", "Uni-BCP", "Sup-only"])
    assert sorted(c.row_name() for c in kept.values()) == ["Sup-only"] * 4 + ["Uni-BCP", "VerSemi"]
    assert list(select_configs(demo, ["UA-MT (la) 10%"])) == ["UA-MT (la) 10%"]
    with pytest.raises(VersemiError, match=r"unknown method\(s\) \['Verscmi'\]"):
        select_configs(demo, ["Verscmi"])
    assert resolve_ratios("demo") == [10] and resolve_ratios("paper") == [10, 20]
    assert resolve_ratios("demo", 20, [10, 20]) == [20, 10]
    with pytest.raises(VersemiError, match="label ratios must be 10 or 20"):
        resolve_ratios("demo", ratios=[50])


def test_conflict_group_holds_the_probes_the_transfer_runs_and_pcgrad():
    from versemi.experiments import (
        CONFLICT_PCGRAD,
        CONFLICT_PROBED,
        CONFLICT_PROBES,
        CONFLICT_UNI_PROBED,
        conflict_configs,
        conflict_loo_label,
    )

    cfgs = conflict_configs("demo", seed=1)
    assert cfgs["VerSemi 10%"].identity() == sota_configs("demo", seed=1)["VerSemi 10%"].identity()  # one run
    for d in ALL_DATASETS:
        assert set(cfgs[conflict_loo_label(d)].datasets) == set(ALL_DATASETS) - {d}
        assert cfgs[f"VerSemi ({d}) 10%"].datasets == (d,) and cfgs[f"VerSemi ({d}) 10%"].method == "versemi"
    assert cfgs[CONFLICT_PROBED].method == "versemi_probed" and cfgs[CONFLICT_UNI_PROBED].method == "sup_only_probed"
    assert cfgs[CONFLICT_PCGRAD].method == "versemi_pcgrad" and len(cfgs) == 12
    assert cfgs[CONFLICT_PROBED].options["probe_every"] * CONFLICT_PROBES == cfgs[CONFLICT_PROBED].steps
    assert {c.seed for c in cfgs.values()} == {1} and {c.ratio for c in cfgs.values()} == {10}
    # probing changes nothing else of the VerSemi run
    a, b = cfgs[CONFLICT_PROBED].to_dict(), cfgs["VerSemi 10%"].to_dict()
    assert {k for k in a if a[k] != b[k]} == {"method", "options"}


def test_conflict_group_in_the_paper_profile_takes_versemi_s_released_settings():
    from versemi.experiments import CONFLICT_PCGRAD, CONFLICT_PROBED, CONFLICT_PROBES, conflict_configs

    cfgs = conflict_configs("paper")
    full = cfgs["VerSemi 10%"].to_dict()
    for label in (CONFLICT_PROBED, CONFLICT_PCGRAD):
        d = cfgs[label].to_dict()
        assert {k for k in d if d[k] != full[k]} <= {"method", "options"}, label   # batch 8 + 8, 96^3, Adam ...
    assert cfgs[CONFLICT_PROBED].options["probe_every"] == full["steps"] // CONFLICT_PROBES
    assert cfgs["VerSemi w/o lung 10%"].batch_size == full["batch_size"] and tuple(full["patch"]) == (96, 96, 96)
