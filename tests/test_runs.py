"""Run folders: the cache, selection, the final evaluation with its provenance record, the long
per-case table built from config fields, and the code-fingerprint check."""

import json

import pandas as pd
import pytest

from versemi.cli import main
from versemi.config import make_config
from versemi.provenance import code_fingerprint
from versemi.runs import (
    collect_case_metrics,
    done_record,
    get_or_train,
    is_complete,
    load_run_net,
    run_available,
    run_dir_for,
    run_fields,
    run_times,
    selected_checkpoint,
    selection_table,
)
from versemi.utils import VersemiError


@pytest.fixture(scope="module")
def prepared(smoke_root):
    return smoke_root / "data" / "smoke" / "prepared"


def _cfg(method="sup_only", **kw):
    base = dict(steps=4, ckpt_every=2, val_every=3, datasets=("spleen",))
    base.update(kw)
    return make_config(method, "smoke", **base)


@pytest.fixture(scope="module")
def run(prepared, tmp_path_factory):
    return get_or_train(_cfg(), prepared, tmp_path_factory.mktemp("runs"), progress=False)


def test_same_seed_same_metrics_and_run_cache(prepared, run, tmp_path):
    cfg = _cfg()
    r2 = get_or_train(cfg, prepared, tmp_path / "r2", progress=False)
    assert run.name == r2.name and is_complete(run)
    for name in ("metrics.csv", "val.csv", "eval/test_spleen.csv"):
        x, y = pd.read_csv(run / name), pd.read_csv(r2 / name)
        pd.testing.assert_frame_equal(x.drop(columns=["seconds"], errors="ignore"),
                                      y.drop(columns=["seconds"], errors="ignore"))
    mtime = (run / "DONE.json").stat().st_mtime
    assert get_or_train(cfg, prepared, run.parent, progress=False) == run  # served from the cache
    assert (run / "DONE.json").stat().st_mtime == mtime
    assert run_dir_for(_cfg(seed=7), prepared, run.parent) != run


def test_done_record_holds_provenance_by_code(run):
    rec = done_record(run)
    cfg = make_config("sup_only", "smoke", steps=4, ckpt_every=2, val_every=3, datasets=("spleen",))
    prov = rec["provenance"]
    assert prov["code"] == code_fingerprint()
    assert prov["code_and_config"] == code_fingerprint(cfg.to_dict()) != prov["code"]
    assert set(prov["git"]) == {"commit", "dirty"} and prov["machine"]["cpus"] >= 1
    assert rec["label"] == "Sup-only (spleen) 10%" and "spleen" in rec["test"]


def test_selection_rule_picks_the_checkpoint(run, tmp_path):
    assert selected_checkpoint(run).name == "best.pt"
    assert selected_checkpoint(run, "last").name == "last.pt"
    net, cfg = load_run_net(run)
    assert not net.training and cfg.datasets == ("spleen",)
    sel = selection_table({"a": run})
    assert sel.to_dict("records") == [{"method": "a", "selection": "val", "checkpoint": "best.pt", "steps": 4}]
    with pytest.raises(VersemiError, match="config.yaml: config file not found"):
        selected_checkpoint(tmp_path / "none")


def test_case_table_is_built_from_config_fields(run):
    df = collect_case_metrics({"whatever key": run})
    assert set(df["method"]) == {"whatever key"} and set(df["dataset"]) == {"spleen"}
    row = df.iloc[0]
    assert (row["row"], row["method_id"], row["trained_on"], row["ratio"]) == ("Sup-only", "sup_only", "spleen", 10)
    assert bool(row["task_specific"]) and not bool(row["fully_supervised"])
    assert run_fields(make_config("bcp", "smoke"))["row"] == "Uni-BCP"
    assert run_fields(make_config("sup_only", "smoke", datasets=("la",), ratio=100))["row"] == "Fully supervised"
    t = run_times({"k": run})
    assert t.loc[0, "steps"] == 4 and t.loc[0, "row"] == "Sup-only" and t.loc[0, "train_seconds"] > 0


def test_tables_refuse_runs_of_different_code(run, tmp_path):
    import shutil

    other = tmp_path / run.name
    shutil.copytree(run, other)
    done = json.loads((other / "DONE.json").read_text())
    done["provenance"]["code"] = "0" * 16
    (other / "DONE.json").write_text(json.dumps(done))
    with pytest.raises(VersemiError, match="different code"):
        collect_case_metrics({"a": run, "b": other})
    assert len(collect_case_metrics({"a": run, "b": other}, check_code=False)) == 2 * len(collect_case_metrics({"a": run}))


def test_run_available_reports_what_the_data_cannot_support(prepared, tmp_path):
    cfgs = {"bad": make_config("uamt", "smoke", datasets=("spleen",), ratio=100, steps=2)}
    runs, skipped = run_available(cfgs, prepared, tmp_path / "runs")
    assert runs == {} and list(skipped["method"]) == ["bad"]
    assert "needs unlabeled cases" in skipped.loc[0, "reason"] and str(prepared) not in skipped.loc[0, "reason"]


def test_cli_evaluate_compiled_equals_eager(prepared, run, capsys):
    """`versemi evaluate --compile` writes the same per-case metrics as the eager evaluation."""
    eager = pd.read_csv(run / "eval" / "test_spleen.csv")
    assert main(["evaluate", str(run), "--data", str(prepared), "--compile", "--device", "cpu"]) == 0
    compiled = pd.read_csv(run / "eval" / "test_spleen.csv")
    assert len(compiled) == len(eager) > 0
    pd.testing.assert_frame_equal(compiled.drop(columns=["seconds"]), eager.drop(columns=["seconds"]),
                                  check_exact=False, atol=1e-6)
    assert '"spleen"' in capsys.readouterr().out
