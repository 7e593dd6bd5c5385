"""DoDNet is the companion's dynamic-head network trained supervised on every dataset's labeled cases:
in the CPU profiles it is Uni-Sup-only, step for step; the paper profile has its released training."""

import pandas as pd
import pytest
import torch

from versemi.config import make_config
from versemi.methods import get_method
from versemi.model import VerSemiNet
from versemi.train import train
from versemi.utils import VersemiError


def test_dodnet_is_uni_sup_only_in_the_cpu_profiles(smoke_root, tmp_path):
    prepared = smoke_root / "data" / "smoke" / "prepared"
    kw = dict(steps=3, val_every=3, ckpt_every=3)
    a, b = make_config("dodnet", "smoke", **kw), make_config("sup_only", "smoke", **kw)
    assert a.to_dict() | {"method": "x"} == b.to_dict() | {"method": "x"}   # only the method name differs
    assert a.head == "dynamic" and a.row_name() == "DoDNet" and b.row_name() == "Uni-Sup-only"
    train(a, prepared, tmp_path / "a", progress=False)
    train(b, prepared, tmp_path / "b", progress=False)
    la, lb = pd.read_csv(tmp_path / "a" / "metrics.csv"), pd.read_csv(tmp_path / "b" / "metrics.csv")
    pd.testing.assert_frame_equal(la, lb)
    wa = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["nets"]["net"]
    wb = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["nets"]["net"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_dodnet_paper_profile_has_the_released_training_and_is_never_task_specific():
    cfg = make_config("dodnet", "paper")
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.steps, cfg.batch_size, cfg.patch) == \
        ("sgd", 1e-3, 0.99, 0.0, 125000, 2, (64, 64, 64))
    m = get_method("dodnet")
    opt = m.build_optimizers(cfg, {"net": VerSemiNet(n_filters=4)})["net"]
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.99
    assert m.lr_at(cfg, "net", 0) == 1e-3 and m.lr_at(cfg, "net", 249) == 1e-3          # epoch 0
    assert m.lr_at(cfg, "net", 250) == pytest.approx(1e-3 * (1 - 1 / 500) ** 0.9)      # epoch 1
    assert m.lr_at(cfg, "net", 124999) == pytest.approx(1e-3 * (1 / 500) ** 0.9)
    assert m.lr_at(make_config("dodnet", "demo"), "net", 700) == 1e-3                  # CPU: constant Adam
    net = m.build_networks(cfg)["net"]
    assert sum(p.numel() for p in net.parameters()) == 9_484_144   # the paper's prompted V-Net
    with pytest.raises(VersemiError, match="dodnet"):
        make_config("dodnet", "demo", datasets=("la",))
