"""Small phantom-like cases with hidden label maps and a tiny network, shared by the feature and fidelity
tests."""

import numpy as np
import torch

from versemi.data.registry import DATASETS, STRUCTURES
from versemi.model import VerSemiNet

LEGEND = dict(STRUCTURES)


def _blob(shape, centre, r):
    idx = np.indices(shape)
    return sum((i - c) ** 2 for i, c in zip(idx, centre)) <= r * r


def make_case(name, dataset, shape=(32, 32, 40), structures=(), hidden=True, seed=0):
    """A small volume whose hidden map holds the given structures (name -> (centre, radius))."""
    rng = np.random.default_rng(seed)
    hid = np.full(shape, LEGEND["body"], np.uint8)
    image = rng.normal(size=shape).astype(np.float32)
    for s, (centre, r) in structures:
        m = _blob(shape, centre, r)
        hid[m] = LEGEND[s]
        image[m] += 2.0 + LEGEND[s] / 10
    target = DATASETS[dataset].structure
    case = {"name": name, "dataset": dataset, "task": DATASETS[dataset].task_id, "image": image,
            "label": (hid == LEGEND[target]).astype(np.uint8), "spacing": (2.0, 2.0, 2.5)}
    if hidden:
        case["hidden_label"], case["hidden_legend"] = hid, LEGEND
    return case


def four_cases():
    """One case per dataset; the pancreas scan also holds a spleen and the spleen scan a pancreas."""
    return [
        make_case("p1", "pancreas", structures=[("pancreas", ((10, 12, 20), 4)), ("spleen", ((22, 20, 20), 5))]),
        make_case("a1", "la", shape=(40, 36, 32), structures=[("left_atrium", ((20, 18, 16), 6))], seed=1),
        make_case("s1", "spleen", structures=[("spleen", ((16, 16, 20), 6)), ("pancreas", ((6, 6, 30), 3))], seed=2),
        make_case("l1", "lung", shape=(32, 32, 32), structures=[("tumour", ((16, 16, 16), 3))], seed=3),
    ]


def small_net(head="dynamic"):
    """A seeded VerSemiNet of width 4 in eval mode."""
    torch.manual_seed(0)
    return VerSemiNet(n_filters=4, head=head).eval()
