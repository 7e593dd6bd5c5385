"""versemi.companion.ablations: the ablation table against the full model, on synthetic tables."""

from __future__ import annotations

import pandas as pd
import pytest

from versemi.companion import ablations
from versemi.utils import VersemiError

from .case_tables import universal


def _table() -> pd.DataFrame:
    full = {"la": [0.8, 0.7, 0.9], "spleen": [0.6, 0.6, 0.6]}
    no_aux = {"la": [0.7, 0.6, 0.8], "spleen": [0.6, 0.5, 0.6]}
    no_prompt = {"la": [0.0, 0.7, 0.9], "spleen": [0.6, 0.6, 0.6]}
    df = pd.concat([universal("VerSemi (full)", full), universal("w/o L_aux", no_aux),
                    universal("no prompt (single head)", no_prompt)], ignore_index=True)
    df.loc[(df["method"] == "no prompt (single head)") & (df["dice"] == 0), "empty_pred"] = True
    return df


def test_ablation_table_deltas_and_claims():
    df = _table()
    disp, num = ablations.ablation_table(df)
    num = num.set_index("ablation")
    assert num.loc["w/o L_aux", "delta_la"] == pytest.approx(-10.0)
    assert num.loc["w/o L_aux", "delta_average"] == pytest.approx((-10.0 - 100 / 30) / 2)
    assert num.loc["VerSemi (full)", "delta_average"] == 0
    assert num.loc["no prompt (single head)", "n_empty_pred"] == 1
    assert num.loc["w/o L_aux", "claimed_change"] == "+1.8%"
    assert num.loc["w/o L_aux", "claim_confidence"].startswith("low")
    assert num.loc["no prompt (single head)", "claimed_change"] == "n/a"
    assert disp.loc["w/o L_aux", "la Dice (%)"] == "70.00 (-10.00)"
    assert disp.loc["VerSemi (full)", "la Dice (%)"] == "80.00"
    assert disp.loc["no prompt (single head)", "cases (empty pred.)"] == "6 (1)"
    assert "too few" in disp.loc["w/o L_aux", "Wilcoxon vs full (pooled)"]
    disp2, _ = ablations.ablation_table(df, labels=["no prompt (single head)"])
    assert list(disp2.index) == ["VerSemi (full)", "no prompt (single head)"]
    with pytest.raises(VersemiError, match="reference run"):
        ablations.ablation_table(df[df["method"] != "VerSemi (full)"])
    with pytest.raises(VersemiError, match="unknown ablation"):
        ablations.ablation_table(df, labels=["w/o everything"])
    disp3, num3 = ablations.ablation_table(df, claims=False)
    assert "claim confidence" not in disp3.columns and "claimed_change" in num3.columns


def test_largest_change():
    _, num = ablations.ablation_table(_table())
    # 'no prompt': la (0 + 70 + 90) / 3 against 80, spleen unchanged
    assert ablations.largest_change(num) == ("no prompt (single head)", f"{(160 / 3 - 80) / 2:+.2f}")
    assert ablations.largest_change(num, drop=False)[0] == "no prompt (single head)"
    raised = num.assign(delta_average=num["delta_average"].where(num["ablation"] != "w/o L_aux", 20.0))
    assert ablations.largest_change(raised, drop=False) == ("w/o L_aux", "+20.00")
    assert ablations.largest_change(raised)[0] == "no prompt (single head)"
    only_full = num[num["ablation"] == "VerSemi (full)"]
    assert ablations.largest_change(only_full) == ("n/a", "n/a")
