"""Side by side with the authors' released network (vnet_odod_mix.VNet), when a copy of their
repository is available (VERSEMI_AUTHORS_REPO, or the session mirror). Their code is read at run time,
never copied here."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from versemi.model import VerSemiNet, load_authors_checkpoint

CANDIDATES = [os.environ.get("VERSEMI_AUTHORS_REPO", ""), "/work/.mirror/maxwell0027+VerSemi/repo"]


def _authors_vnet(tmp_path):
    for repo in filter(None, CANDIDATES):
        p = Path(repo)
        src = p / "vnet_odod_mix.py"
        if src.is_file():
            return _load(src)
        if p.is_dir():
            try:
                code = subprocess.check_output(["git", "-C", str(p), "show", "HEAD:vnet_odod_mix.py"], text=True)
            except (OSError, subprocess.CalledProcessError):
                continue
            dst = tmp_path / "vnet_odod_mix.py"
            dst.write_text(code)
            return _load(dst)
    pytest.skip("the authors' repository is not available here (set VERSEMI_AUTHORS_REPO)")


def _load(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("authors_vnet_odod_mix", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.VNet


def test_logits_equal_after_loading_their_weights(tmp_path):
    VNet = _authors_vnet(tmp_path)
    torch.manual_seed(0)
    theirs = VNet(n_classes=2, n_branches=1)
    for m in theirs.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
    ckpt = tmp_path / "best.pth"
    torch.save({"net": {"module." + k: v for k, v in theirs.state_dict().items()}, "opt": {}, "epoch": 1}, ckpt)
    ours = load_authors_checkpoint(VerSemiNet(), ckpt).eval()
    theirs.eval()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        for t in range(1, 6):
            ids = torch.tensor([t, t % 5 + 1])
            ref, _ = theirs(x, ids)
            assert (ours(x, ids) - ref).abs().max().item() <= 1e-4
