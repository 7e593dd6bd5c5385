"""The unseen-site evaluation: external cases of a run, the generalisation study's exports, drops with CIs."""

import numpy as np
import pandas as pd
import pytest

from versemi.config import make_config
from versemi.generalisation import drop_gap, drop_table, external_cases
from versemi.runs import get_or_train
from versemi.studies import load_study, run_study
from versemi.utils import VersemiError


def _cases(drops: dict, seeds=(1, 2, 3), n=12, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for row, drop in drops.items():
        for s in seeds:
            for ds, mean in (("spleen", 0.85), ("btcv", 0.85 - drop)):
                for i in range(n):
                    rows.append({"method": f"{row} 10%", "row": row, "seed": s, "dataset": ds, "case": f"{ds}{i}",
                                 "dice": mean + rng.normal(0, 0.01)})
    return pd.DataFrame(rows)


def test_drop_table_measures_msd_minus_unseen_with_an_interval_and_a_permutation_p():
    t = drop_table(_cases({"VerSemi": 0.0, "BCP": 0.05}), n_boot=500, n_perm=500).set_index("row")
    assert t.loc["BCP", "drop"] == pytest.approx(5.0, abs=0.7) and t.loc["BCP", "p_drop"] < 0.01
    assert t.loc["BCP", "drop_lo"] < t.loc["BCP", "drop"] < t.loc["BCP", "drop_hi"]
    assert abs(t.loc["VerSemi", "drop"]) < 0.7 and t.loc["VerSemi", "p_drop"] > 0.05
    assert (t["n_seeds"] == 3).all() and (t["n_msd"] == 36).all()
    with pytest.raises(VersemiError, match="lack column"):
        drop_table(pd.DataFrame({"method": ["a"]}))


def test_drop_gap_is_the_others_mean_drop_minus_versemi_s():
    g = drop_gap(_cases({"VerSemi": 0.0, "BCP": 0.03, "UA-MT": 0.01, "Fully supervised": 0.2}), n_boot=500)
    assert g["effect"] == pytest.approx(2.0, abs=0.6) and g["n_rows"] == 2 and g["p_greater"] < 0.05
    assert np.isnan(drop_gap(_cases({"BCP": 0.03}))["effect"])


def test_a_run_is_scored_on_the_unseen_site_and_the_study_exports_both_sets(smoke_root, tmp_path):
    prepared = smoke_root / "data" / "smoke" / "prepared"
    cfg = make_config("sup_only", "smoke", datasets=("spleen",))
    run_dir = get_or_train(cfg, prepared, smoke_root / "runs", progress=False)
    ext = external_cases(run_dir, smoke_root / "data", "smoke", 2333)
    assert set(ext["dataset"]) == {"btcv"} and ext["row"].unique().tolist() == ["Sup-only"] and len(ext) >= 2
    assert (run_dir / "eval" / "external_btcv.csv").is_file()
    la = get_or_train(make_config("sup_only", "smoke", datasets=("la",)), prepared, smoke_root / "runs",
                      progress=False)
    with pytest.raises(VersemiError, match="no spleen prompt"):
        external_cases(la, smoke_root / "data", "smoke", 2333)
    out = tmp_path / "studies"
    run_study("generalisation", "smoke", seeds=[2333], out=out, data_dir=smoke_root / "data",
              runs_root=smoke_root / "runs", labels=[cfg.label()], progress=False)
    res = load_study("generalisation", "smoke", out)
    assert set(res.cases["dataset"]) == {"spleen", "btcv"} and set(res.cases["seed"]) == {2333}
    table = drop_table(res.cases, n_boot=200, n_perm=200)
    assert table["row"].tolist() == ["Sup-only"] and table["n_unseen"].item() == len(ext)
