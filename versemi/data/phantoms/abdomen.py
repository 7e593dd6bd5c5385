"""The abdominal CT phantom of the pancreas and spleen datasets (Hounsfield units).

Organs are painted in anatomical order into a full label map of
:data:`~versemi.data.registry.STRUCTURES` codes; intensities come from a per-case table of tissue values
plus smooth textures, partial-volume blur and noise.
"""

from __future__ import annotations

import numpy as np

from .geometry import N_CODES, Phantom, S, rotation, uniform
from .trunk import ct_tissue_table, ct_torso, finish_ct, spine


def abdomen_ct(rng: np.random.Generator, shape, spacing, thin_target_scale: float = 1.0) -> Phantom:
    """Abdominal CT in Hounsfield units with liver, spleen, both kidneys, pancreas, stomach,
    bowel, aorta, IVC, spine and body wall. ``thin_target_scale`` multiplies the pancreas radii
    (:class:`~versemi.config.PhantomSpec`)."""
    t = ct_torso(rng, shape, spacing, deform_mm=(4, 9), a_mm=(135, 175), b_ratio=(0.62, 0.78), y0_mm=(-12, 12))
    g, labels, hu_extra, cavity = t.grid, t.labels, t.hu_extra, t.cavity
    x0, y0, zc, ca, cb = t.x0, t.y0, t.zc, t.ca, t.cb  # zc: the pancreas level
    zlo, zhi = g.extent[2]

    # visceral fat and bowel loops filling the cavity
    tex = g.field(rng, uniform(rng, 9, 14), n=2)
    labels[cavity] = S["fat"]
    labels[cavity & (tex[0] > uniform(rng, -0.3, 0.3))] = S["bowel"]
    gas_thr, gas_hu = uniform(rng, 1.4, 2.0), uniform(rng, -950, -700) - 30

    r_vb = uniform(rng, 16, 21)
    yv = y0 + cb - r_vb - uniform(rng, 8, 22)
    xa, ra = x0 + uniform(rng, 8, 18), uniform(rng, 8.5, 12.5)
    ya = yv - r_vb - ra - uniform(rng, 1, 5)
    xi, ri = x0 - uniform(rng, 20, 30), uniform(rng, 9, 13)
    yi = yv - r_vb - ri * 0.5 - uniform(rng, 2, 10)

    # stomach (left upper, anterior) with fluid and an anterior air cap
    sc = (x0 + uniform(rng, 0.15, 0.35) * ca, y0 - uniform(rng, 0.25, 0.45) * cb, zc + uniform(rng, 45, 70))
    ssemi = (uniform(rng, 35, 55), uniform(rng, 25, 38), uniform(rng, 35, 50))
    stomach = (g.ellipsoid(sc, ssemi, rotation(rz=uniform(rng, -25, 25))) <= 1) & cavity
    labels[stomach] = S["stomach"]
    air_cap = g.Y < np.float32(sc[1] - ssemi[1] * uniform(rng, 0.3, 0.6))

    # kidneys
    kz = zc + uniform(rng, -45, -15)
    for side, code in ((+1, S["kidney_left"]), (-1, S["kidney_right"])):
        kc = (x0 + side * (r_vb + uniform(rng, 38, 55)), yv + uniform(rng, -5, 12),
              kz + (0 if side > 0 else -uniform(rng, 5, 20)))
        ksemi = (uniform(rng, 20, 28), uniform(rng, 18, 26), uniform(rng, 42, 58))
        kr = g.ellipsoid(kc, ksemi, rotation(ry=side * uniform(rng, 8, 20), rz=side * uniform(rng, 15, 35)))
        kid = (kr <= 1) & cavity
        labels[kid] = code
        hu_extra[kid & (kr < uniform(rng, 0.45, 0.65))] -= np.float32(uniform(rng, 3, 8))  # medulla

    # liver: right lobe + left lobe
    lz = zc + uniform(rng, 30, 60)
    lc = (x0 - uniform(rng, 0.35, 0.5) * ca, y0 + uniform(rng, -0.15, 0.1) * cb, lz)
    lsemi = (uniform(rng, 65, 90), uniform(rng, 60, 85), uniform(rng, 70, 100))
    liver = g.ellipsoid(lc, lsemi, rotation(rz=uniform(rng, -15, 15), rx=uniform(rng, -10, 10))) <= 1
    llc = (x0 + uniform(rng, -15, 10), y0 - uniform(rng, 0.3, 0.45) * cb, lz + uniform(rng, 10, 30))
    liver |= g.ellipsoid(llc, (uniform(rng, 40, 60), uniform(rng, 22, 32), uniform(rng, 30, 45)),
                         rotation(rz=uniform(rng, -20, 20))) <= 1
    liver &= cavity
    labels[liver] = S["liver"]

    # spleen: rotated flattened ellipsoid along the left posterior wall, with a hilar notch
    scale = uniform(rng, 0.75, 1.3)
    spc = (x0 + uniform(rng, 0.5, 0.65) * ca, y0 + uniform(rng, 0.2, 0.4) * cb, zc + uniform(rng, 25, 55))
    spsemi = (uniform(rng, 18, 26) * scale, uniform(rng, 38, 55) * scale, uniform(rng, 40, 60) * scale)
    srot = rotation(rz=uniform(rng, 25, 50), rx=uniform(rng, -10, 10))
    spleen = g.ellipsoid(spc, spsemi, srot) <= 1
    notch_c = np.asarray(spc) + srot @ np.array([-spsemi[0] * uniform(rng, 0.9, 1.2), 0.0, 0.0])
    spleen &= g.ellipsoid(notch_c, (spsemi[0] * 0.6, spsemi[1] * 0.45, spsemi[2] * 0.5), srot) > 1
    spleen &= cavity
    labels[spleen] = S["spleen"]

    # duodenum (C loop around the pancreatic head) then the pancreas
    head = np.array([xi + uniform(rng, 5, 15), yi - ri - uniform(rng, 10, 18), zc - uniform(rng, 5, 15)])
    duo = [head + [-uniform(rng, 12, 20), -uniform(rng, 5, 15), uniform(rng, 20, 30)],
           head + [-uniform(rng, 22, 30), uniform(rng, -5, 5), 0.0],
           head + [-uniform(rng, 10, 20), uniform(rng, 0, 8), -uniform(rng, 20, 30)],
           head + [uniform(rng, 10, 25), uniform(rng, -3, 5), -uniform(rng, 25, 35)]]
    rd = uniform(rng, 7, 11)
    labels[(g.tube(duo, [rd] * 4) <= 0) & cavity] = S["bowel"]
    neck = np.array([x0 + uniform(rng, -6, 6), ya - ra - uniform(rng, 12, 22), zc + uniform(rng, -3, 5)])
    bodyp = np.array([xa + uniform(rng, 22, 38), ya - uniform(rng, 0, 12), zc + uniform(rng, 4, 16)])
    tail = np.array([spc[0] - spsemi[0] - uniform(rng, 8, 18), spc[1] - uniform(rng, 8, 20), zc + uniform(rng, 10, 28)])
    rads = [thin_target_scale * uniform(rng, lo, hi) for lo, hi in ((12, 17), (7, 10), (8, 11), (6.5, 9.5))]
    pancreas = (g.tube([head, neck, bodyp, tail], rads) <= 0) & cavity
    labels[pancreas] = S["pancreas"]

    # great vessels along z
    zs = np.linspace(zlo - 30, zhi + 30, 5)
    aorta = [[xa + uniform(rng, -4, 4), ya + uniform(rng, -3, 3), z] for z in zs]
    ivc = [[xi + uniform(rng, -4, 4), yi + uniform(rng, -3, 3), z] for z in zs]
    labels[g.tube(aorta, [ra] * 5) <= 0] = S["aorta"]
    labels[(g.tube(ivc, [ri] * 5) <= 0) & cavity] = S["ivc"]
    # psoas muscles beside the vertebral bodies, thicker caudally
    for side in (-1, 1):
        grow = np.clip(1.0 - (g.Z - np.float32(zc)) / np.float32(200.0), 0.4, 1.4)
        ps = g.cylinder(x0 + side * (r_vb + 12), yv + 3, 1.0, 1.0)
        labels[(ps <= np.float32(uniform(rng, 10, 15)) * grow) & cavity] = S["muscle"]
    spine(rng, g, labels, hu_extra, x0, yv, r_vb)
    # gas in what is still bowel / stomach after all organs are painted
    hu_extra[(labels == S["bowel"]) & (tex[1] > np.float32(gas_thr))] += np.float32(gas_hu)
    hu_extra[(labels == S["stomach"]) & air_cap] += np.float32(-1000)

    contrast = uniform(rng, 0.0, 1.0)
    lut = ct_tissue_table(rng, fat_hu=(-115, -85), bone_hu=(250, 450))
    lut[S["liver"]] = uniform(rng, 52, 66) + 15 * contrast
    lut[S["spleen"]] = uniform(rng, 45, 55) + 20 * contrast
    lut[S["kidney_left"]] = lut[S["kidney_right"]] = uniform(rng, 30, 36) + 5 * contrast
    lut[S["pancreas"]] = uniform(rng, 35, 45) + 8 * contrast
    lut[S["aorta"]] = 40 + 110 * contrast + uniform(rng, -5, 5)
    lut[S["ivc"]] = 40 + 70 * contrast + uniform(rng, -5, 5)
    lut[S["bowel"]] = uniform(rng, 5, 25)   # calibrated below the pancreas (35-53 HU): a border a model can see
    lut[S["stomach"]] = uniform(rng, 5, 25)
    tex_amp = np.zeros(N_CODES, dtype=np.float32)
    tex_amp[[S["liver"], S["spleen"], S["pancreas"], S["kidney_left"], S["kidney_right"]]] = 4
    tex_amp[[S["bowel"], S["fat"], S["muscle"]]] = 8
    tex_amp[S["bone"]] = 60
    hu = lut[labels] + hu_extra + tex_amp[labels] * g.field(rng, 6.0)
    hu, sd = finish_ct(rng, g, labels, hu)
    info = {"contrast": round(contrast, 3), "noise_hu": round(sd, 2)}
    return Phantom(labels, hu, info)
