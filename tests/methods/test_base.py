"""The Method interface (versemi/methods/base.py): registry, declared networks/teachers/optimisers,
the learning-rate schedule, ramps and the StepContext's update with its finiteness check."""

import math

import pytest
import torch

from versemi.config import make_config
from versemi.methods.base import (
    Method,
    TrainingDiverged,
    get_method,
    get_method_class,
    method_names,
    register,
    sigmoid_rampup,
    step_lr,
    unregister,
)
from versemi.model import VerSemiNet
from versemi.utils import VersemiError

from .helpers import ctx


def test_registry_holds_every_method_and_rejects_unknown_ones():
    assert set(method_names()) >= {"sup_only", "mean_teacher", "uamt", "bcp", "versemi"}
    assert get_method_class("uamt").display_name == "UA-MT"
    with pytest.raises(VersemiError, match="unknown method 'fixmatch'"):
        get_method("fixmatch")
    with pytest.raises(VersemiError, match="has no option"):
        get_method("versemi", {"lamda": 1})


def test_register_makes_a_method_usable_by_configs():
    @register
    class Probe(Method):
        name = "probe_method"
        display_name = "Probe"

    try:
        cfg = make_config("probe_method", "smoke", datasets=("la",))
        assert cfg.row_name() == "Probe" and cfg.label() == "Probe (la) 10%"
    finally:
        unregister("probe_method")
    with pytest.raises(VersemiError, match="unknown method 'probe_method'"):
        make_config("probe_method", "smoke")


def test_default_networks_teacher_and_optimizers_follow_the_config():
    cfg = make_config("mean_teacher", "smoke", n_filters=4, optimizer="sgd", lr=0.01, momentum=0.8)
    m = get_method("mean_teacher")
    nets = m.build_networks(cfg)
    assert set(nets) == {"net", "teacher"} and isinstance(nets["net"], VerSemiNet)
    n_params = sum(p.numel() for p in nets["net"].parameters())
    assert n_params == sum(p.numel() for p in VerSemiNet(n_filters=4, dropout=cfg.dropout).parameters())
    assert all(not p.requires_grad for p in nets["teacher"].parameters())
    assert all(torch.equal(a, b) for a, b in zip(nets["net"].parameters(), nets["teacher"].parameters()))
    opts = m.build_optimizers(cfg, nets)
    assert list(opts) == ["net"] and isinstance(opts["net"], torch.optim.SGD)
    assert opts["net"].defaults["momentum"] == 0.8
    assert get_method("sup_only").teachers() == {} and set(get_method("sup_only").build_networks(cfg)) == {"net"}


def test_step_lr_and_ema_warmup_and_rampup():
    cfg = make_config("sup_only", "smoke", lr=0.01, lr_step=10, lr_gamma=0.1)
    assert [step_lr(cfg, s) for s in (0, 9, 10, 25)] == pytest.approx([0.01, 0.01, 0.001, 0.0001])
    assert step_lr(make_config("sup_only", "smoke"), 10_000) == make_config("sup_only", "smoke").lr
    m = get_method("mean_teacher")
    assert m.ema_alpha(0, 0.99) == 0.0 and m.ema_alpha(9, 0.99) == pytest.approx(0.9)
    assert m.ema_alpha(10_000, 0.99) == 0.99
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5)) and sigmoid_rampup(10, 10) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0


def test_update_steps_one_optimizer_and_stops_on_non_finite_loss():
    net = VerSemiNet(n_filters=4, head="none")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    c = ctx(net, "train", step=7, optimizers={"net": opt})
    before = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(2, 1, 32, 32, 32)
    c.update({"loss": net(x, torch.tensor([1, 1])).mean()}, "net")
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    bad = {"loss": torch.tensor(float("nan")), "sup": torch.tensor(float("nan")), "syn": torch.tensor(1.0)}
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at step 7 \(stage train\); non-finite terms: loss, sup"):
        c.update(bad, "net")
