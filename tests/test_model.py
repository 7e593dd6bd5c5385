import pytest
import torch

from versemi.model import (
    HEAD_PARAMS,
    VerSemiNet,
    apply_dynamic_head,
    count_parameters,
    load_authors_checkpoint,
)

from .conftest import SHARED


def _tiny(**kw):
    torch.manual_seed(0)
    return VerSemiNet(n_filters=4, **kw)


def test_paper_config_parameter_count_and_state_dict_match_authors():
    net = VerSemiNet(n_filters=16, num_tasks=4)
    assert count_parameters(net) == 9_484_144
    ref = SHARED / "reference" / "authors_vnet_state_dict.tsv"
    if not ref.is_file():
        pytest.skip("reference table not present")
    rows = [line.split("\t") for line in ref.read_text().splitlines()[1:] if line.strip()]
    expected = {k: (() if s == "scalar" else tuple(int(v) for v in s.split("x"))) for k, s, _ in rows}
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == expected


def test_widths_follow_n_filters_and_num_tasks():
    net = VerSemiNet(n_filters=8, num_tasks=2)
    assert net.controller.weight.shape == (HEAD_PARAMS, 8 * 16 + 3, 1, 1, 1)
    assert net.GAP[0].num_features == 128
    out = net.eval()(torch.randn(1, 1, 32, 32, 32), torch.tensor([3]))
    assert out.shape == (1, 2, 32, 32, 32)


@pytest.mark.parametrize("head", ["dynamic", "multi", "none"])
def test_mixed_prompts_equal_per_sample_runs(head):
    net = _tiny(head=head).eval()
    x = torch.randn(3, 1, 32, 32, 32)
    ids = torch.tensor([1, 5, 3])
    with torch.no_grad():
        batched = net(x, ids)
        single = torch.cat([net(x[i:i + 1], ids[i:i + 1]) for i in range(3)])
    assert batched.shape == (3, 2, 32, 32, 32)
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)


def test_prompt_changes_output_only_for_prompted_heads():
    x = torch.randn(1, 1, 32, 32, 32)
    for head, differs in [("dynamic", True), ("multi", True), ("none", False)]:
        net = _tiny(head=head).eval()
        with torch.no_grad():
            d = (net(x, [1]) - net(x, [2])).abs().max().item()
        assert (d > 1e-6) == differs, head


def test_dynamic_head_equals_grouped_conv():
    torch.manual_seed(1)
    b = 3
    x = torch.randn(b, 8, 4, 5, 6)
    p = torch.randn(b, HEAD_PARAMS)
    ours = apply_dynamic_head(x, p)
    # reference: the DoDNet-style grouped 1x1x1 conv over the batch folded into channels
    w = torch.split(p, [64, 64, 16, 16, 8, 8, 2, 2], dim=1)
    h = x.reshape(1, b * 8, 4, 5, 6)
    for i in range(2):
        h = torch.relu(torch.nn.functional.conv3d(h, w[i].reshape(b * 8, 8, 1, 1, 1), w[4 + i].reshape(-1), groups=b))
    ref = torch.nn.functional.conv3d(h, w[2].reshape(b * 2, 8, 1, 1, 1), w[6].reshape(-1), groups=b)
    torch.testing.assert_close(ours, ref.reshape(b, 2, 4, 5, 6), atol=1e-5, rtol=1e-5)


def test_authors_checkpoint_format_roundtrip(tmp_path):
    src = _tiny().eval()
    for m in src.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "best.pth"
    torch.save({"net": {"module." + k: v for k, v in src.state_dict().items()}, "opt": {}, "epoch": 10}, path)
    dst = load_authors_checkpoint(_tiny().eval().apply(lambda m: None), path)
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        for t in range(1, 6):
            assert torch.equal(src(x, [t, t]), dst(x, [t, t]))


def test_checkpoint_errors_name_keys(tmp_path):
    net = _tiny()
    sd = net.state_dict()
    sd.pop("controller.bias")
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \(1\): controller.bias") as e:
        load_authors_checkpoint(_tiny(), sd)
    assert "extra.weight" in str(e.value)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_authors_checkpoint(VerSemiNet(n_filters=8), _tiny().state_dict())
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_authors_checkpoint(net, tmp_path / "nope.pth")
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pth: cannot read checkpoint"):
        load_authors_checkpoint(net, bad)


def test_bad_prompts_and_shapes_are_rejected():
    net = _tiny().eval()
    with pytest.raises(ValueError, match="task ids must lie in 1..5"):
        net(torch.randn(1, 1, 32, 32, 32), [6])
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 1, 16, 16, 12), [1])
    with pytest.raises(ValueError, match="2 task ids for a batch of 3"):
        net(torch.randn(3, 1, 32, 32, 32), [1, 2])


def test_gradients_reach_controller_and_head_sharing_is_exact():
    net = _tiny().train()
    x = torch.randn(2, 1, 32, 32, 32)
    out = net(x, torch.tensor([1, 5]))
    out[:, 1].mean().backward()
    assert net.controller.weight.grad is not None and net.controller.weight.grad.abs().sum() > 0
    assert net.block_one.conv[0].weight.grad.abs().sum() > 0
    # shared backbone + several heads == several full forwards (outputs and BN running stats)
    a, b = _tiny().train(), _tiny().train()
    outs_a = [a(x, [k, k]) for k in (1, 2, 5)]
    outs_b = b.forward_prompts(x, [[1, 1], [2, 2], [5, 5]])
    for oa, ob in zip(outs_a, outs_b):
        torch.testing.assert_close(oa, ob)
    torch.testing.assert_close(a.precls_conv[0].running_mean, b.precls_conv[0].running_mean)
    torch.testing.assert_close(a.GAP[0].running_var, b.GAP[0].running_var)


def test_eval_mode_heads_share_the_preclassifier():
    net = _tiny().eval()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        many = net.forward_prompts(x, [[1, 1], [3, 4], [5, 5]])
        single = [net(x, p) for p in ([1, 1], [3, 4], [5, 5])]
    for a, b in zip(many, single):
        torch.testing.assert_close(a, b)


def test_return_features_shapes():
    net = _tiny().eval()
    logits, feats = net(torch.randn(2, 1, 32, 32, 32), [1, 2], return_features=True)
    assert logits.shape == (2, 2, 32, 32, 32)
    assert feats["global"].shape == (2, 64)
    assert feats["decoder"].shape == (2, 4, 32, 32, 32)
    assert feats["prehead"].shape == (2, 8, 32, 32, 32)


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while ``fn()`` runs."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total[0], out


def test_activation_checkpointing_same_gradients_less_saved_memory():
    from versemi.model import PromptedDecoder, set_activation_checkpointing
    torch.manual_seed(0)
    net = VerSemiNet(n_filters=4, num_tasks=4).train()
    dec = PromptedDecoder(4, 4)
    x = torch.randn(2, 1, 32, 32, 32)
    t = torch.tensor([1, 3])

    def loss_and_grads():
        for m in (net, dec):
            m.zero_grad(set_to_none=True)
        saved, loss = _saved_bytes(lambda: net(x, t).square().mean() + dec(net.backbone(x), t).square().mean())
        loss.backward()
        grads = [p.grad.clone() for m in (net, dec) for p in m.parameters() if p.grad is not None]
        return saved, loss.detach(), grads

    plain_saved, plain_loss, plain_grads = loss_and_grads()
    assert set_activation_checkpointing([net, dec]) == 2
    ck_saved, ck_loss, ck_grads = loss_and_grads()
    assert torch.equal(plain_loss, ck_loss)
    assert len(ck_grads) == len(plain_grads)
    for a, b in zip(plain_grads, ck_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert ck_saved < 0.5 * plain_saved, (ck_saved, plain_saved)
    # without gradient recording (evaluation, teachers) nothing is recomputed and nothing saved
    with torch.no_grad():
        assert _saved_bytes(lambda: net(x, t))[0] == 0
    set_activation_checkpointing(net, False)
    assert not net.checkpoint_stages
