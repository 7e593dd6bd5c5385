from collections import Counter

import numpy as np
import pytest
import torch

from versemi.data.loaders import PatchSampler, load_split_cases
from versemi.data.prepare import prepare
from versemi.data.registry import authors_split
from versemi.utils import VersemiError

from . import factories as F


def _cases(n=3, shape=(24, 20, 16), task=1, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.normal(size=shape).astype(np.float32)
        lab = np.zeros(shape, np.uint8)
        lab[4:9, 5:8, 3:6] = 1
        out.append({"name": f"c{task}_{i}", "task": task, "image": img, "label": lab})
    return out


def _eq(a, b):
    return all(torch.equal(a[k], b[k]) for k in ("image", "label", "task")) and a["names"] == b["names"]


def test_batch_is_a_pure_function_of_seed_stream_step():
    cases = _cases()
    s1 = PatchSampler(cases, (16, 16, 8), 4, seed=5)
    s2 = PatchSampler(cases, (16, 16, 8), 4, seed=5)
    seq = [s1.batch(k) for k in range(12)]
    assert _eq(s1.batch(7), seq[7]) and _eq(s2.batch(7), seq[7])
    resumed = [s2.batch(k) for k in range(6, 12)]  # resume from step 6 with a fresh sampler
    assert all(_eq(a, b) for a, b in zip(resumed, seq[6:]))
    assert not torch.equal(seq[0]["image"], seq[1]["image"])
    other_seed = PatchSampler(cases, (16, 16, 8), 4, seed=6).batch(0)
    other_stream = PatchSampler(cases, (16, 16, 8), 4, seed=5, stream=1).batch(0)
    assert not torch.equal(other_seed["image"], seq[0]["image"])
    assert not torch.equal(other_stream["image"], seq[0]["image"])


def test_shapes_dtypes_and_task_ids_for_a_multi_task_list():
    cases = _cases(2, task=1) + _cases(2, task=3, shape=(18, 30, 12))
    s = PatchSampler(cases, (16, 16, 8), 4, seed=0)
    b = s.batch(0)
    assert b["image"].shape == (4, 1, 16, 16, 8) and b["image"].dtype == torch.float32
    assert b["label"].shape == (4, 16, 16, 8) and b["label"].dtype == torch.long
    assert b["task"].dtype == torch.long
    by_name = {c["name"]: c["task"] for c in cases}
    assert b["task"].tolist() == [by_name[n] for n in b["names"]]


def test_epochs_shuffle_without_replacement_with_drop_last():
    cases = _cases(4)
    s = PatchSampler(cases, 8, batch_size=3, seed=1)  # labeled: 4 x 5 = 20 items, 6 batches (drop 2)
    assert s.n_items == 20 and len(s) == 6
    epoch0 = Counter(n for k in range(6) for n in s.batch(k)["names"])
    assert sum(epoch0.values()) == 18 and max(epoch0.values()) <= 5 and min(epoch0.values()) >= 3
    order0 = [s.indices(k) for k in range(6)]
    order1 = [s.indices(k) for k in range(6, 12)]
    assert order0 != order1  # a fresh permutation every epoch
    u = PatchSampler(cases, 8, batch_size=2, seed=1, labeled=False)  # unlabeled: each case once per epoch
    assert sorted(i for k in range(2) for i in u.indices(k)) == [0, 1, 2, 3]


def test_batch_larger_than_an_epoch_still_fills():
    s = PatchSampler(_cases(1), 8, batch_size=8, seed=0, repeats=1)
    assert s.batch(3)["image"].shape[0] == 8


def test_small_volumes_are_zero_padded_symmetrically():
    img = np.full((6, 10, 4), 3.0, np.float32)
    lab = np.ones((6, 10, 4), np.uint8)
    s = PatchSampler([{"name": "tiny", "task": 2, "image": img, "label": lab}], (10, 10, 8), 1, seed=0)
    b = s.batch(0)
    x, y = b["image"][0, 0], b["label"][0]
    assert x.shape == (10, 10, 8)
    assert float(x.sum()) == pytest.approx(3.0 * img.size) and int(y.sum()) == lab.size
    np.testing.assert_array_equal(x[2:8, :, 2:6].numpy(), img)
    assert float(x[:2].abs().sum()) == 0 and float(x[:, :, 6:].abs().sum()) == 0


def test_posneg_balance():
    shape = (40, 40, 40)
    lab = np.zeros(shape, np.uint8)
    lab[2:6, 2:6, 2:6] = 1  # small corner target: random crops would rarely hit it
    img = np.zeros(shape, np.float32)
    case = {"name": "p", "task": 1, "image": img, "label": lab}

    def hits(frac, crop="posneg"):
        s = PatchSampler([case], (8, 8, 8), 8, seed=3, crop=crop, pos_fraction=frac)
        return np.mean([bool(s.batch(k)["label"][i].any()) for k in range(25) for i in range(8)])

    assert hits(1.0) == 1.0
    assert hits(0.0) < 0.05
    assert 0.35 < hits(0.5) < 0.65
    assert hits(0.5, crop="random") < 0.1


def test_center_crop_for_unlabeled_volumes():
    cases = _cases(2, shape=(20, 20, 12))
    s = PatchSampler(cases, (8, 8, 8), 2, seed=0, crop="center", labeled=False)
    b = s.batch(0)
    for i, name in enumerate(b["names"]):
        src = next(c for c in cases if c["name"] == name)["image"]
        np.testing.assert_array_equal(b["image"][i, 0].numpy(), src[6:14, 6:14, 2:10])
    assert int(b["label"].abs().sum()) == 0  # unlabeled -> zeros
    assert _eq(s.batch(5), s.batch(5))


def test_bad_arguments():
    with pytest.raises(VersemiError, match="no cases"):
        PatchSampler([], 8, 2, seed=0)
    with pytest.raises(VersemiError, match="unknown crop 'middle'"):
        PatchSampler(_cases(1), 8, 2, seed=0, crop="middle")
    bad = _cases(1)
    bad[0]["label"] = bad[0]["label"][:-1]
    with pytest.raises(VersemiError, match="label shape"):
        PatchSampler(bad, 8, 2, seed=0)


def test_load_split_cases_from_a_prepared_folder(tmp_path):
    sp = authors_split("spleen")
    img, lab = F.mri_volume()
    names = sp["labeled_10"][:2] + sp["unlabeled_20"][:3] + sp["test"][:1]
    F.write_flat(tmp_path / "flat", {n: (img + i, lab) for i, n in enumerate(names)})
    prepare(["spleen"], tmp_path / "flat", tmp_path / "out", profile="smoke")
    lab10 = load_split_cases(tmp_path / "out", ["spleen"], 10, "labeled")
    assert [c["name"] for c in lab10] == sp["labeled_10"][:2]
    assert all(c["task"] == 3 and c["dataset"] == "spleen" for c in lab10)
    np.testing.assert_array_equal(lab10[1]["image"], img + 1)
    val = load_split_cases(tmp_path / "out", "all", "20%", "val")
    assert len(val) == 1 and val[0]["name"] in sp["unlabeled_20"][:3]
    s = PatchSampler(lab10, 16, 2, seed=0)
    assert s.batch(0)["task"].tolist() == [3, 3]
    with pytest.raises(VersemiError, match="dataset 'lung' is not prepared.*versemi prepare"):
        load_split_cases(tmp_path / "out", ["lung"], 10, "labeled")
    with pytest.raises(VersemiError, match="unknown split 'train'"):
        load_split_cases(tmp_path / "out", ["spleen"], 10, "train")
    with pytest.raises(VersemiError, match="no manifest.json.*versemi prepare"):
        load_split_cases(tmp_path / "flat", ["spleen"], 10, "labeled")


def test_rot_flip_moves_image_and_label_together_and_always_reflects_as_released():
    import numpy as np

    from versemi.data.loaders import rot_flip

    img = torch.arange(4 * 4 * 2, dtype=torch.float32).reshape(1, 4, 4, 2)
    lab = (img[0] % 3 == 0).long()
    poses = set()
    for seed in range(40):
        i2, l2 = rot_flip(img, lab, np.random.default_rng(seed))
        assert i2.shape == img.shape and torch.equal(l2, (i2[0] % 3 == 0).long())   # same transform
        assert torch.equal(i2[..., 1] - i2[..., 0], torch.ones(4, 4)[None])           # z is untouched
        poses.add(tuple(i2[0, :, :, 0].flatten().tolist()))
    # the released transform always flips after rotating, so it yields the 4 reflections of the square,
    # never a pure rotation (nor the identity)
    rotations = {tuple(torch.rot90(img[0, :, :, 0], k).flatten().tolist()) for k in range(4)}
    assert len(poses) == 4 and not poses & rotations


def test_augment_none_draws_what_it_drew_before_and_rotflip_changes_the_patches():
    import numpy as np

    from versemi.data.loaders import PatchSampler

    rng = np.random.default_rng(0)
    cases = [{"name": f"c{i}", "task": 1, "image": rng.normal(size=(40, 40, 36)).astype(np.float32),
              "label": (rng.random((40, 40, 36)) > 0.5).astype(np.uint8)} for i in range(3)]
    plain = PatchSampler(cases, (32, 32, 32), 2, seed=1)
    none = PatchSampler(cases, (32, 32, 32), 2, seed=1, augment="none")
    aug = PatchSampler(cases, (32, 32, 32), 2, seed=1, augment="rotflip")
    a, b, c = plain.batch(3), none.batch(3), aug.batch(3)
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])
    with pytest.raises(VersemiError, match="square"):
        PatchSampler(cases, (32, 16, 32), 2, seed=1, augment="rotflip")
