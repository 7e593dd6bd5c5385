"""Run folders: the cache, selection, the final evaluation with its provenance record, the long
per-case table built from config fields, and the code-fingerprint check."""

import json
import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

from versemi import runs as R
from versemi.cli import main
from versemi.config import make_config
from versemi.locks import holder_of
from versemi.provenance import CodeChangedWarning, code_fingerprint
from versemi.runs import (
    collect_case_metrics,
    done_record,
    evaluate_run,
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


def test_two_concurrent_trainings_of_one_run_train_it_once(prepared, tmp_path):
    """Two `versemi train` of the same config into one run cache: one trains (one TensorBoard event
    file), the other says whom it waits for and then serves the same finished run."""

    cfg = _cfg(steps=300, ckpt_every=100, val_every=1000)   # long enough for the second to start meanwhile
    (tmp_path / "cfg.yaml").write_text(cfg.to_yaml())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "versemi.cli", "train", "--config", str(tmp_path / "cfg.yaml"), "--data",
           str(prepared), "--runs", str(tmp_path / "runs")]
    run = run_dir_for(cfg, prepared, tmp_path / "runs")
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (holder_of(run) or {}).get("pid") == first.pid and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    out1, err1 = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, (err1[-1500:], second.stderr[-1500:])
    assert out1.strip() == second.stdout.strip() == str(run)
    assert f"waiting for pid {first.pid}" in second.stderr
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    assert done_record(run)["provenance"]["argv"][1:3] == ["train", "--config"]
    # without waiting, a busy run is a one-line error naming the holder (exit code 2)
    busy = subprocess.Popen(cmd[:-1] + [str(tmp_path / "runs2")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    run2 = run_dir_for(cfg, prepared, tmp_path / "runs2")
    while not (holder_of(run2) or {}).get("pid") == busy.pid and time.time() < deadline + 120:
        time.sleep(0.05)
    nowait = subprocess.run(cmd[:-1] + [str(tmp_path / "runs2"), "--no-wait"], env=env, capture_output=True,
                            text=True, timeout=120)
    busy.kill()
    busy.wait()
    assert nowait.returncode == 2 and f"being written by pid {busy.pid}" in nowait.stderr


def test_evaluation_refuses_data_of_another_profile(run, prepared, tmp_path):

    other = tmp_path / "prepared"
    shutil.copytree(prepared, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["datasets"]["spleen"]["profile"] = "demo"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VersemiError, match=r"spleen was prepared with profile 'demo' but the run was trained "
                                           r"with profile 'smoke'"):
        evaluate_run(run, other, progress=False)


def test_evaluating_with_other_code_warns_naming_both(run, prepared, monkeypatch):
    monkeypatch.setattr(R, "code_state", lambda method=None: {"fingerprint": "f" * 16, "commit": "abc", "dirty": False})
    with pytest.warns(CodeChangedWarning, match=r"other code .*now commit abc \(code f{16}\)"):
        evaluate_run(run, prepared, progress=False)


def test_out_of_memory_in_evaluation_names_the_windows_per_call(run, prepared, monkeypatch):
    def oom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(R, "evaluate_cases", oom)
    with pytest.raises(VersemiError, match=r"out of memory evaluating spleen \(8 windows of \[32, 32, 32\] per call\); "
                                           r"use `versemi evaluate --batch-size 1`"):
        evaluate_run(run, prepared, progress=False)
