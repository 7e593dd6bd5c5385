"""Experiment groups: which runs each table needs, chosen from config fields."""

import pytest

from versemi.experiments import (
    ABLATIONS,
    DEVIATIONS,
    FULL_MODEL,
    ablation_configs,
    la_real_configs,
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
