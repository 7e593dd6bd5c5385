"""The abdominal CT phantom (pancreas and spleen datasets)."""

import numpy as np
from threadpoolctl import threadpool_limits

from versemi.data.phantoms.abdomen import abdomen_ct
from versemi.data.registry import STRUCTURES as S


def _draw(seed):
    with threadpool_limits(limits=1):
        return abdomen_ct(np.random.default_rng(seed), (44, 44, 30), (7.5, 7.5, 7.0))


def test_abdomen_organs_and_intensities():
    ph = _draw(0)
    assert ph.labels.shape == ph.image.shape == (44, 44, 30)
    assert ph.labels.dtype == np.uint8 and ph.image.dtype == np.float32
    present = set(np.unique(ph.labels).tolist())
    for s in ("body", "fat", "muscle", "bone", "liver", "spleen", "pancreas", "aorta", "kidney_left", "kidney_right"):
        assert S[s] in present, s
    assert S["tumour"] not in present and S["left_atrium"] not in present
    assert -1024 <= ph.image.min() and ph.image.max() <= 3071
    assert np.median(ph.image[ph.labels == 0]) < -900
    assert np.median(ph.image[ph.labels == S["bone"]]) > np.median(ph.image[ph.labels == S["liver"]])
    assert set(ph.info) == {"contrast", "noise_hu"}


def test_abdomen_is_deterministic_in_the_generator():
    a, b, c = _draw(5), _draw(5), _draw(6)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.image, b.image)
    assert not np.array_equal(a.labels, c.labels)
