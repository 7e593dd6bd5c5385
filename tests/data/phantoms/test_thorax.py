"""The thorax CT phantom (lung tumour dataset)."""

import numpy as np
from threadpoolctl import threadpool_limits

from versemi.data.phantoms.thorax import thorax_ct
from versemi.data.registry import STRUCTURES as S


def _draw(seed):
    with threadpool_limits(limits=1):
        return thorax_ct(np.random.default_rng(seed), (44, 44, 30), (7.5, 7.5, 7.0))


def test_thorax_lungs_tumours_and_intensities():
    ph = _draw(0)
    assert ph.labels.shape == ph.image.shape == (44, 44, 30)
    present = set(np.unique(ph.labels).tolist())
    for s in ("lung_left", "lung_right", "heart", "aorta", "bone", "tumour"):
        assert S[s] in present, s
    assert S["pancreas"] not in present and S["spleen"] not in present
    assert 1 <= ph.info["n_tumours"] <= 3 and len(ph.info["tumour_radii_mm"]) == ph.info["n_tumours"]
    lung = (ph.labels == S["lung_left"]) | (ph.labels == S["lung_right"])
    assert np.median(ph.image[lung]) < -600 < np.median(ph.image[ph.labels == S["tumour"]])
    assert -1024 <= ph.image.min() and ph.image.max() <= 3071


def test_thorax_is_deterministic_in_the_generator():
    a, b = _draw(4), _draw(4)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.image, b.image)
