"""Studies: seed-major training, the committed export of each run, reading it back, skipping what is done."""

import json

import pandas as pd
import pytest

from versemi.companion.evidence import evidence_statement
from versemi.data.ensure import prepared_dir
from versemi.data.prepare import load_manifest
from versemi.studies import (
    export_dir,
    exported_by_current_code,
    load_study,
    run_key,
    run_study,
    study_configs,
    study_results,
    study_status,
)
from versemi.utils import VersemiError

LABEL = "Fully supervised (la) 100%"


def test_run_key_is_a_plain_folder_name():
    assert run_key("Sup-only (LA) 10%") == "sup-only-la-10"
    assert run_key("w/o L_aux") == "w-o-l-aux"


def test_unknown_study_and_run_are_errors():
    with pytest.raises(VersemiError, match="unknown study"):
        study_configs("nope", "smoke", 1)
    with pytest.raises(VersemiError, match="has no run"):
        run_study("curves", "smoke", seeds=[2333], labels=["nope"], out="unused")


def test_a_study_over_two_seeds_is_exported_read_back_and_not_retrained(smoke_root, tmp_path):
    out = tmp_path / "studies"
    data_dir = smoke_root / "data"
    seen = []
    paths = run_study("curves", "smoke", seeds=[2333, 1], out=out, data_dir=data_dir, runs_root=smoke_root / "runs",
                      labels=[LABEL], progress=False, on_export=seen.append)
    assert paths == seen and len(paths) == 2
    assert paths[0] == export_dir(out, "smoke", "curves", LABEL, 2333)
    # seed 1 is another draw of the phantoms, beside the default one, with its own validation split
    assert load_manifest(prepared_dir(data_dir, "smoke", 1))["seed"] == 1
    for p in paths:
        assert sorted(f.name for f in p.iterdir()) == ["cases.csv", "loss.csv", "run.json", "val.csv"]
        rec = json.loads((p / "run.json").read_text())
        assert rec["label"] == LABEL and rec["provenance"]["code"]
    res = load_study("curves", "smoke", out)
    assert res.seeds == [1, 2333] and res.code_is_current()
    assert set(res.cases["seed"]) == {1, 2333} and set(res.cases["dataset"]) == {"la"}
    assert res.cases.groupby("seed")["case"].nunique().eq(res.cases["case"].nunique()).all()
    assert res.val["dice"].notna().any() and set(res.val["seed"]) == {1, 2333}
    assert len(res.losses) == 2 * res.records[0]["config"]["steps"]
    assert "--seeds 1 2333" in res.command()
    # the recorded run folders are the hash of config + data: the data check recomputes them
    assert res.same_data(prepared_dir(data_dir, "smoke", 2333), 2333) is True
    assert res.same_data(prepared_dir(data_dir, "smoke", 1), 2333) is False
    assert res.same_data(prepared_dir(data_dir, "smoke", 1), 7) is None
    from versemi.companion.evidence import evidence_statement
    assert "trained on exactly the data this build prepared" in evidence_statement(
        res, prepared_dir(data_dir, "smoke", 1), 1)
    # two draws, two different sets of scores
    by_seed = res.cases.pivot_table(index="case", columns="seed", values="dice")
    assert not by_seed[1].equals(by_seed[2333])
    # a second call finds everything exported by the current code: nothing is trained or rewritten
    mtime = (paths[0] / "cases.csv").stat().st_mtime_ns
    assert run_study("curves", "smoke", seeds=[2333, 1], out=out, data_dir=data_dir,
                     runs_root=smoke_root / "runs", labels=[LABEL], progress=False) == []
    assert (paths[0] / "cases.csv").stat().st_mtime_ns == mtime
    status = study_status("curves", "smoke", seeds=[2333, 1], out=out)
    row = status[status["run"] == LABEL]
    assert row["exported"].all() and row["current_code"].all()
    assert not status[status["run"] != LABEL]["exported"].any()


def test_an_export_trained_on_other_data_is_stale_and_retrained(smoke_root, tmp_path):
    """A recalibrated phantom generator keeps the code fingerprint but changes the data: the export whose
    run folder (hash of config + manifest) is not the one of this data is retrained, not skipped."""
    out = tmp_path / "studies"
    kw = dict(seeds=[2333], out=out, data_dir=smoke_root / "data", runs_root=smoke_root / "runs", labels=[LABEL],
              progress=False)
    (dest,) = run_study("curves", "smoke", **kw)
    cfg = study_configs("curves", "smoke", 2333)[LABEL]
    prepared = prepared_dir(smoke_root / "data", "smoke", 2333)
    assert exported_by_current_code(dest, cfg, prepared)
    rec = json.loads((dest / "run.json").read_text())
    rec["run"] = "sup_only-000000000000"      # as if trained on another draw of the phantoms
    (dest / "run.json").write_text(json.dumps(rec))
    assert exported_by_current_code(dest)                       # the code alone still matches
    assert not exported_by_current_code(dest, cfg, prepared)    # the data does not
    assert run_study("curves", "smoke", **kw) == [dest]
    assert json.loads((dest / "run.json").read_text())["run"] != "sup_only-000000000000"


def test_a_study_of_mixed_code_is_refused(smoke_root, tmp_path):
    out = tmp_path / "studies"
    run_study("curves", "smoke", seeds=[2333], out=out, data_dir=smoke_root / "data", runs_root=smoke_root / "runs",
              labels=[LABEL], progress=False)
    src = export_dir(out, "smoke", "curves", LABEL, 2333)
    other = src.with_name("seed-7")
    other.mkdir()
    for f in src.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    rec = json.loads((other / "run.json").read_text())
    rec["seed"], rec["provenance"]["code"] = 7, "0" * 16
    (other / "run.json").write_text(json.dumps(rec))
    with pytest.raises(VersemiError, match="different code"):
        load_study("curves", "smoke", out)
    assert load_study("curves", "smoke", tmp_path / "nothing") is None
    assert isinstance(load_study("curves", "smoke", out, labels=["nope"]), type(None))
    assert isinstance(pd.read_csv(src / "cases.csv"), pd.DataFrame)


def test_a_run_whose_method_was_fixed_shows_the_seeds_of_one_method_code(smoke_root, tmp_path):
    out = tmp_path / "studies"
    run_study("curves", "smoke", seeds=[2333], out=out, data_dir=smoke_root / "data", runs_root=smoke_root / "runs",
              labels=[LABEL], progress=False)
    src = export_dir(out, "smoke", "curves", LABEL, 2333)

    def copy(seed, method_code, time, base=src):
        dest = src.with_name(f"seed-{seed}")
        dest.mkdir()
        for f in base.iterdir():
            (dest / f.name).write_bytes(f.read_bytes())
        rec = json.loads((dest / "run.json").read_text())
        rec["seed"], rec["provenance"]["method_code"], rec["provenance"]["time"] = seed, method_code, time
        (dest / "run.json").write_text(json.dumps(rec))
        cases = pd.read_csv(dest / "cases.csv").assign(seed=seed)
        cases.to_csv(dest / "cases.csv", index=False)

    # two seeds of an older method module beside the current one's seed: the current one's seeds are shown
    copy(7, "old", "2026-01-01")
    copy(8, "old", "2026-01-02")
    res = load_study("curves", "smoke", out)
    assert res.seeds == [2333] and set(res.cases["seed"]) == {2333}
    assert sorted(res.method_code_left_out) == [f"{LABEL} seed 7", f"{LABEL} seed 8"]
    assert f"method's code has changed since: {LABEL} seed 7" in evidence_statement(res)
    # without the current module's seeds: the method code with the most seeds
    copy(9, "newer", "2026-02-01", base=src.with_name("seed-7"))
    (src / "run.json").unlink()
    res = load_study("curves", "smoke", out)
    assert res.seeds == [7, 8] and res.method_code_left_out == [f"{LABEL} seed 9"]


def test_study_results_prefers_committed_and_names_what_is_missing(smoke_root, tmp_path):
    out = tmp_path / "studies"
    run_study("curves", "smoke", seeds=[2333], out=out, data_dir=smoke_root / "data", runs_root=smoke_root / "runs",
              labels=[LABEL], progress=False)
    res = study_results("curves", "smoke", out=out, data_dir=smoke_root / "data", runs_root=smoke_root / "runs")
    assert res.source == "committed" and [r["label"] for r in res.records] == [LABEL]
    assert len(res.missing) == 7 and LABEL not in res.missing
    live = study_results("curves", "smoke", source="live", labels=[LABEL], out=out, data_dir=smoke_root / "data",
                         runs_root=smoke_root / "runs", progress=False)
    assert live.source == "live" and live.cases.equals(res.cases)   # the same run, served by the cache
    with pytest.raises(VersemiError, match="no committed results"):
        study_results("sota", "smoke", source="committed", out=out)
    with pytest.raises(VersemiError, match="results source"):
        study_results("sota", "smoke", source="cache", out=out)


def test_choose_code_keeps_the_most_complete_evidence_while_a_new_code_retrains():
    from versemi.studies import choose_code, current_version

    cur = current_version()
    old = {"runs": {("A", 1), ("B", 1), ("C", 1)}, "time": "2026-01-01"}
    new = {"runs": {("A", 1)}, "time": "2026-02-01"}
    assert choose_code({}, ["A"]) == (None, {})
    assert choose_code({"old": old, cur: new}, ["A", "B", "C", "D"]) == ("old", {cur: 1})
    new["runs"] |= {("B", 1), ("C", 1), ("D", 1)}
    assert choose_code({"old": old, cur: new}, ["A", "B", "C", "D"]) == (cur, {"old": 3})
    # without the current code: the better covered, then the newer
    assert choose_code({"x": old, "y": {"runs": {("A", 2), ("B", 2), ("C", 2)}, "time": "2026-03-01"}},
                       ["A", "B", "C"])[0] == "y"


def test_runs_on_another_draw_of_the_phantoms_are_another_evidence_version(smoke_root, tmp_path):
    """Same training code, recalibrated generator (another data-code fingerprint): the old draw's runs
    are grouped apart, and a page shows one version only."""
    from versemi.studies import committed_codes, current_version

    out = tmp_path / "studies"
    (src,) = run_study("curves", "smoke", seeds=[2333], out=out, data_dir=smoke_root / "data",
                       runs_root=smoke_root / "runs", labels=[LABEL], progress=False)
    other = export_dir(out, "smoke", "curves", "Sup-only (la) 10%", 2333)
    other.mkdir(parents=True)
    for f in src.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    rec = json.loads((other / "run.json").read_text())
    rec["label"], rec["provenance"]["data_code"] = "Sup-only (la) 10%", "0" * 16
    (other / "run.json").write_text(json.dumps(rec))
    versions = committed_codes("curves", "smoke", out)
    assert len(versions) == 2 and current_version() in versions
    shown = load_study("curves", "smoke", out, code=current_version())
    assert [r["label"] for r in shown.records] == [LABEL]


def test_a_probed_run_exports_its_conflict_scalars_and_reads_them_back(smoke_root, tmp_path):
    from versemi.experiments import CONFLICT_PROBED, CONFLICT_UNI_PROBED

    out = tmp_path / "studies"
    labels = [CONFLICT_PROBED, CONFLICT_UNI_PROBED, "VerSemi 10%"]
    paths = run_study("conflict", "smoke", seeds=[2333], out=out, data_dir=smoke_root / "data",
                      runs_root=smoke_root / "runs", labels=labels, progress=False)
    files = {p.parent.name: sorted(f.name for f in p.iterdir()) for p in paths}
    assert "conflict.csv" in files[run_key(CONFLICT_PROBED)] and "conflict.csv" in files[run_key(CONFLICT_UNI_PROBED)]
    assert "conflict.csv" not in files[run_key("VerSemi 10%")]     # a plain run logs no conflict
    res = load_study("conflict", "smoke", out)
    steps = res.records[0]["config"]["steps"]
    probed = res.conflict[res.conflict["method"] == CONFLICT_PROBED]
    every = study_configs("conflict", "smoke", 2333)[CONFLICT_PROBED].options["probe_every"]
    assert list(probed["step"]) == list(range(0, steps, every))
    assert any(c.startswith("conflict/all/cos/") and c.endswith("~synthetic") for c in probed)
    assert set(res.conflict["method"]) == set(labels[:2])
    live = study_results("conflict", "smoke", source="live", data_dir=smoke_root / "data",
                         runs_root=smoke_root / "runs", labels=labels, progress=False)
    pd.testing.assert_frame_equal(live.conflict.sort_values(["method", "step"]).reset_index(drop=True)[probed.columns],
                                  res.conflict.sort_values(["method", "step"]).reset_index(drop=True)[probed.columns],
                                  check_dtype=False, atol=1e-6)
