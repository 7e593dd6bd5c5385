"""The thorax CT phantom of the lung tumour dataset (Hounsfield units).

Lungs, tumour nodules, heart, aorta, airway, ribs, sternum, spine and the liver dome are painted into a
full label map of :data:`~versemi.data.registry.STRUCTURES` codes; intensities as in
:mod:`versemi.data.phantoms.abdomen`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .geometry import N_CODES, Phantom, S, rotation, uniform
from .trunk import ct_tissue_table, ct_torso, finish_ct, spine


def thorax_ct(rng: np.random.Generator, shape, spacing, thin_target_scale: float = 1.0) -> Phantom:
    """Thorax CT in Hounsfield units: lungs with vessels, 1-3 tumour nodules inside a lung,
    heart, aorta, airway, ribs, sternum, spine and the liver dome under the right lung.
    ``thin_target_scale`` multiplies the tumour radii (:class:`~versemi.config.PhantomSpec`)."""
    t = ct_torso(rng, shape, spacing, deform_mm=(4, 8), a_mm=(145, 180), b_ratio=(0.62, 0.76), y0_mm=(-10, 10))
    g, labels, hu_extra, cavity = t.grid, t.labels, t.hu_extra, t.cavity
    a, b, x0, y0, zc, ca, cb = t.a, t.b, t.x0, t.y0, t.zc, t.ca, t.cb
    fat_mm, wall_mm, p = t.fat_mm, t.wall_mm, t.p
    zlo, zhi = g.extent[2]
    labels[cavity] = S["fat"]  # mediastinal fat; lungs and organs painted over it

    r_vb = uniform(rng, 14, 19)
    yv = y0 + cb - r_vb - uniform(rng, 2, 10)
    # lungs: large ellipsoids clipped by the pleura and the mediastinum
    pleura = g.cylinder(x0, y0, ca - 2, cb - 2, p) <= 1
    med_w = uniform(rng, 18, 30)
    lungs = {}
    for side, code in ((+1, S["lung_left"]), (-1, S["lung_right"])):
        lc = (x0 + side * uniform(rng, 0.45, 0.55) * ca, y0 + uniform(rng, -5, 12), zc + uniform(rng, -5, 15))
        ls = (uniform(rng, 0.5, 0.62) * ca, uniform(rng, 0.85, 1.0) * cb, uniform(rng, 110, 150))
        lung = (g.ellipsoid(lc, ls, rotation(rx=uniform(rng, -8, 8))) <= 1) & pleura
        lung &= (side * (g.X - np.float32(x0)) > np.float32(med_w)) | (g.Y > np.float32(yv + r_vb + 4))
        labels[lung] = code
        lungs[code] = lung
    # liver dome under the right lung (diaphragm)
    ld = (x0 - uniform(rng, 0.3, 0.45) * ca, y0 + uniform(rng, -10, 10), zc - uniform(rng, 95, 130))
    labels[(g.ellipsoid(ld, (uniform(rng, 80, 100), uniform(rng, 70, 90), uniform(rng, 60, 80))) <= 1) & cavity] = S["liver"]
    # heart: anterior, left of midline, caudal
    hc = (x0 + uniform(rng, 10, 25), y0 - uniform(rng, 15, 30), zc - uniform(rng, 35, 60))
    hsemi = (uniform(rng, 52, 68), uniform(rng, 42, 55), uniform(rng, 48, 62))
    labels[(g.ellipsoid(hc, hsemi, rotation(rz=uniform(rng, 10, 35), rx=uniform(rng, -15, 5))) <= 1) & cavity] = S["heart"]
    # aorta: ascending, arch and descending
    ra = uniform(rng, 10, 14)
    xd, yd = x0 + uniform(rng, 12, 24), yv - r_vb - ra * 0.6
    aorta = [[hc[0] - uniform(rng, 15, 25), hc[1] + uniform(rng, 0, 10), hc[2] + uniform(rng, 30, 45)],
             [x0 - uniform(rng, 0, 8), y0 - uniform(rng, 5, 20), zc + uniform(rng, 35, 50)],
             [x0 + uniform(rng, 0, 10), y0 + uniform(rng, 0, 15), zc + uniform(rng, 55, 70)],
             [xd, yd, zc + uniform(rng, 35, 50)],
             [xd + uniform(rng, -4, 4), yd + uniform(rng, -2, 4), zlo - 40]]
    labels[(g.tube(aorta, [ra] * 5) <= 0) & cavity] = S["aorta"]
    # trachea and main bronchi
    car = np.array([x0 + uniform(rng, -4, 4), y0 + uniform(rng, -2, 10), zc + uniform(rng, 15, 35)])
    rt = uniform(rng, 7, 10)
    airway = g.tube([[x0, y0 - uniform(rng, 5, 20), zhi + 40], [x0, car[1] - 8, car[2] + 40], car], [rt] * 3) <= 0
    for side in (-1, 1):
        airway |= g.tube([car, car + [side * 22, 5, -10], car + [side * 45, 12, -22]],
                         [rt * 0.75, rt * 0.6, rt * 0.45]) <= 0
    labels[airway & cavity] = S["airway"]
    # ribs in the chest wall (oblique, periodic along z) and the sternum
    rib_r = g.cylinder(x0, y0, a - fat_mm - 1, b - fat_mm - 1, p)
    band = (rib_r <= 1) & (g.cylinder(x0, y0, ca + 1, cb + 1, p) > 1)
    period = uniform(rng, 24, 32)
    tilt = uniform(rng, 20, 45)
    phase = np.cos(2 * np.pi * ((g.Z + np.float32(tilt) * (g.Y - np.float32(y0)) / np.float32(b))
                                - np.float32(uniform(rng, 0, period))) / np.float32(period))
    ribs = band & (phase > np.float32(uniform(rng, 0.45, 0.65))) & (np.abs(g.X - np.float32(x0)) > 14)
    labels[ribs] = S["bone"]
    sternum = g.cylinder(x0, y0 - b + fat_mm + wall_mm * 0.5, uniform(rng, 10, 15), wall_mm * 0.5 + 1) <= 1
    labels[sternum & (labels != 0)] = S["bone"]
    spine(rng, g, labels, hu_extra, x0, yv, r_vb)

    # tumour nodules inside a lung (1-3, varied sizes, lobulated)
    n_tum = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    r_min = 0.6 * float(np.sqrt(np.sum(np.square(g.spacing))))
    lob = g.field(rng, uniform(rng, 6, 10))
    tumour = np.zeros(g.shape, dtype=bool)
    radii = []
    lung_any = (labels == S["lung_left"]) | (labels == S["lung_right"])
    # depth of every lung voxel below the pleura (mm): a nodule is centred at least its radius deep, so that
    # only its lobulations (up to 1.2 r) may touch the pleura; one centred anywhere in the lung was mostly
    # clipped flat against the mediastinum, a border that no image shows (tumour and heart share their HU)
    depth = ndimage.distance_transform_edt(lung_any, sampling=g.spacing).ravel()
    for k in range(n_tum):
        r = max(r_min, thin_target_scale * (uniform(rng, 12, 28) if k == 0 else uniform(rng, 5, 14)))
        r = max(r_min, min(r, float(depth.max())))
        pool = np.flatnonzero(depth >= r)
        i = int(pool[rng.integers(pool.size)]) if pool.size else int(np.argmax(depth))
        c = (g.X.ravel()[i], g.Y.ravel()[i], g.Z.ravel()[i])
        rr = g.ellipsoid(c, (r, r, r))
        # inside the lung parenchyma: a nodule bulging into the mediastinum would have an invisible border
        # there (tumour and heart share their Hounsfield range), a boundary no model can learn
        tumour |= (rr <= 1 + np.float32(0.2) * lob) & lung_any
        tumour.ravel()[i] = True
        radii.append(round(r, 1))
    labels[tumour] = S["tumour"]

    lut = ct_tissue_table(rng, fat_hu=(-110, -80), bone_hu=(300, 500))
    lut[S["lung_left"]] = lut[S["lung_right"]] = uniform(rng, -880, -830)
    lut[S["liver"]] = uniform(rng, 52, 66)
    lut[S["heart"]] = uniform(rng, 35, 50)
    contrast = uniform(rng, 0, 1)
    lut[S["aorta"]] = 40 + 200 * contrast
    lut[S["airway"]] = -1000
    lut[S["tumour"]] = uniform(rng, 0, 50)
    tex_amp = np.zeros(N_CODES, dtype=np.float32)
    tex_amp[[S["lung_left"], S["lung_right"]]] = 15
    tex_amp[[S["tumour"], S["liver"], S["heart"], S["fat"], S["muscle"]]] = 6
    tex_amp[S["bone"]] = 80
    # lung vessels: thin bright structures from a high threshold of a fine random field
    ves = g.field(rng, uniform(rng, 4, 6))
    vessel = lung_any & (labels != S["tumour"]) & (ves > np.float32(uniform(rng, 1.6, 2.0)))
    hu_extra[vessel] += np.float32(uniform(rng, 250, 450))
    hu = lut[labels] + hu_extra + tex_amp[labels] * g.field(rng, 6.0)
    hu, sd = finish_ct(rng, g, labels, hu)
    info = {"n_tumours": n_tum, "tumour_radii_mm": radii, "noise_hu": round(sd, 2)}
    return Phantom(labels, hu, info)
