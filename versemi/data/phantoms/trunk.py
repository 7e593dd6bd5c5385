"""Pieces shared by the CT and MRI phantoms: the body wall, the spine, the CT torso frame, the CT tissue
table and the CT finish (blur and noise).

The builders paint :data:`~versemi.data.registry.STRUCTURES` codes into a ``labels`` array on a
:class:`~versemi.data.phantoms.geometry.Grid` (axes and units as described there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .geometry import N_CODES, Grid, S, uniform


def finish_ct(rng, g: Grid, labels, hu, blur_vox: float = 0.6, noise: tuple = (10.0, 20.0)):
    """Partial-volume blur (in voxels, anisotropy respected), Gaussian noise; HU kept in [-1024, 3071]."""
    sig = [blur_vox * min(g.spacing) / s for s in g.spacing]
    hu = ndimage.gaussian_filter(hu, sig, mode="nearest")
    sd = uniform(rng, *noise)
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(sd)
    np.clip(hu, -1024, 3071, out=hu)
    return hu, sd


def body_wall(rng, g: Grid, labels, a, b, x0, y0):
    """Body outline, subcutaneous fat and muscle wall; returns the cavity mask and its semi-axes."""
    p = uniform(rng, 2.1, 2.6)
    fat_mm, wall_mm = uniform(rng, 8, 32), uniform(rng, 7, 14)
    labels[g.cylinder(x0, y0, a, b, p) <= 1] = S["body"]
    labels[(labels == S["body"]) & (g.cylinder(x0, y0, a - fat_mm, b - fat_mm, p) > 1)] = S["fat"]
    inner = g.cylinder(x0, y0, a - fat_mm - wall_mm, b - fat_mm - wall_mm, p) <= 1
    labels[(labels == S["body"]) & ~inner] = S["muscle"]
    return inner, (a - fat_mm - wall_mm, b - fat_mm - wall_mm), fat_mm, wall_mm, p


def spine(rng, g: Grid, labels, hu_extra, x0, yv, r_vb):
    """Vertebral bodies (with discs), canal, posterior arch, spinous/transverse processes and
    paraspinal muscles, as cylinders along z.  Adds cortical/disc variation to ``hu_extra``."""
    canal_r = uniform(rng, 6, 9)
    ycan = yv + r_vb + canal_r + uniform(rng, 2, 4)
    para = (g.cylinder(x0 - r_vb - 12, ycan + 12, uniform(rng, 18, 24), uniform(rng, 15, 20)) <= 1) | (
        g.cylinder(x0 + r_vb + 12, ycan + 12, uniform(rng, 18, 24), uniform(rng, 15, 20)) <= 1)
    labels[para & (labels != 0)] = S["muscle"]
    arch = g.cylinder(x0, ycan, canal_r + uniform(rng, 5, 8), canal_r + uniform(rng, 5, 8)) <= 1
    spinous = g.cylinder(x0, ycan + canal_r + 12, uniform(rng, 3.5, 5.5), uniform(rng, 12, 18)) <= 1
    transverse = g.cylinder(x0, ycan - 2, r_vb + uniform(rng, 14, 22), uniform(rng, 4, 6)) <= 1
    rv = g.cylinder(x0, yv, r_vb * uniform(rng, 1.0, 1.15), r_vb)
    body = rv <= 1
    # discs periodic along z within the vertebral body; processes on part of each vertebra only
    period, disc = uniform(rng, 27, 34), uniform(rng, 6, 9)
    zz = np.mod(g.Z - np.float32(uniform(rng, 0, period)), np.float32(period))
    discs = body & (zz < disc)
    processes = (spinous | transverse) & (zz > disc + 2) & (zz < disc + 2 + 0.45 * period)
    bone = body | arch | processes
    labels[bone] = S["bone"]
    labels[g.cylinder(x0, ycan, canal_r, canal_r * 0.9) <= 1] = S["spinal_canal"]
    labels[discs] = S["body"]
    # cortical shell brighter than cancellous bone
    shell = body & (rv > 1 - 3.0 / r_vb) & ~discs
    hu_extra[shell] += np.float32(uniform(rng, 250, 500))
    return ycan, canal_r



@dataclass
class Torso:
    """The start of a CT phantom: the deformed grid, the label map and extra-HU volumes (body wall painted),
    the body's semi-axes ``a``, ``b`` and centre ``x0``, ``y0`` (mm), the organ level ``zc`` (mm), the
    cavity inside the wall with its semi-axes ``ca``, ``cb``, the fat and wall thicknesses (mm) and the
    super-ellipse exponent ``p``."""

    grid: Grid
    labels: np.ndarray
    hu_extra: np.ndarray
    a: float
    b: float
    x0: float
    y0: float
    zc: float
    cavity: np.ndarray
    ca: float
    cb: float
    fat_mm: float
    wall_mm: float
    p: float


def ct_torso(rng, shape, spacing, deform_mm, a_mm, b_ratio, y0_mm) -> Torso:
    """Draw a CT torso: grid deformation amplitude from ``deform_mm`` (mm range), body semi-axis ``a`` from
    ``a_mm`` and ``b = a x`` a draw from ``b_ratio`` (both kept inside the field of view), centre
    x0 in [-10, 10] mm and y0 in ``y0_mm``, organ level zc in [-15, 15] mm; then the body wall."""
    g = Grid(rng, shape, spacing, deform_mm=uniform(rng, *deform_mm))
    labels = np.zeros(g.shape, dtype=np.uint8)
    hu_extra = np.zeros(g.shape, dtype=np.float32)
    (xlo, xhi), (ylo, yhi), _ = g.extent
    fov = min(xhi - xlo, yhi - ylo)
    a = min(uniform(rng, *a_mm), 0.47 * fov)
    b = min(a * uniform(rng, *b_ratio), 0.45 * fov)
    x0, y0 = uniform(rng, -10, 10), uniform(rng, *y0_mm)
    zc = uniform(rng, -15, 15)
    cavity, (ca, cb), fat_mm, wall_mm, p = body_wall(rng, g, labels, a, b, x0, y0)
    return Torso(g, labels, hu_extra, a, b, x0, y0, zc, cavity, ca, cb, fat_mm, wall_mm, p)


def ct_tissue_table(rng, fat_hu, bone_hu) -> np.ndarray:
    """(N_CODES,) float32 HU per structure code with the tissues every CT phantom has: air -1000, soft
    tissue U(60, 90), fat U(``fat_hu``), muscle U(35, 50), bone U(``bone_hu``), spinal canal U(5, 25)."""
    lut = np.zeros(N_CODES, dtype=np.float32)
    lut[S["background"]] = -1000
    lut[S["body"]] = uniform(rng, 60, 90)
    lut[S["fat"]] = uniform(rng, *fat_hu)
    lut[S["muscle"]] = uniform(rng, 35, 50)
    lut[S["bone"]] = uniform(rng, *bone_hu)
    lut[S["spinal_canal"]] = uniform(rng, 5, 25)
    return lut
