"""The box that says where a page's numbers come from."""

import pandas as pd

from versemi.companion.evidence import evidence_statement
from versemi.provenance import DATA_CODE, code_fingerprint, method_fingerprint
from versemi.studies import StudyResults


def record(label, seed, code, commit="abcdef1234567890"):
    return {"label": label, "seed": seed, "config": {"ratio": 10, "method": "versemi"},
            "provenance": {"code": code, "data_code": code_fingerprint(entries=DATA_CODE),
                           "method_code": method_fingerprint("versemi"), "git": {"commit": commit},
                           "machine": {"platform": "Linux-x", "cpus": 2, "cuda": None}}}


def results(records, source="committed"):
    cases = pd.DataFrame([{"method": r["label"], "seed": r["seed"], "case": "c", "dice": 0.5} for r in records])
    return StudyResults("sota", "demo", cases, pd.DataFrame(), pd.DataFrame(), records, source=source)


def test_committed_results_name_seeds_commit_machine_and_the_command():
    text = evidence_statement(results([record("A", 2333, code_fingerprint()), record("A", 1, code_fingerprint()),
                                       record("B", 2333, code_fingerprint()), record("B", 1, code_fingerprint())]))
    assert text.startswith("**Committed results**") and "2 runs x seeds 1, 2333" in text
    assert "abcdef1234" in text and "Linux-x, 2 CPU cores" in text
    assert "is the code that produced them" in text
    assert "`versemi study run sota --profile demo --seeds 1 2333`" in text
    assert "not every run" not in text


def test_changed_code_and_missing_seeds_and_runs_are_said():
    res = results([record("A", 2333, "0" * 16), record("A", 1, "0" * 16), record("B", 2333, "0" * 16)])
    res.missing = ["C", "D"]
    text = evidence_statement(res)
    assert "has changed since" in text and "1 to 2 seeds per run" in text
    assert text.endswith("**Not committed yet** (absent from the tables): C, D.")


def test_live_results_say_so():
    text = evidence_statement(results([record("A", 2333, code_fingerprint())], source="live"))
    assert text.startswith("**Computed live**") and "seed 2333" in text
