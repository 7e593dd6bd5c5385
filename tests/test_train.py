"""The trainer: resume equivalence, determinism, non-finite losses, corrupt checkpoints, DDP (gloo)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from versemi.experiments import get_or_train, is_complete, make_config, run_dir_for
from versemi.train import TrainingDiverged, load_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(smoke_root):
    return smoke_root / "data" / "smoke" / "prepared"


def _cfg(method="versemi", **kw):
    base = dict(steps=6, ckpt_every=2, val_every=3)
    base.update(kw)
    return make_config(method, "smoke", **base)


@pytest.mark.parametrize("method", ["versemi", "uamt"])
def test_resume_gives_the_uninterrupted_trajectory(prepared, tmp_path, method):
    cfg = _cfg(method, options={"mc_passes": 2} if method == "uamt" else {})
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg, prepared, a, progress=False)
    train(cfg, prepared, b, progress=False, stop_after=3)   # stage boundary for versemi is at step 3
    assert load_checkpoint(b)["step"] == 3
    train(cfg, prepared, b, progress=False)
    sa = torch.load(a / "last.pt", weights_only=False)
    sb = torch.load(b / "last.pt", weights_only=False)
    for k in sa["net"]:
        assert torch.equal(sa["net"][k], sb["net"][k]), k
    pd.testing.assert_frame_equal(pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(a / "val.csv"), pd.read_csv(b / "val.csv"))


def test_same_seed_same_metrics_and_run_cache(prepared, tmp_path):
    cfg = _cfg("sup_only", datasets=("spleen",), steps=4)
    r1 = get_or_train(cfg, prepared, tmp_path / "r1", progress=False)
    r2 = get_or_train(cfg, prepared, tmp_path / "r2", progress=False)
    assert r1.name == r2.name and is_complete(r1)
    for name in ("metrics.csv", "val.csv", "eval/test_spleen.csv"):
        x, y = pd.read_csv(r1 / name), pd.read_csv(r2 / name)
        pd.testing.assert_frame_equal(x.drop(columns=["seconds"], errors="ignore"),
                                      y.drop(columns=["seconds"], errors="ignore"))
    mtime = (r1 / "DONE.json").stat().st_mtime
    assert get_or_train(cfg, prepared, tmp_path / "r1", progress=False) == r1  # served from the cache
    assert (r1 / "DONE.json").stat().st_mtime == mtime
    other = _cfg("sup_only", datasets=("spleen",), steps=4, seed=7)
    assert run_dir_for(other, prepared, tmp_path / "r1") != r1


def test_non_finite_loss_stops_with_step_and_term(prepared, tmp_path, monkeypatch):
    from versemi.methods import sup_only

    orig = sup_only.SupOnly.step

    def bad(self, ctx, lab, unlab):
        out = orig(self, ctx, lab, unlab)
        if ctx.step == 3:
            out["sup"] = out["sup"] * float("nan")
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(sup_only.SupOnly, "step", bad)
    run = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at step 3 .*terms: loss, sup"):
        train(_cfg("sup_only", ckpt_every=1), prepared, run, progress=False)
    assert load_checkpoint(run)["step"] == 3  # the last good checkpoint is kept


def test_corrupt_last_checkpoint_falls_back_to_previous(prepared, tmp_path):
    run = tmp_path / "c"
    train(_cfg("sup_only", ckpt_every=1, steps=4), prepared, run, progress=False, stop_after=3)
    (run / "last.pt").write_bytes(b"\x00garbage")
    with pytest.warns(UserWarning, match=r"last.pt: unreadable checkpoint"):
        state = load_checkpoint(run)
    assert state["step"] == 2


def test_sigkill_then_resume_matches_uninterrupted(prepared, tmp_path):
    cfg = _cfg("sup_only", steps=40, ckpt_every=2, val_every=100)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(cfg.to_yaml())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "versemi.cli", "train", "--config", str(cfg_path), "--data", str(prepared),
           "--no-eval", "--runs"]
    proc = subprocess.Popen(cmd + [str(tmp_path / "killed")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    run = run_dir_for(cfg, prepared, tmp_path / "killed")
    deadline = time.time() + 120
    while time.time() < deadline:
        st = load_checkpoint(run) if (run / "last.pt").is_file() else None
        if st and st["step"] >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not is_complete(run)
    done = subprocess.run(cmd + [str(tmp_path / "killed")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    ref = subprocess.run(cmd + [str(tmp_path / "ref")], env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    ref_run = run_dir_for(cfg, prepared, tmp_path / "ref")
    pd.testing.assert_frame_equal(pd.read_csv(run / "metrics.csv"), pd.read_csv(ref_run / "metrics.csv"))


DDP_SCRIPT = """
import hashlib, sys, torch
from versemi.experiments import RunConfig
from versemi.train import train
import torch.distributed as dist
cfg = RunConfig.from_yaml(sys.argv[1])
net_out = {}
import versemi.train as T
orig = T.build_net
def capture(c):
    net = orig(c); net_out["net"] = net; return net
T.build_net = capture
train(cfg, sys.argv[2], sys.argv[3], progress=False)
h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in net_out["net"].parameters())).hexdigest()
import os
open(os.path.join(sys.argv[3], f"params_rank{os.environ['RANK']}.txt"), "w").write(h)
"""


def test_ddp_two_cpu_processes_gloo(prepared, tmp_path):
    cfg = _cfg("sup_only", steps=3, ckpt_every=3, val_every=100, datasets=("la",))
    (tmp_path / "cfg.yaml").write_text(cfg.to_yaml())
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "run"
    res = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(tmp_path / "ddp.py"),
                          str(tmp_path / "cfg.yaml"), str(prepared), str(out)],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    h0, h1 = (out / "params_rank0.txt").read_text(), (out / "params_rank1.txt").read_text()
    assert h0 == h1  # averaged gradients keep the replicas identical
    assert load_checkpoint(out)["step"] == 3


def test_cli_evaluate_compiled_equals_eager(prepared, tmp_path, capsys):
    """`versemi evaluate --compile` writes the same per-case metrics as the eager evaluation."""
    from versemi.cli import main

    cfg = _cfg("sup_only", datasets=("spleen",), steps=4)
    run = get_or_train(cfg, prepared, tmp_path / "runs", progress=False)
    eager = pd.read_csv(run / "eval" / "test_spleen.csv")
    assert main(["evaluate", str(run), "--data", str(prepared), "--compile", "--device", "cpu"]) == 0
    compiled = pd.read_csv(run / "eval" / "test_spleen.csv")
    assert len(compiled) == len(eager) > 0
    pd.testing.assert_frame_equal(compiled.drop(columns=["seconds"]), eager.drop(columns=["seconds"]),
                                  check_exact=False, atol=1e-6)
    assert '"spleen"' in capsys.readouterr().out
