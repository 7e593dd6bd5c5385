"""The cardiac LGE-MRI phantom of the Left Atrium dataset (arbitrary MRI units, not normalised).

Chambers, walls, the left atrium with its appendage and pulmonary veins, aorta, lungs and spine are
painted into a full label map of :data:`~versemi.data.registry.STRUCTURES` codes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .geometry import N_CODES, Grid, Phantom, S, rotation, uniform
from .trunk import body_wall


def heart_mri(rng: np.random.Generator, shape, spacing) -> Phantom:
    """Cardiac LGE-MRI in arbitrary units (raw, not normalised): LV/RV/RA with myocardium-like
    walls, the left atrium with appendage and 2-4 pulmonary-vein stubs, aorta, lungs, spine,
    fat; smooth multiplicative bias field and Rician noise.  The atrium sits near the grid centre."""
    g = Grid(rng, shape, spacing, deform_mm=uniform(rng, 2, 5), deform_corr=50.0)
    labels = np.zeros(g.shape, dtype=np.uint8)
    c_la = np.array([uniform(rng, -14, 14), uniform(rng, -12, 12), uniform(rng, -6, 6)])
    la_semi = np.array([uniform(rng, 20, 34), uniform(rng, 14, 25), uniform(rng, 16, 28)])
    a = uniform(rng, 145, 175)
    b = a * uniform(rng, 0.68, 0.8)
    x0, y0 = c_la[0] - uniform(rng, 0, 12), c_la[1] - uniform(rng, 0.0, 0.1) * b
    cavity, (ca, cb), _, _, p = body_wall(rng, g, labels, a, b, x0, y0)
    labels[cavity] = S["fat"]
    # lungs lateral and posterior to the heart
    for side, code in ((+1, S["lung_left"]), (-1, S["lung_right"])):
        lc = (x0 + side * uniform(rng, 0.45, 0.55) * ca, y0 + uniform(rng, 0, 12), c_la[2])
        lung = (g.ellipsoid(lc, (uniform(rng, 0.5, 0.6) * ca, uniform(rng, 0.85, 1.0) * cb, 140)) <= 1) & cavity
        labels[lung] = code
    r_vb = uniform(rng, 14, 18)
    yv = c_la[1] + la_semi[1] + r_vb + uniform(rng, 12, 20)
    labels[(g.cylinder(x0, yv, r_vb, r_vb) <= 1) & cavity] = S["bone"]
    ycan = yv + r_vb + 9
    labels[(g.cylinder(x0, ycan, 14, 13) <= 1) & cavity] = S["bone"]
    labels[(g.cylinder(x0, ycan, 7, 6.5) <= 1) & cavity] = S["spinal_canal"]
    (zlo, zhi) = g.extent[2]
    ra_ = uniform(rng, 9, 12)
    yd = c_la[1] + la_semi[1] + ra_ + uniform(rng, 2, 6)
    xd = x0 + uniform(rng, 10, 22)
    labels[g.tube([[xd, yd, zlo - 30], [xd + uniform(rng, -3, 3), yd, c_la[2]], [xd, yd + uniform(rng, -3, 3), zhi + 30]],
                  [ra_] * 3) <= 0] = S["aorta"]

    # ventricles and right atrium with walls (walls first, cavities painted inside)
    rot_h = rotation(rx=uniform(rng, -30, -15), rz=uniform(rng, 20, 40))
    lv_c = c_la + [uniform(rng, 20, 35), -uniform(rng, 45, 56), -uniform(rng, 18, 30)]
    lv_s = np.array([uniform(rng, 22, 28), uniform(rng, 20, 26), uniform(rng, 32, 42)])
    myo = uniform(rng, 7, 11)
    rv_c = lv_c + [-uniform(rng, 25, 35), -uniform(rng, 8, 16), uniform(rng, 0, 8)]
    rv_s = np.array([uniform(rng, 28, 34), uniform(rng, 15, 20), uniform(rng, 34, 42)])
    ra_c = c_la + [-uniform(rng, 45, 55), -uniform(rng, 5, 15), uniform(rng, -6, 8)]
    ra_s = np.array([uniform(rng, 18, 24), uniform(rng, 17, 22), uniform(rng, 20, 27)])
    epi = uniform(rng, 3, 7)  # epicardial fat around the ventricles and the right atrium
    epi_fat = ((g.ellipsoid(lv_c, lv_s + myo + epi, rot_h) <= 1) | (g.ellipsoid(rv_c, rv_s + 3.5 + epi, rot_h) <= 1)
               | (g.ellipsoid(ra_c, ra_s + 2.5 + epi) <= 1))
    labels[epi_fat & cavity] = S["fat"]
    lv_out = g.ellipsoid(lv_c, lv_s + myo, rot_h) <= 1
    rv_out = (g.ellipsoid(rv_c, rv_s + 3.5, rot_h) <= 1) & ~lv_out
    ra_out = g.ellipsoid(ra_c, ra_s + 2.5) <= 1
    for m in (lv_out, rv_out, ra_out):
        labels[m & cavity] = S["myocardium"]
    labels[(g.ellipsoid(rv_c, rv_s, rot_h) <= 1) & rv_out] = S["rv"]
    labels[g.ellipsoid(ra_c, ra_s) <= 1] = S["ra"]
    labels[g.ellipsoid(lv_c, lv_s, rot_h) <= 1] = S["lv"]
    # ascending aorta from the LV outflow, anterior to the atrium
    asc = [lv_c + [-10, 5, 25], c_la + [-uniform(rng, 5, 15), -la_semi[1] - ra_ - 6, uniform(rng, 15, 25)],
           c_la + [uniform(rng, -5, 5), -la_semi[1] - uniform(rng, 5, 15), zhi + 30]]
    labels[(g.tube(asc, [ra_ * 1.1] * 3) <= 0) & cavity] = S["aorta"]

    # left atrium: wall shell, pulmonary veins, then the atrium body and appendage on top
    rot_la = rotation(rx=uniform(rng, -20, 20), ry=uniform(rng, -20, 20), rz=uniform(rng, -30, 30))
    # the atrial wall is thin and, at these voxel sizes, seen only in part: it covers a random 45-85 % of
    # the atrium's surface; elsewhere the atrium borders whatever lies outside it (fat, aorta, the right
    # atrium, the veins), so its outline is partly a matter of shape, not of contrast, as in LGE-MRI
    wall = uniform(rng, 1.5, 3.0)
    lob = g.field(rng, uniform(rng, 12, 20))
    lob_amp = np.float32(uniform(rng, 0.08, 0.22))
    la_r_out = g.ellipsoid(c_la, la_semi + wall, rot_la) - lob_amp * lob
    cover = g.field(rng, uniform(rng, 8, 14))
    labels[(la_r_out <= 1) & (cover > np.float32(np.quantile(cover, 1 - uniform(rng, 0.45, 0.85))))] = S["myocardium"]
    choices = {  # direction (x: +left, y: +posterior, z: +superior)
        "LSPV": (1.0, 0.5, 0.55), "LIPV": (1.0, 0.55, -0.5), "RSPV": (-1.0, 0.5, 0.5), "RIPV": (-1.0, 0.55, -0.5)}
    n_pv = int(rng.choice([2, 3, 4], p=[0.15, 0.25, 0.6]))
    names = sorted(rng.choice(list(choices), size=n_pv, replace=False).tolist())
    pv = np.zeros(g.shape, dtype=bool)
    for nm in names:
        d = np.asarray(choices[nm]) + rng.uniform(-0.15, 0.15, 3)
        d /= np.linalg.norm(d)
        dloc = rot_la @ (d * la_semi * 0.75)
        start = c_la + dloc
        length = uniform(rng, 15, 28)
        bend = np.array([0.0, uniform(rng, 0.1, 0.5), 0.0])
        d2 = d + bend
        d2 /= np.linalg.norm(d2)
        r0 = uniform(rng, 4.5, 7.0)
        pts = [start, start + d * length * 0.5, start + d * length * 0.5 + d2 * length * 0.5]
        pv |= g.tube(pts, [r0 * 1.15, r0, r0 * 0.9]) <= 0
    labels[pv & (labels != S["bone"])] = S["pulmonary_veins"]
    # the mitral orifice: an open blood channel from the atrium into the left ventricle, so that the
    # label border between the two (the valve plane) has no intensity edge
    mv = uniform(rng, 6, 10)
    labels[g.tube([c_la, (c_la + lv_c) / 2, lv_c], [mv, mv, mv]) <= 0] = S["lv"]
    la_r = g.ellipsoid(c_la, la_semi, rot_la) - lob_amp * lob
    la = la_r <= 1
    # the annotation convention of the LA dataset: the atrium's label runs a few millimetres into the
    # veins' ostia (here up to 1.25x the body's normalised radius, about 4-8 mm): a cut that no intensity
    # shows, learnt from the examples alone
    la |= pv & (la_r <= uniform(rng, 1.15, 1.3))
    # the appendage: a finger of varying size and direction off the antero-lateral wall
    laa_d = rot_la @ np.array([uniform(rng, 0.7, 1.0), -uniform(rng, 0.6, 1.0), uniform(rng, -0.2, 0.6)])
    laa_c = c_la + laa_d * la_semi * 0.9
    laa_s = (uniform(rng, 5, 10), uniform(rng, 4, 8), uniform(rng, 8, 16))
    la |= g.ellipsoid(laa_c, laa_s, rotation(rx=uniform(rng, -30, 30), rz=uniform(rng, 0, 70))) <= 1
    labels[la] = S["left_atrium"]

    lut = np.zeros(N_CODES, dtype=np.float32)
    lut[S["background"]] = 0.0
    lut[S["body"]] = uniform(rng, 0.3, 0.4)
    lut[S["fat"]] = uniform(rng, 0.75, 0.95)
    lut[S["muscle"]] = uniform(rng, 0.25, 0.35)
    lut[S["bone"]] = uniform(rng, 0.4, 0.55)
    lut[S["spinal_canal"]] = uniform(rng, 0.15, 0.25)
    lut[[S["lung_left"], S["lung_right"]]] = uniform(rng, 0.04, 0.09)
    lut[S["myocardium"]] = uniform(rng, 0.1, 0.2)
    blood = uniform(rng, 0.5, 0.7)
    for k in ("lv", "rv", "ra", "left_atrium", "pulmonary_veins", "aorta"):
        lut[S[k]] = blood * uniform(rng, 0.92, 1.08)
    tex = g.field(rng, 5.0)
    img = lut[labels] * (1 + np.float32(0.08) * tex)
    # blood-pool inhomogeneity (flow, inflow of contrast): a slow +-10-20 % field on every blood structure
    blood_pool = np.isin(labels, [S[k] for k in ("lv", "rv", "ra", "left_atrium", "pulmonary_veins", "aorta")])
    img[blood_pool] *= 1 + np.float32(uniform(rng, 0.1, 0.2)) * g.field(rng, 15.0)[blood_pool]
    # late-enhancement (fibrosis-like) patches in the atrial wall
    la_wall = (labels == S["myocardium"]) & (la_r_out <= 1)
    img[la_wall & (g.field(rng, 6.0) > np.float32(uniform(rng, 0.3, 1.2)))] = np.float32(uniform(rng, 0.7, 0.9))
    sig = [0.6 * min(g.spacing) / s for s in g.spacing]
    img = ndimage.gaussian_filter(img, sig, mode="nearest")
    yn = (g.axes[1] / np.float32(max(abs(g.axes[1][0]), 1.0)))[None, :, None]
    bias = np.exp(np.float32(uniform(rng, 0.15, 0.35)) * g.field(rng, 70.0) + np.float32(uniform(rng, -0.3, 0.3)) * yn)
    gain = np.float32(uniform(rng, 80, 400))
    img = img * bias * gain
    sd = np.float32(uniform(rng, 0.05, 0.12)) * gain
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n2 = rng.standard_normal(img.shape, dtype=np.float32)
    img = np.sqrt((img + sd * n1) ** 2 + (sd * n2) ** 2).astype(np.float32)
    info = {"pulmonary_veins": names, "gain": round(float(gain), 2), "noise_rel": round(float(sd / gain), 4)}
    return Phantom(labels, img, info)
