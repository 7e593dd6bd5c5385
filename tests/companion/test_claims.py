"""The claims table: claimed numbers read from the reference, each verdict computed by its rule."""

import numpy as np
import pandas as pd
import pytest

from versemi.companion import claims as cl
from versemi.companion.reference import reported_gain
from versemi.utils import VersemiError


def _cases(shift, noise=0.02, seeds=(1, 2, 3), seed=0):
    """Rows A and B on two datasets; A - B = shift (Dice fraction) plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in seeds:
        for d in ("la", "spleen"):
            for i in range(8):
                a = rng.uniform(0.6, 0.9)
                rows += [{"method": "A", "dataset": d, "case": f"{d}{i}", "seed": s, "dice": a},
                         {"method": "B", "dataset": d, "case": f"{d}{i}", "seed": s,
                          "dice": a - shift + rng.normal(0, noise)}]
    return pd.DataFrame(rows)


def _claim(**kw):
    base = dict(key="t", statement="A beats B", kind="directional", evidence="e", a="A", b="B", rows="key")
    base.update(kw)
    return cl.Claim(**base)


def test_the_paper_s_claims_are_all_listed_and_their_numbers_come_from_the_reference():
    keys = {c.key for c in cl.CLAIMS}
    assert {"avg_dice", "avg_hd95", "pancreas_value", "pancreas_dice", "la_bcp", "spleen_dice", "lung_jaccard",
            "generalisation", "laux", "task5", "head_params", "head_speed", "tsne", "prompt_weakening"} <= keys
    claimed = {c.key: cl.claimed_value(c)[0] for c in cl.CLAIMS}
    assert f"{claimed['avg_dice']:+.2f}" == reported_gain()
    assert claimed["la_bcp"] == 0.5 and claimed["head_params"] == -30 and claimed["head_speed"] == pytest.approx(-20)
    assert all(c.kind in cl.KINDS for c in cl.CLAIMS)
    with pytest.raises(VersemiError, match="unknown claim"):
        cl.select_claims(["nope"])


def test_a_directional_verdict_follows_the_measured_effect():
    c = _claim()
    verdicts = {}
    for shift in (0.03, 0.0, -0.03):   # changing the measured numbers changes the verdict
        t = cl.evaluate_claims({"e": _cases(shift)}, [c], n_boot=300, n_perm=300)
        verdicts[shift] = t["verdict"].item()
    assert verdicts == {0.03: "supported", 0.0: "inconclusive", -0.03: "contradicted"}
    less = cl.evaluate_claims({"e": _cases(0.03)}, [_claim(direction="less")], n_boot=300, n_perm=300)
    assert less["verdict"].item() == "contradicted"


def test_holm_adjusts_within_an_evidence_source_and_the_magnitude_flag_is_separate():
    cs = [_claim(key="x"), _claim(key="y")]
    t = cl.evaluate_claims({"e": _cases(0.01, noise=0.03)}, cs, n_boot=300, n_perm=300)
    assert (t["p_claimed_holm"] >= t["p_claimed"]).all()
    one = cl.evaluate_claims({"e": _cases(0.01, noise=0.03)}, cs[:1], n_boot=300, n_perm=300)
    assert one["p_claimed_holm"].item() == pytest.approx(one["p_claimed"].item())
    m = cl.Measured(effect=3.0, lo=2.0, hi=4.0, p_claimed=0.001, p_other=0.99)
    assert cl.verdict(_claim(), m, 2.5, 0.001, 0.99) == ("supported", True)
    assert cl.verdict(_claim(), m, 9.0, 0.001, 0.99) == ("supported", False)


def test_equivalence_absolute_cost_and_untestable_rules():
    eq = _claim(kind="equivalence", ref=("relative", "la", "Dice(%)", "BCP"))
    assert cl.evaluate_claims({"e": _cases(0.0005, noise=0.005)}, [eq], n_boot=300, n_perm=300)["verdict"].item() == "supported"
    assert cl.evaluate_claims({"e": _cases(0.05, noise=0.005)}, [eq], n_boot=300, n_perm=300)["verdict"].item() == "contradicted"
    ab = _claim(kind="absolute", b=None, ref=("value", "VerSemi", "pancreas"))
    t = cl.evaluate_claims({"e": _cases(0.0)}, [ab], n_boot=300, phantom=["e"])
    assert t["verdict"].item() == "not testable here" and "phantom" in t["note"].item()
    near, far = _cases(0.0), _cases(0.0)
    near["dice"] = 0.7863 + np.random.default_rng(1).normal(0, 0.01, len(near))
    far["dice"] = 0.70 + np.random.default_rng(1).normal(0, 0.01, len(far))
    assert cl.evaluate_claims({"e": near}, [ab], n_boot=300)["verdict"].item() == "supported"   # 78.63 in the CI
    assert cl.evaluate_claims({"e": far}, [ab], n_boot=300)["verdict"].item() == "contradicted"
    cost = _claim(kind="cost", a="dynamic", b="multi", metric="forward_ms", direction="less")
    times = lambda d, m: pd.DataFrame({"head": ["dynamic"] * 3 + ["multi"] * 3, "forward_ms": d + m})  # noqa: E731
    assert cl.evaluate_claims({"e": times([8, 9, 8.5], [10, 10, 10])}, [cost])["verdict"].item() == "supported"
    assert cl.evaluate_claims({"e": times([11, 12, 11], [10, 10, 10])}, [cost])["verdict"].item() == "contradicted"
    assert cl.evaluate_claims({"e": times([9, 11, 9], [10, 10, 10])}, [cost])["verdict"].item() == "inconclusive"
    t = cl.evaluate_claims({}, [c for c in cl.CLAIMS if c.key in ("generalisation", "avg_dice")])
    assert (t["verdict"] == "not testable here").all() and t["note"].str.len().min() > 10
    counts = cl.verdict_counts(t)
    assert counts["not testable here"] == 2 and sum(counts.values()) == 2
    assert "2 cannot be tested here" in cl.summary_sentence(counts, 2, "smoke")
    assert t["measured"].isna().all() and "- *" in cl.untested_list(t)
