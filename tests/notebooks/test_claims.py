"""Notebook 00 (the claims chapter): every claim gets a computed verdict from this build's evidence."""

from __future__ import annotations

import pandas as pd

from versemi.companion.notebooks import execute_notebooks
from versemi.provenance import REPO_ROOT

from ..notebook_helpers import errors, glued, referenced

# the unseen-site claim would score every spleen model of the group live in the smoke profile (minutes): its
# computation is tested in tests/test_generalisation.py and through the SOTA page's unseen-site table
CLAIMS = ["avg_dice", "la_bcp", "la_bcp_real", "pancreas_value", "laux", "head_params", "tsne"]


def test_claims_chapter_gives_each_claim_a_verdict(smoke_root, tmp_path):
    res_dir = smoke_root   # the live runs share the session's run cache with the other notebook tests
    params = {"data_dir": str(smoke_root / "data"), "results_dir": str(res_dir), "claims_only": CLAIMS,
              "studies_dir": str(tmp_path / "no-studies"), "n_boot": 200}
    res = execute_notebooks(["00_claims"], "smoke", params, tmp_path, root=REPO_ROOT)
    assert res[0].status == "ok", res[0].error
    nb = tmp_path / "00_claims.ipynb"
    assert errors(nb) == []
    values = glued(nb)
    assert referenced(nb) <= set(values)
    table = pd.read_csv(res_dir / "smoke" / "00_claims" / "tables" / "claims.csv").set_index("claim")
    assert list(table.index) == CLAIMS
    v = table["verdict"]
    assert v["pancreas_value"] == "not testable here" and v["tsne"] == "not testable here"
    assert v["head_params"] in ("supported", "contradicted")          # counted, so always decided
    assert v["avg_dice"] in ("supported", "contradicted", "inconclusive")   # measured on the live smoke runs
    assert table.loc["avg_dice", "n_seeds"] == 1 and table.loc["la_bcp_real", "n"] == 20   # real LA: 20 test cases
    counts = {k: int(values[f"claims_{k}"].strip("'")) for k in ("supported", "contradicted", "inconclusive")}
    assert sum(counts.values()) + int(values["claims_not_testable_here"].strip("'")) == len(CLAIMS)
