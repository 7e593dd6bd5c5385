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


def _surface_neighbours(labels, code):
    """Codes of the voxels face-adjacent to the outer surface of structure ``code`` (one per contact)."""
    from scipy import ndimage

    inside = labels == code
    shell = ndimage.binary_dilation(inside) & ~inside
    return labels[shell]


def test_tumours_are_bordered_by_lung_so_their_border_is_visible():
    # centred at least a radius below the pleura: most of a tumour's surface faces lung parenchyma (HU
    # about -850), not the mediastinum or chest wall whose HU it shares; clipped anywhere in the lung, a
    # large nodule used to face them over much of its border
    for seed in range(4):
        with threadpool_limits(limits=1):
            ph = thorax_ct(np.random.default_rng(seed), (64, 64, 40), (5.0, 5.0, 5.0))
        around = _surface_neighbours(ph.labels, S["tumour"])
        lung_like = np.isin(around, [S["lung_left"], S["lung_right"]])
        assert lung_like.mean() > 0.8, (seed, lung_like.mean())
