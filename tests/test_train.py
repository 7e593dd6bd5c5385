"""The trainer: resume equivalence, non-finite losses, SIGKILL + resume, DDP (gloo), and a method
that declares two networks, two optimisers with their own schedules, a teacher and a stage hook."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from versemi.checkpoints import load_checkpoint
from versemi.config import make_config
from versemi.losses import supervised_loss
from versemi.methods import Method, build_optimizer, register, unregister
from versemi.runs import is_complete, run_dir_for
from versemi.train import OutOfMemory, TrainingDiverged, train
from versemi.utils import seed_everything

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
    for name in sa["nets"]:
        for k in sa["nets"][name]:
            assert torch.equal(sa["nets"][name][k], sb["nets"][name][k]), (name, k)
    pd.testing.assert_frame_equal(pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(a / "val.csv"), pd.read_csv(b / "val.csv"))


def test_activation_checkpointing_trains_the_same_network(prepared, tmp_path):
    """``checkpoint_activations`` (recompute the V-Net stages in backward) is memory for time only: the same
    run folder (not part of the identity) and the same weights after a few steps of both VerSemi stages."""
    plain, ck = _cfg("versemi"), _cfg("versemi", checkpoint_activations=True)
    assert ck.identity() == plain.identity()
    train(plain, prepared, tmp_path / "a", progress=False)
    train(ck, prepared, tmp_path / "b", progress=False)
    sa = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["nets"]["net"]
    sb = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["nets"]["net"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-6, msg=k)


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


def test_out_of_memory_names_the_knobs_and_keeps_the_checkpoint(prepared, tmp_path, monkeypatch):
    from versemi.methods import sup_only

    orig = sup_only.SupOnly.step

    def oom(self, ctx, lab, unlab):
        if ctx.step == 3:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 8589934592 bytes")
        return orig(self, ctx, lab, unlab)

    monkeypatch.setattr(sup_only.SupOnly, "step", oom)
    run = tmp_path / "oom"
    with pytest.raises(OutOfMemory, match=r"out of memory in training at step 3 \(batch_size=2 labeled .*patch=\[32, 32, 32\]"
                                          r".*--set batch_size=2"):
        train(_cfg("sup_only", ckpt_every=1), prepared, run, progress=False)
    assert load_checkpoint(run)["step"] == 3


OOM_SCRIPT = """
import resource, sys
from versemi.config import make_config
from versemi.train import train
cfg = make_config("sup_only", "smoke", datasets=("la",), steps=2, patch=(96, 96, 96), batch_size=8, n_filters=16,
                  val_every=100, ckpt_every=100)
vm = [int(x.split()[1]) * 1024 for x in open("/proc/self/status") if x.startswith("VmSize")][0]
resource.setrlimit(resource.RLIMIT_AS, (vm + 1_500_000_000, resource.RLIM_INFINITY))
train(cfg, sys.argv[1], sys.argv[2], progress=False)
"""


def test_a_real_allocation_failure_under_an_address_space_limit(prepared, tmp_path):
    (tmp_path / "oom.py").write_text(OOM_SCRIPT)
    res = subprocess.run([sys.executable, str(tmp_path / "oom.py"), str(prepared), str(tmp_path / "run")],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "OutOfMemory" in res.stderr and "reduce them" in res.stderr, res.stderr[-2000:]


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
    # the killed holder's lock is taken over with a warning naming it, and training resumed
    assert f"taking over the lock of pid {proc.pid}" in done.stderr
    ref = subprocess.run(cmd + [str(tmp_path / "ref")], env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    ref_run = run_dir_for(cfg, prepared, tmp_path / "ref")
    pd.testing.assert_frame_equal(pd.read_csv(run / "metrics.csv"), pd.read_csv(ref_run / "metrics.csv"))


DDP_SCRIPT = """
import hashlib, sys, torch
from versemi.config import RunConfig
from versemi.methods import Method
from versemi.train import train
cfg = RunConfig.from_yaml(sys.argv[1])
net_out = {}
orig = Method.build_networks
def capture(self, c):
    nets = orig(self, c); net_out["net"] = nets["net"]; return nets
Method.build_networks = capture
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




# --------------------------------------------------------------------------- a method with two networks
class Critic(torch.nn.Module):
    """A tiny discriminator on (image, foreground probability) pairs: (B, 2, D, H, W) -> (B,) logits."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 4, 3, stride=4)
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean(dim=(2, 3, 4))).squeeze(1)


class TwoNets(Method):
    """Adversarial test method in the manner of ASE-Net: a segmenter ("net", with an EMA teacher) and a
    critic ("critic") with its own optimiser and learning-rate schedule; stage "adv" starts with a
    fresh critic optimiser (as BCP's fresh optimiser between stages); the critic is updated first, then
    the segmenter, in one step."""

    name = "two_nets_probe"
    display_name = "TwoNets"
    uses_unlabeled = True
    uses_teacher = True
    default_options = {"critic_lr": 0.05}

    def build_networks(self, cfg):
        nets = super().build_networks(cfg)
        nets["critic"] = Critic()
        return nets

    def build_optimizers(self, cfg, nets):
        return {"net": build_optimizer(cfg, nets["net"].parameters()),
                "critic": torch.optim.SGD(nets["critic"].parameters(), lr=self.options["critic_lr"])}

    def lr_at(self, cfg, optimizer, step):
        return self.options["critic_lr"] / (1 + step) if optimizer == "critic" else super().lr_at(cfg, optimizer, step)

    def stages(self, steps):
        return [("sup", steps // 2), ("adv", steps - steps // 2)]

    def on_stage_start(self, stage, ctx):
        if stage == "adv":
            ctx.optimizers["critic"] = torch.optim.SGD(ctx.nets["critic"].parameters(), lr=self.options["critic_lr"])

    def train_step(self, ctx, lab, unlab):
        x, y, t = lab["image"], lab["label"], lab["task"]
        logits = ctx.net(x, t)
        sup = supervised_loss(logits, y)
        if ctx.stage == "sup":
            ctx.update({"loss": sup}, "net")
            return {"loss": sup, "sup": sup.detach()}
        p_u = torch.softmax(ctx.net(unlab["image"], unlab["task"]), 1)[:, 1:]
        real = torch.cat([x, y[:, None].float()], 1)
        fake = torch.cat([unlab["image"], p_u.detach()], 1)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        d_loss = bce(ctx.nets["critic"](real), torch.ones(len(x))) + bce(ctx.nets["critic"](fake), torch.zeros(len(fake)))
        ctx.update({"loss": d_loss}, "critic")
        adv = bce(ctx.nets["critic"](torch.cat([unlab["image"], p_u], 1)), torch.ones(len(fake)))
        loss = sup + 0.1 * adv
        ctx.update({"loss": loss}, "net")
        return {"loss": loss.detach(), "sup": sup.detach(), "adv": adv.detach(), "critic": d_loss.detach()}


@pytest.fixture
def two_nets():
    register(TwoNets)
    yield TwoNets
    unregister(TwoNets.name)


def test_a_method_with_two_networks_and_two_optimizers(prepared, tmp_path, two_nets):
    cfg = _cfg("two_nets_probe", steps=6, ckpt_every=2, val_every=3, datasets=("la",), head="none")
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg, prepared, a, progress=False)
    state = load_checkpoint(a)
    assert set(state["nets"]) == {"net", "teacher", "critic"} and set(state["optimizers"]) == {"net", "critic"}
    m = pd.read_csv(a / "metrics.csv")
    assert list(m["stage"]) == ["sup"] * 3 + ["adv"] * 3
    assert m["lr_critic"].tolist() == pytest.approx([0.05 / (1 + s) for s in range(6)])
    assert m["critic"].iloc[3:].notna().all() and m["critic"].iloc[:3].isna().all()
    # the critic learns only in the adversarial stage; the teacher is an average, not a copy, of the student
    seed_everything(cfg.seed)
    init = TwoNets().build_networks(cfg)
    c = tmp_path / "c"
    train(cfg, prepared, c, progress=False, stop_after=3)
    at3 = load_checkpoint(c)["nets"]
    assert all(torch.equal(v, at3["critic"][k]) for k, v in init["critic"].state_dict().items())
    assert not all(torch.equal(v, state["nets"]["critic"][k]) for k, v in init["critic"].state_dict().items())
    w = "block_one.conv.conv.0.weight"
    w = w if w in state["nets"]["net"] else next(k for k in state["nets"]["net"] if k.endswith("weight"))
    assert not torch.equal(state["nets"]["teacher"][w], state["nets"]["net"][w])
    assert not torch.equal(state["nets"]["teacher"][w], init["net"].state_dict()[w])
    # interrupted inside the adversarial stage and resumed: the same trajectory, both optimisers restored
    train(cfg, prepared, b, progress=False, stop_after=4)
    assert load_checkpoint(b)["step"] == 4
    train(cfg, prepared, b, progress=False)
    sb = load_checkpoint(b)
    for name in state["nets"]:
        for k in state["nets"][name]:
            assert torch.equal(state["nets"][name][k], sb["nets"][name][k]), (name, k)
    pd.testing.assert_frame_equal(m, pd.read_csv(b / "metrics.csv"))
