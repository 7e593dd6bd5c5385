"""Tests for versemi.evaluate.inference: the paper and fast sliding-window protocols, torch.compile,
prompt lists, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from versemi.evaluate import inference
from versemi.evaluate.inference import sliding_window_predict, window_starts
from versemi.model import VerSemiNet
from versemi.utils import VersemiError

from .helpers import PATCH, STRIDE, reference_predict, volume


def test_window_starts_match_authors_enumeration():
    assert window_starts(40, 32, 8) == [0, 8]
    assert window_starts(33, 32, 4) == [0, 1]
    assert window_starts(32, 32, 4) == [0]
    assert window_starts(112, 96, 16) == [0, 16]
    assert window_starts(100, 96, 16) == [0, 4]


@pytest.mark.parametrize("shape", [(40, 36, 33), (40, 21, 33)])  # the second is padded on axis 1 (5 + 6)
def test_paper_protocol_equals_unbatched_numpy_loop(net, shape):
    img = volume(shape, seed=1)
    ref_lab, ref_prob = reference_predict(net, img, 2, PATCH, STRIDE[0], STRIDE[2])
    net.train()
    lab1, prob1 = sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=1)
    assert net.training and all(m.training for m in net.modules())  # previous mode restored
    net.eval()
    assert lab1.dtype == np.uint8 and lab1.shape == shape
    assert prob1.dtype == np.float32 and prob1.shape == (2,) + shape
    # one window per forward: the same network calls, the same float32 sums in the same order
    np.testing.assert_allclose(prob1, ref_prob, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(lab1, ref_lab)
    assert 0 < ref_lab.sum() < ref_lab.size  # both classes present: the label comparison means something

    lab8, prob8 = sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=8)
    np.testing.assert_allclose(prob8, ref_prob, rtol=0, atol=1e-5)
    # batched convolutions round differently (~1e-7); labels must agree wherever the decision is not a tie
    decided = np.abs(ref_prob[1] - ref_prob[0]) > 1e-4
    np.testing.assert_array_equal(lab8[decided], ref_lab[decided])
    assert decided.mean() > 0.99


def test_batch_size_does_not_change_result(net):
    img = volume((40, 36, 33), seed=2)
    base_lab, base_prob = sliding_window_predict(net, img, 1, PATCH, STRIDE, batch_size=3)
    for bs in (5, 64):
        lab, prob = sliding_window_predict(net, img, 1, PATCH, STRIDE, batch_size=bs)
        np.testing.assert_allclose(prob, base_prob, rtol=0, atol=1e-5)
        decided = np.abs(base_prob[1] - base_prob[0]) > 1e-4
        np.testing.assert_array_equal(lab[decided], base_lab[decided])


def test_compiled_network_gives_the_same_prediction(net):
    """compile=True: same windows and labels as eager, probabilities to float32 rounding; a weight change
    is never served by the old compilation; a short last batch is padded (4 windows, batch 3)."""
    img = volume((40, 36, 33), seed=4)
    eager_lab, eager_prob = sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=3)
    lab, prob = sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=3, compile=True)
    np.testing.assert_allclose(prob, eager_prob, rtol=0, atol=1e-5)
    decided = np.abs(eager_prob[1] - eager_prob[0]) > 1e-4
    np.testing.assert_array_equal(lab[decided], eager_lab[decided])
    assert 0 < eager_lab.sum() < eager_lab.size

    # the weights change in place (as an optimizer step would): the frozen compilation must not be reused
    torch.manual_seed(5)
    other = VerSemiNet(n_filters=4)
    with torch.no_grad():
        saved = {k: v.clone() for k, v in net.state_dict().items()}
        net.load_state_dict(other.state_dict())
    try:
        new_eager_lab, new_eager_prob = sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=3)
        new_lab, new_prob = sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=3, compile=True)
        assert np.abs(new_eager_prob - eager_prob).max() > 1e-3  # the change is visible
        np.testing.assert_allclose(new_prob, new_eager_prob, rtol=0, atol=1e-5)
    finally:
        with torch.no_grad():
            net.load_state_dict(saved)


def test_compile_failure_falls_back_to_eager(net, monkeypatch):
    def broken(*args, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(inference, "_compiled_softmax", broken)
    img = volume((40, 36, 33), seed=6)
    ref_lab, ref_prob = sliding_window_predict(net, img, 1, PATCH, STRIDE, batch_size=2)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler found.*eagerly"):
        lab, prob = sliding_window_predict(net, img, 1, PATCH, STRIDE, batch_size=2, compile=True)
    np.testing.assert_array_equal(lab, ref_lab)
    np.testing.assert_array_equal(prob, ref_prob)


def test_prompt_list_equals_separate_calls(net):
    img = volume((40, 21, 33), seed=3)
    tasks = [1, 2, 5]
    labs, probs = sliding_window_predict(net, img, tasks, PATCH, STRIDE, batch_size=4)
    assert isinstance(labs, list) and len(labs) == len(probs) == 3
    for t, lab, prob in zip(tasks, labs, probs):
        lab1, prob1 = sliding_window_predict(net, img, t, PATCH, STRIDE, batch_size=4)
        np.testing.assert_allclose(prob, prob1, rtol=0, atol=1e-6)
        decided = np.abs(prob1[1] - prob1[0]) > 1e-4
        np.testing.assert_array_equal(lab[decided], lab1[decided])
    assert not np.allclose(probs[0], probs[2])  # prompts matter


def test_fast_protocol_shapes_and_normalisation(net):
    for shape in [(40, 36, 33), (40, 21, 33)]:
        img = volume(shape, seed=4)
        lab, prob = sliding_window_predict(net, img, 2, PATCH, protocol="fast", batch_size=4, overlap=0.5)
        assert lab.shape == shape and lab.dtype == np.uint8
        assert prob.shape == (2,) + shape and prob.dtype == np.float32
        np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
        np.testing.assert_array_equal(lab, np.argmax(prob, 0))
        labs, probs = sliding_window_predict(net, img, [2, 5], PATCH, protocol="fast", batch_size=4)
        np.testing.assert_allclose(probs[0], prob, atol=1e-6)


def test_paper_probs_sum_to_one_and_labels_are_argmax(net):
    img = volume((40, 36, 33), seed=5)
    lab, prob = sliding_window_predict(net, img, 3, PATCH, STRIDE)
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(lab, np.argmax(prob, 0))


def test_input_validation(net):
    img = volume((40, 36, 33))
    with pytest.raises(VersemiError, match="divisible by 16"):
        sliding_window_predict(net, img, 2, (40, 32, 32), STRIDE)
    with pytest.raises(VersemiError, match="divisible by 16"):
        sliding_window_predict(net, img, 2, (16, 32, 32), STRIDE)
    with pytest.raises(VersemiError, match="3-D"):
        sliding_window_predict(net, img[0], 2, PATCH, STRIDE)
    bad = img.copy()
    bad[3, 4, 5] = np.nan
    with pytest.raises(VersemiError, match="case_7.*non-finite"):
        sliding_window_predict(net, bad, 2, PATCH, STRIDE, name="case_7")
    with pytest.raises(VersemiError, match="protocol"):
        sliding_window_predict(net, img, 2, PATCH, STRIDE, protocol="nnunet")
    with pytest.raises(VersemiError, match="task ids"):
        sliding_window_predict(net, img, 9, PATCH, STRIDE)
    with pytest.raises(VersemiError, match="stride"):
        sliding_window_predict(net, img, 2, PATCH, (8, 0, 4))
    with pytest.raises(VersemiError, match="batch_size"):
        sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(VersemiError, match="CUDA"):
            sliding_window_predict(net, img, 2, PATCH, STRIDE, amp="bf16")


def test_whole_protocol_is_the_paper_protocol_on_one_window(net):
    img = volume(PATCH, seed=6)                      # the volume is one patch: both run the network once on it
    lab_p, prob_p = sliding_window_predict(net, img, 2, PATCH, STRIDE)
    lab_w, prob_w = sliding_window_predict(net, img, 2, PATCH, protocol="whole")
    np.testing.assert_allclose(prob_w, prob_p, atol=1e-5)
    np.testing.assert_array_equal(lab_w, lab_p)


def test_whole_protocol_pads_to_multiples_of_16_and_crops_back(net):
    shape = (50, 21, 37)
    assert inference.whole_shape(shape, PATCH) == (64, 32, 48)
    img = volume(shape, seed=7)
    lab, prob = sliding_window_predict(net, img, 3, PATCH, protocol="whole")
    assert lab.shape == shape and prob.shape == (2,) + shape
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(lab, np.argmax(prob, 0))
    # by hand: zero padding left pad // 2, one eval-mode pass, softmax, the crop
    padded = np.pad(img, [(7, 7), (5, 6), (5, 6)])
    was = net.training
    with torch.no_grad():
        net.eval()
        ref = torch.softmax(net(torch.from_numpy(padded)[None, None], 3), 1)[0].numpy()
    net.train(was)
    np.testing.assert_allclose(prob, ref[:, 7:57, 5:26, 5:42], atol=1e-5)
    # a volume beyond the limit is an error that names it, not an out-of-memory kill
    with pytest.raises(VersemiError, match="case_9.*protocol='whole'"):
        inference_limit = inference.WHOLE_MAX_VOXELS
        try:
            inference.WHOLE_MAX_VOXELS = 1000
            sliding_window_predict(net, img, 3, PATCH, protocol="whole", name="case_9")
        finally:
            inference.WHOLE_MAX_VOXELS = inference_limit
