"""Procedural 3D anatomy for the phantom generator (see :mod:`versemi.data.phantoms`).

Every builder works in physical millimetres on a voxel grid given by ``shape`` (nx, ny, nz) and
``spacing`` (sx, sy, sz).  Axis 0 runs towards the patient's left, axis 1 towards posterior,
axis 2 towards superior (DICOM's LPS patient axes), and the centre of the grid is the origin.
A smooth random displacement field deforms the coordinates once per case, so all organs are
deformed consistently; shapes are implicit functions (ellipsoids, elliptic cylinders, tubes
around spline curves) evaluated on the deformed coordinates, painted in anatomical order into
a full label map of :data:`STRUCTURES` codes.  Intensities come from a per-case table of tissue
values plus smooth textures, partial-volume blur and noise.  Everything is vectorised numpy /
scipy; the only Python loops run over structures or curve points, never over voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

#: Codes of the complete hidden label maps (0 is background / air outside the body).
STRUCTURES: dict[str, int] = {
    "background": 0,
    "body": 1,            # generic soft tissue (also intervertebral discs, mediastinal soft tissue)
    "fat": 2,             # subcutaneous, visceral and mediastinal fat
    "muscle": 3,          # body wall, paraspinal and psoas muscles
    "bone": 4,            # vertebrae, ribs, sternum
    "spinal_canal": 5,
    "liver": 6,
    "spleen": 7,
    "kidney_left": 8,
    "kidney_right": 9,
    "pancreas": 10,
    "aorta": 11,
    "ivc": 12,
    "bowel": 13,          # bowel loops and duodenum, gas pockets included
    "stomach": 14,
    "lung_left": 15,
    "lung_right": 16,
    "airway": 17,         # trachea and main bronchi
    "tumour": 18,
    "heart": 19,          # whole heart in the thorax CT
    "myocardium": 20,     # walls of the chambers in the cardiac MRI
    "lv": 21,
    "rv": 22,
    "ra": 23,
    "left_atrium": 24,    # atrium body and appendage
    "pulmonary_veins": 25,
}
S = STRUCTURES
N_CODES = max(S.values()) + 1


# ----------------------------------------------------------------------------------------------
# grids, smooth random fields, implicit shapes
# ----------------------------------------------------------------------------------------------

def _gauss_weights(axis: np.ndarray, corr: float) -> np.ndarray:
    """(len(axis), n_nodes) weights of Gaussian bumps (sigma ``corr``) on nodes spaced 0.75*corr,
    normalised so that a field with i.i.d. N(0,1) node values has unit variance everywhere."""
    lo, hi = float(axis.min()) - 2 * corr, float(axis.max()) + 2 * corr
    n_nodes = int(np.ceil((hi - lo) / (0.75 * corr))) + 1
    nodes = np.linspace(lo, hi, n_nodes)
    w = np.exp(-0.5 * ((axis[:, None] - nodes[None, :]) / corr) ** 2)
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))
    return w.astype(np.float32)


def smooth_fields(rng: np.random.Generator, axes, corr: float, n: int = 1) -> np.ndarray:
    """``n`` smooth Gaussian random fields of unit variance and correlation length ``corr`` (mm)
    on the grid spanned by the 1D coordinate ``axes``; shape (n, nx, ny, nz), float32."""
    w0, w1, w2 = (_gauss_weights(a, corr) for a in axes)
    g = rng.standard_normal((n, w0.shape[1], w1.shape[1], w2.shape[1])).astype(np.float32)
    t = np.tensordot(g, w2, axes=([3], [1]))            # (n, a, b, k)
    t = np.tensordot(t, w1, axes=([2], [1]))            # (n, a, k, j)
    t = np.tensordot(t, w0, axes=([1], [1]))            # (n, k, j, i)
    return np.ascontiguousarray(t.transpose(0, 3, 2, 1))


def rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, then y, then z."""
    ax, ay, az = np.deg2rad([rx, ry, rz])
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


class Grid:
    """Deformed physical coordinates X, Y, Z (mm, float32, shape ``shape``) of a voxel grid."""

    def __init__(self, rng, shape, spacing, deform_mm: float, deform_corr: float = 70.0):
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32)
                     for n, s in zip(self.shape, self.spacing)]
        d = smooth_fields(rng, self.axes, deform_corr, 3) * np.float32(deform_mm)
        d += smooth_fields(rng, self.axes, deform_corr / 3.0, 3) * np.float32(deform_mm / 4.0)
        self.X = self.axes[0][:, None, None] + d[0]
        self.Y = self.axes[1][None, :, None] + d[1]
        self.Z = self.axes[2][None, None, :] + d[2]
        self.extent = [(float(a[0]), float(a[-1])) for a in self.axes]

    def field(self, rng, corr: float, n: int = 1) -> np.ndarray:
        f = smooth_fields(rng, self.axes, corr, n)
        return f[0] if n == 1 else f

    def ellipsoid(self, c, semi, rot: np.ndarray | None = None) -> np.ndarray:
        """Normalised radius of an ellipsoid (<= 1 inside), centre ``c`` and semi-axes ``semi`` (mm)."""
        dx, dy, dz = self.X - np.float32(c[0]), self.Y - np.float32(c[1]), self.Z - np.float32(c[2])
        if rot is not None:
            r = rot.T.astype(np.float32)  # world -> local
            dx, dy, dz = (r[0, 0] * dx + r[0, 1] * dy + r[0, 2] * dz,
                          r[1, 0] * dx + r[1, 1] * dy + r[1, 2] * dz,
                          r[2, 0] * dx + r[2, 1] * dy + r[2, 2] * dz)
        return np.sqrt((dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2)

    def cylinder(self, cx: float, cy: float, a: float, b: float, p: float = 2.0) -> np.ndarray:
        """Normalised radius of an elliptic (super-elliptic for p != 2) cylinder along z."""
        u = np.abs((self.X - np.float32(cx)) / np.float32(a))
        v = np.abs((self.Y - np.float32(cy)) / np.float32(b))
        if p == 2.0:
            return np.sqrt(u * u + v * v)
        return (u**p + v**p) ** (1.0 / p)

    def tube(self, ctrl, radii, n_min: int = 12) -> np.ndarray:
        """Signed distance (mm, negative inside; +inf far away) to a tube of varying radius around
        the cubic spline through the control points ``ctrl`` (k, 3); ``radii`` (k,) at the
        control points, interpolated linearly along the curve."""
        ctrl = np.asarray(ctrl, dtype=np.float64)
        radii = np.asarray(radii, dtype=np.float64)
        t = np.linspace(0.0, 1.0, len(ctrl))
        spline = CubicSpline(t, ctrl, axis=0, bc_type="natural")
        dense = spline(np.linspace(0, 1, 400))
        length = float(np.linalg.norm(np.diff(dense, axis=0), axis=1).sum())
        step = max(0.4 * min(radii.min(), min(self.spacing)), 0.5)
        m = max(n_min, int(np.ceil(length / step)) + 1)
        s = np.linspace(0, 1, m)
        pts = spline(s).astype(np.float32)
        rad = np.interp(s, t, radii).astype(np.float32)
        out = np.full(self.shape, np.inf, dtype=np.float32)
        rmax = float(rad.max())
        lo, hi = pts.min(0) - rmax, pts.max(0) + rmax
        cand = ((self.X >= lo[0]) & (self.X <= hi[0]) & (self.Y >= lo[1]) & (self.Y <= hi[1])
                & (self.Z >= lo[2]) & (self.Z <= hi[2]))
        idx = np.flatnonzero(cand)
        if idx.size == 0:
            return out
        p = np.stack([self.X.ravel()[idx], self.Y.ravel()[idx], self.Z.ravel()[idx]], axis=1)
        best = np.full(idx.size, np.inf, dtype=np.float32)
        chunk = max(1, 2_000_000 // m)
        for a in range(0, idx.size, chunk):
            q = p[a:a + chunk]
            d2 = ((q[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
            best[a:a + chunk] = (np.sqrt(d2) - rad[None, :]).min(axis=1)
        out.ravel()[idx] = best
        return out


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


@dataclass
class Phantom:
    """A generated volume: full label map (uint8 codes) and intensities (float32: HU or MRI units)."""

    labels: np.ndarray
    image: np.ndarray
    info: dict


def _finish_ct(rng, g: Grid, labels, hu, blur_vox: float = 0.6, noise: tuple = (10.0, 20.0)):
    """Partial-volume blur (in voxels, anisotropy respected), Gaussian noise; HU kept in [-1024, 3071]."""
    sig = [blur_vox * min(g.spacing) / s for s in g.spacing]
    hu = ndimage.gaussian_filter(hu, sig, mode="nearest")
    sd = _u(rng, *noise)
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(sd)
    np.clip(hu, -1024, 3071, out=hu)
    return hu, sd


# ----------------------------------------------------------------------------------------------
# shared CT pieces: body wall and spine
# ----------------------------------------------------------------------------------------------

def _body_wall(rng, g: Grid, labels, a, b, x0, y0):
    """Body outline, subcutaneous fat and muscle wall; returns the cavity mask and its semi-axes."""
    p = _u(rng, 2.1, 2.6)
    fat_mm, wall_mm = _u(rng, 8, 32), _u(rng, 7, 14)
    labels[g.cylinder(x0, y0, a, b, p) <= 1] = S["body"]
    labels[(labels == S["body"]) & (g.cylinder(x0, y0, a - fat_mm, b - fat_mm, p) > 1)] = S["fat"]
    inner = g.cylinder(x0, y0, a - fat_mm - wall_mm, b - fat_mm - wall_mm, p) <= 1
    labels[(labels == S["body"]) & ~inner] = S["muscle"]
    return inner, (a - fat_mm - wall_mm, b - fat_mm - wall_mm), fat_mm, wall_mm, p


def _spine(rng, g: Grid, labels, hu_extra, x0, yv, r_vb):
    """Vertebral bodies (with discs), canal, posterior arch, spinous/transverse processes and
    paraspinal muscles, as cylinders along z.  Adds cortical/disc variation to ``hu_extra``."""
    canal_r = _u(rng, 6, 9)
    ycan = yv + r_vb + canal_r + _u(rng, 2, 4)
    para = (g.cylinder(x0 - r_vb - 12, ycan + 12, _u(rng, 18, 24), _u(rng, 15, 20)) <= 1) | (
        g.cylinder(x0 + r_vb + 12, ycan + 12, _u(rng, 18, 24), _u(rng, 15, 20)) <= 1)
    labels[para & (labels != 0)] = S["muscle"]
    arch = g.cylinder(x0, ycan, canal_r + _u(rng, 5, 8), canal_r + _u(rng, 5, 8)) <= 1
    spinous = g.cylinder(x0, ycan + canal_r + 12, _u(rng, 3.5, 5.5), _u(rng, 12, 18)) <= 1
    transverse = g.cylinder(x0, ycan - 2, r_vb + _u(rng, 14, 22), _u(rng, 4, 6)) <= 1
    rv = g.cylinder(x0, yv, r_vb * _u(rng, 1.0, 1.15), r_vb)
    body = rv <= 1
    # discs periodic along z within the vertebral body; processes on part of each vertebra only
    period, disc = _u(rng, 27, 34), _u(rng, 6, 9)
    zz = np.mod(g.Z - np.float32(_u(rng, 0, period)), np.float32(period))
    discs = body & (zz < disc)
    processes = (spinous | transverse) & (zz > disc + 2) & (zz < disc + 2 + 0.45 * period)
    bone = body | arch | processes
    labels[bone] = S["bone"]
    labels[g.cylinder(x0, ycan, canal_r, canal_r * 0.9) <= 1] = S["spinal_canal"]
    labels[discs] = S["body"]
    # cortical shell brighter than cancellous bone
    shell = body & (rv > 1 - 3.0 / r_vb) & ~discs
    hu_extra[shell] += np.float32(_u(rng, 250, 500))
    return ycan, canal_r


# ----------------------------------------------------------------------------------------------
# abdominal CT (pancreas and spleen datasets)
# ----------------------------------------------------------------------------------------------

def abdomen_ct(rng: np.random.Generator, shape, spacing) -> Phantom:
    """Abdominal CT in Hounsfield units with liver, spleen, both kidneys, pancreas, stomach,
    bowel, aorta, IVC, spine and body wall."""
    g = Grid(rng, shape, spacing, deform_mm=_u(rng, 4, 9))
    labels = np.zeros(g.shape, dtype=np.uint8)
    hu_extra = np.zeros(g.shape, dtype=np.float32)
    (xlo, xhi), (ylo, yhi), (zlo, zhi) = g.extent
    fov = min(xhi - xlo, yhi - ylo)
    a = min(_u(rng, 135, 175), 0.47 * fov)
    b = min(a * _u(rng, 0.62, 0.78), 0.45 * fov)
    x0, y0 = _u(rng, -10, 10), _u(rng, -12, 12)
    zc = _u(rng, -15, 15)  # pancreas level
    cavity, (ca, cb), fat_mm, wall_mm, _ = _body_wall(rng, g, labels, a, b, x0, y0)

    # visceral fat and bowel loops filling the cavity
    tex = g.field(rng, _u(rng, 9, 14), n=2)
    labels[cavity] = S["fat"]
    labels[cavity & (tex[0] > _u(rng, -0.3, 0.3))] = S["bowel"]
    gas_thr, gas_hu = _u(rng, 1.4, 2.0), _u(rng, -950, -700) - 30

    r_vb = _u(rng, 16, 21)
    yv = y0 + cb - r_vb - _u(rng, 8, 22)
    xa, ra = x0 + _u(rng, 8, 18), _u(rng, 8.5, 12.5)
    ya = yv - r_vb - ra - _u(rng, 1, 5)
    xi, ri = x0 - _u(rng, 20, 30), _u(rng, 9, 13)
    yi = yv - r_vb - ri * 0.5 - _u(rng, 2, 10)

    # stomach (left upper, anterior) with fluid and an anterior air cap
    sc = (x0 + _u(rng, 0.15, 0.35) * ca, y0 - _u(rng, 0.25, 0.45) * cb, zc + _u(rng, 45, 70))
    ssemi = (_u(rng, 35, 55), _u(rng, 25, 38), _u(rng, 35, 50))
    stomach = (g.ellipsoid(sc, ssemi, rotation(rz=_u(rng, -25, 25))) <= 1) & cavity
    labels[stomach] = S["stomach"]
    air_cap = g.Y < np.float32(sc[1] - ssemi[1] * _u(rng, 0.3, 0.6))

    # kidneys
    kz = zc + _u(rng, -45, -15)
    for side, code in ((+1, S["kidney_left"]), (-1, S["kidney_right"])):
        kc = (x0 + side * (r_vb + _u(rng, 38, 55)), yv + _u(rng, -5, 12),
              kz + (0 if side > 0 else -_u(rng, 5, 20)))
        ksemi = (_u(rng, 20, 28), _u(rng, 18, 26), _u(rng, 42, 58))
        kr = g.ellipsoid(kc, ksemi, rotation(ry=side * _u(rng, 8, 20), rz=side * _u(rng, 15, 35)))
        kid = (kr <= 1) & cavity
        labels[kid] = code
        hu_extra[kid & (kr < _u(rng, 0.45, 0.65))] -= np.float32(_u(rng, 3, 8))  # medulla

    # liver: right lobe + left lobe
    lz = zc + _u(rng, 30, 60)
    lc = (x0 - _u(rng, 0.35, 0.5) * ca, y0 + _u(rng, -0.15, 0.1) * cb, lz)
    lsemi = (_u(rng, 65, 90), _u(rng, 60, 85), _u(rng, 70, 100))
    liver = g.ellipsoid(lc, lsemi, rotation(rz=_u(rng, -15, 15), rx=_u(rng, -10, 10))) <= 1
    llc = (x0 + _u(rng, -15, 10), y0 - _u(rng, 0.3, 0.45) * cb, lz + _u(rng, 10, 30))
    liver |= g.ellipsoid(llc, (_u(rng, 40, 60), _u(rng, 22, 32), _u(rng, 30, 45)),
                         rotation(rz=_u(rng, -20, 20))) <= 1
    liver &= cavity
    labels[liver] = S["liver"]

    # spleen: rotated flattened ellipsoid along the left posterior wall, with a hilar notch
    scale = _u(rng, 0.75, 1.3)
    spc = (x0 + _u(rng, 0.5, 0.65) * ca, y0 + _u(rng, 0.2, 0.4) * cb, zc + _u(rng, 25, 55))
    spsemi = (_u(rng, 18, 26) * scale, _u(rng, 38, 55) * scale, _u(rng, 40, 60) * scale)
    srot = rotation(rz=_u(rng, 25, 50), rx=_u(rng, -10, 10))
    spleen = g.ellipsoid(spc, spsemi, srot) <= 1
    notch_c = np.asarray(spc) + srot @ np.array([-spsemi[0] * _u(rng, 0.9, 1.2), 0.0, 0.0])
    spleen &= g.ellipsoid(notch_c, (spsemi[0] * 0.6, spsemi[1] * 0.45, spsemi[2] * 0.5), srot) > 1
    spleen &= cavity
    labels[spleen] = S["spleen"]

    # duodenum (C loop around the pancreatic head) then the pancreas
    head = np.array([xi + _u(rng, 5, 15), yi - ri - _u(rng, 10, 18), zc - _u(rng, 5, 15)])
    duo = [head + [-_u(rng, 12, 20), -_u(rng, 5, 15), _u(rng, 20, 30)],
           head + [-_u(rng, 22, 30), _u(rng, -5, 5), 0.0],
           head + [-_u(rng, 10, 20), _u(rng, 0, 8), -_u(rng, 20, 30)],
           head + [_u(rng, 10, 25), _u(rng, -3, 5), -_u(rng, 25, 35)]]
    rd = _u(rng, 7, 11)
    labels[(g.tube(duo, [rd] * 4) <= 0) & cavity] = S["bowel"]
    neck = np.array([x0 + _u(rng, -6, 6), ya - ra - _u(rng, 12, 22), zc + _u(rng, -3, 5)])
    bodyp = np.array([xa + _u(rng, 22, 38), ya - _u(rng, 0, 12), zc + _u(rng, 4, 16)])
    tail = np.array([spc[0] - spsemi[0] - _u(rng, 8, 18), spc[1] - _u(rng, 8, 20), zc + _u(rng, 10, 28)])
    rads = [_u(rng, 12, 17), _u(rng, 7, 10), _u(rng, 8, 11), _u(rng, 6.5, 9.5)]
    pancreas = (g.tube([head, neck, bodyp, tail], rads) <= 0) & cavity
    labels[pancreas] = S["pancreas"]

    # great vessels along z
    zs = np.linspace(zlo - 30, zhi + 30, 5)
    aorta = [[xa + _u(rng, -4, 4), ya + _u(rng, -3, 3), z] for z in zs]
    ivc = [[xi + _u(rng, -4, 4), yi + _u(rng, -3, 3), z] for z in zs]
    labels[g.tube(aorta, [ra] * 5) <= 0] = S["aorta"]
    labels[(g.tube(ivc, [ri] * 5) <= 0) & cavity] = S["ivc"]
    # psoas muscles beside the vertebral bodies, thicker caudally
    for side in (-1, 1):
        grow = np.clip(1.0 - (g.Z - np.float32(zc)) / np.float32(200.0), 0.4, 1.4)
        ps = g.cylinder(x0 + side * (r_vb + 12), yv + 3, 1.0, 1.0)
        labels[(ps <= np.float32(_u(rng, 10, 15)) * grow) & cavity] = S["muscle"]
    _spine(rng, g, labels, hu_extra, x0, yv, r_vb)
    # gas in what is still bowel / stomach after all organs are painted
    hu_extra[(labels == S["bowel"]) & (tex[1] > np.float32(gas_thr))] += np.float32(gas_hu)
    hu_extra[(labels == S["stomach"]) & air_cap] += np.float32(-1000)

    contrast = _u(rng, 0.0, 1.0)
    lut = np.zeros(N_CODES, dtype=np.float32)
    lut[S["background"]] = -1000
    lut[S["body"]] = _u(rng, 60, 90)
    lut[S["fat"]] = _u(rng, -115, -85)
    lut[S["muscle"]] = _u(rng, 35, 50)
    lut[S["bone"]] = _u(rng, 250, 450)
    lut[S["spinal_canal"]] = _u(rng, 5, 25)
    lut[S["liver"]] = _u(rng, 52, 66) + 15 * contrast
    lut[S["spleen"]] = _u(rng, 45, 55) + 20 * contrast
    lut[S["kidney_left"]] = lut[S["kidney_right"]] = _u(rng, 30, 36) + 5 * contrast
    lut[S["pancreas"]] = _u(rng, 35, 45) + 8 * contrast
    lut[S["aorta"]] = 40 + 110 * contrast + _u(rng, -5, 5)
    lut[S["ivc"]] = 40 + 70 * contrast + _u(rng, -5, 5)
    lut[S["bowel"]] = _u(rng, 20, 40)
    lut[S["stomach"]] = _u(rng, 5, 25)
    tex_amp = np.zeros(N_CODES, dtype=np.float32)
    tex_amp[[S["liver"], S["spleen"], S["pancreas"], S["kidney_left"], S["kidney_right"]]] = 4
    tex_amp[[S["bowel"], S["fat"], S["muscle"]]] = 8
    tex_amp[S["bone"]] = 60
    hu = lut[labels] + hu_extra + tex_amp[labels] * g.field(rng, 6.0)
    hu, sd = _finish_ct(rng, g, labels, hu)
    info = {"contrast": round(contrast, 3), "noise_hu": round(sd, 2)}
    return Phantom(labels, hu, info)


# ----------------------------------------------------------------------------------------------
# thorax CT (lung tumour dataset)
# ----------------------------------------------------------------------------------------------

def thorax_ct(rng: np.random.Generator, shape, spacing) -> Phantom:
    """Thorax CT in Hounsfield units: lungs with vessels, 1-3 tumour nodules inside a lung,
    heart, aorta, airway, ribs, sternum, spine and the liver dome under the right lung."""
    g = Grid(rng, shape, spacing, deform_mm=_u(rng, 4, 8))
    labels = np.zeros(g.shape, dtype=np.uint8)
    hu_extra = np.zeros(g.shape, dtype=np.float32)
    (xlo, xhi), (ylo, yhi), (zlo, zhi) = g.extent
    fov = min(xhi - xlo, yhi - ylo)
    a = min(_u(rng, 145, 180), 0.47 * fov)
    b = min(a * _u(rng, 0.62, 0.76), 0.45 * fov)
    x0, y0 = _u(rng, -10, 10), _u(rng, -10, 10)
    zc = _u(rng, -15, 15)
    cavity, (ca, cb), fat_mm, wall_mm, p = _body_wall(rng, g, labels, a, b, x0, y0)
    labels[cavity] = S["fat"]  # mediastinal fat; lungs and organs painted over it

    r_vb = _u(rng, 14, 19)
    yv = y0 + cb - r_vb - _u(rng, 2, 10)
    # lungs: large ellipsoids clipped by the pleura and the mediastinum
    pleura = g.cylinder(x0, y0, ca - 2, cb - 2, p) <= 1
    med_w = _u(rng, 18, 30)
    lungs = {}
    for side, code in ((+1, S["lung_left"]), (-1, S["lung_right"])):
        lc = (x0 + side * _u(rng, 0.45, 0.55) * ca, y0 + _u(rng, -5, 12), zc + _u(rng, -5, 15))
        ls = (_u(rng, 0.5, 0.62) * ca, _u(rng, 0.85, 1.0) * cb, _u(rng, 110, 150))
        lung = (g.ellipsoid(lc, ls, rotation(rx=_u(rng, -8, 8))) <= 1) & pleura
        lung &= (side * (g.X - np.float32(x0)) > np.float32(med_w)) | (g.Y > np.float32(yv + r_vb + 4))
        labels[lung] = code
        lungs[code] = lung
    # liver dome under the right lung (diaphragm)
    ld = (x0 - _u(rng, 0.3, 0.45) * ca, y0 + _u(rng, -10, 10), zc - _u(rng, 95, 130))
    labels[(g.ellipsoid(ld, (_u(rng, 80, 100), _u(rng, 70, 90), _u(rng, 60, 80))) <= 1) & cavity] = S["liver"]
    # heart: anterior, left of midline, caudal
    hc = (x0 + _u(rng, 10, 25), y0 - _u(rng, 15, 30), zc - _u(rng, 35, 60))
    hsemi = (_u(rng, 52, 68), _u(rng, 42, 55), _u(rng, 48, 62))
    labels[(g.ellipsoid(hc, hsemi, rotation(rz=_u(rng, 10, 35), rx=_u(rng, -15, 5))) <= 1) & cavity] = S["heart"]
    # aorta: ascending, arch and descending
    ra = _u(rng, 10, 14)
    xd, yd = x0 + _u(rng, 12, 24), yv - r_vb - ra * 0.6
    aorta = [[hc[0] - _u(rng, 15, 25), hc[1] + _u(rng, 0, 10), hc[2] + _u(rng, 30, 45)],
             [x0 - _u(rng, 0, 8), y0 - _u(rng, 5, 20), zc + _u(rng, 35, 50)],
             [x0 + _u(rng, 0, 10), y0 + _u(rng, 0, 15), zc + _u(rng, 55, 70)],
             [xd, yd, zc + _u(rng, 35, 50)],
             [xd + _u(rng, -4, 4), yd + _u(rng, -2, 4), zlo - 40]]
    labels[(g.tube(aorta, [ra] * 5) <= 0) & cavity] = S["aorta"]
    # trachea and main bronchi
    car = np.array([x0 + _u(rng, -4, 4), y0 + _u(rng, -2, 10), zc + _u(rng, 15, 35)])
    rt = _u(rng, 7, 10)
    airway = g.tube([[x0, y0 - _u(rng, 5, 20), zhi + 40], [x0, car[1] - 8, car[2] + 40], car], [rt] * 3) <= 0
    for side in (-1, 1):
        airway |= g.tube([car, car + [side * 22, 5, -10], car + [side * 45, 12, -22]],
                         [rt * 0.75, rt * 0.6, rt * 0.45]) <= 0
    labels[airway & cavity] = S["airway"]
    # ribs in the chest wall (oblique, periodic along z) and the sternum
    rib_r = g.cylinder(x0, y0, a - fat_mm - 1, b - fat_mm - 1, p)
    band = (rib_r <= 1) & (g.cylinder(x0, y0, ca + 1, cb + 1, p) > 1)
    period = _u(rng, 24, 32)
    tilt = _u(rng, 20, 45)
    phase = np.cos(2 * np.pi * ((g.Z + np.float32(tilt) * (g.Y - np.float32(y0)) / np.float32(b))
                                - np.float32(_u(rng, 0, period))) / np.float32(period))
    ribs = band & (phase > np.float32(_u(rng, 0.45, 0.65))) & (np.abs(g.X - np.float32(x0)) > 14)
    labels[ribs] = S["bone"]
    sternum = g.cylinder(x0, y0 - b + fat_mm + wall_mm * 0.5, _u(rng, 10, 15), wall_mm * 0.5 + 1) <= 1
    labels[sternum & (labels != 0)] = S["bone"]
    _spine(rng, g, labels, hu_extra, x0, yv, r_vb)

    # tumour nodules inside a lung (1-3, varied sizes, lobulated)
    n_tum = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    r_min = 0.6 * float(np.sqrt(np.sum(np.square(g.spacing))))
    lob = g.field(rng, _u(rng, 6, 10))
    tumour = np.zeros(g.shape, dtype=bool)
    radii = []
    lung_any = (labels == S["lung_left"]) | (labels == S["lung_right"])
    core = ndimage.binary_erosion(lung_any, iterations=1)
    pool = np.flatnonzero(core if core.any() else lung_any)
    for k in range(n_tum):
        r = max(r_min, _u(rng, 12, 28) if k == 0 else _u(rng, 3, 14))
        i = int(pool[rng.integers(pool.size)])
        c = (g.X.ravel()[i], g.Y.ravel()[i], g.Z.ravel()[i])
        rr = g.ellipsoid(c, (r, r, r))
        tumour |= (rr <= 1 + np.float32(0.2) * lob) & cavity
        tumour.ravel()[i] = True
        radii.append(round(r, 1))
    labels[tumour] = S["tumour"]

    lut = np.zeros(N_CODES, dtype=np.float32)
    lut[S["background"]] = -1000
    lut[S["body"]] = _u(rng, 60, 90)
    lut[S["fat"]] = _u(rng, -110, -80)
    lut[S["muscle"]] = _u(rng, 35, 50)
    lut[S["bone"]] = _u(rng, 300, 500)
    lut[S["spinal_canal"]] = _u(rng, 5, 25)
    lut[S["lung_left"]] = lut[S["lung_right"]] = _u(rng, -880, -830)
    lut[S["liver"]] = _u(rng, 52, 66)
    lut[S["heart"]] = _u(rng, 35, 50)
    contrast = _u(rng, 0, 1)
    lut[S["aorta"]] = 40 + 200 * contrast
    lut[S["airway"]] = -1000
    lut[S["tumour"]] = _u(rng, 0, 50)
    tex_amp = np.zeros(N_CODES, dtype=np.float32)
    tex_amp[[S["lung_left"], S["lung_right"]]] = 15
    tex_amp[[S["tumour"], S["liver"], S["heart"], S["fat"], S["muscle"]]] = 6
    tex_amp[S["bone"]] = 80
    # lung vessels: thin bright structures from a high threshold of a fine random field
    ves = g.field(rng, _u(rng, 4, 6))
    vessel = lung_any & (labels != S["tumour"]) & (ves > np.float32(_u(rng, 1.6, 2.0)))
    hu_extra[vessel] += np.float32(_u(rng, 250, 450))
    hu = lut[labels] + hu_extra + tex_amp[labels] * g.field(rng, 6.0)
    hu, sd = _finish_ct(rng, g, labels, hu)
    info = {"n_tumours": n_tum, "tumour_radii_mm": radii, "noise_hu": round(sd, 2)}
    return Phantom(labels, hu, info)


# ----------------------------------------------------------------------------------------------
# cardiac LGE-MRI (left atrium dataset)
# ----------------------------------------------------------------------------------------------

def heart_mri(rng: np.random.Generator, shape, spacing) -> Phantom:
    """Cardiac LGE-MRI in arbitrary units (raw, not normalised): LV/RV/RA with myocardium-like
    walls, the left atrium with appendage and 2-4 pulmonary-vein stubs, aorta, lungs, spine,
    fat; smooth multiplicative bias field and Rician noise.  The atrium sits near the grid centre."""
    g = Grid(rng, shape, spacing, deform_mm=_u(rng, 2, 5), deform_corr=50.0)
    labels = np.zeros(g.shape, dtype=np.uint8)
    c_la = np.array([_u(rng, -8, 8), _u(rng, -8, 8), _u(rng, -4, 4)])
    la_semi = np.array([_u(rng, 24, 32), _u(rng, 17, 23), _u(rng, 19, 26)])
    a = _u(rng, 145, 175)
    b = a * _u(rng, 0.68, 0.8)
    x0, y0 = c_la[0] - _u(rng, 0, 12), c_la[1] - _u(rng, 0.0, 0.1) * b
    cavity, (ca, cb), _, _, p = _body_wall(rng, g, labels, a, b, x0, y0)
    labels[cavity] = S["fat"]
    # lungs lateral and posterior to the heart
    for side, code in ((+1, S["lung_left"]), (-1, S["lung_right"])):
        lc = (x0 + side * _u(rng, 0.45, 0.55) * ca, y0 + _u(rng, 0, 12), c_la[2])
        lung = (g.ellipsoid(lc, (_u(rng, 0.5, 0.6) * ca, _u(rng, 0.85, 1.0) * cb, 140)) <= 1) & cavity
        labels[lung] = code
    r_vb = _u(rng, 14, 18)
    yv = c_la[1] + la_semi[1] + r_vb + _u(rng, 12, 20)
    labels[(g.cylinder(x0, yv, r_vb, r_vb) <= 1) & cavity] = S["bone"]
    ycan = yv + r_vb + 9
    labels[(g.cylinder(x0, ycan, 14, 13) <= 1) & cavity] = S["bone"]
    labels[(g.cylinder(x0, ycan, 7, 6.5) <= 1) & cavity] = S["spinal_canal"]
    (zlo, zhi) = g.extent[2]
    ra_ = _u(rng, 9, 12)
    yd = c_la[1] + la_semi[1] + ra_ + _u(rng, 2, 6)
    xd = x0 + _u(rng, 10, 22)
    labels[g.tube([[xd, yd, zlo - 30], [xd + _u(rng, -3, 3), yd, c_la[2]], [xd, yd + _u(rng, -3, 3), zhi + 30]],
                  [ra_] * 3) <= 0] = S["aorta"]

    # ventricles and right atrium with walls (walls first, cavities painted inside)
    rot_h = rotation(rx=_u(rng, -30, -15), rz=_u(rng, 20, 40))
    lv_c = c_la + [_u(rng, 20, 35), -_u(rng, 45, 56), -_u(rng, 18, 30)]
    lv_s = np.array([_u(rng, 22, 28), _u(rng, 20, 26), _u(rng, 32, 42)])
    myo = _u(rng, 7, 11)
    rv_c = lv_c + [-_u(rng, 25, 35), -_u(rng, 8, 16), _u(rng, 0, 8)]
    rv_s = np.array([_u(rng, 28, 34), _u(rng, 15, 20), _u(rng, 34, 42)])
    ra_c = c_la + [-_u(rng, 45, 55), -_u(rng, 5, 15), _u(rng, -6, 8)]
    ra_s = np.array([_u(rng, 18, 24), _u(rng, 17, 22), _u(rng, 20, 27)])
    epi = _u(rng, 3, 7)  # epicardial fat around the ventricles and the right atrium
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
    asc = [lv_c + [-10, 5, 25], c_la + [-_u(rng, 5, 15), -la_semi[1] - ra_ - 6, _u(rng, 15, 25)],
           c_la + [_u(rng, -5, 5), -la_semi[1] - _u(rng, 5, 15), zhi + 30]]
    labels[(g.tube(asc, [ra_ * 1.1] * 3) <= 0) & cavity] = S["aorta"]

    # left atrium: wall shell, pulmonary veins, then the atrium body and appendage on top
    rot_la = rotation(rx=_u(rng, -10, 10), ry=_u(rng, -10, 10), rz=_u(rng, -15, 15))
    wall = _u(rng, 2.0, 3.5)
    la_r_out = g.ellipsoid(c_la, la_semi + wall, rot_la)
    labels[la_r_out <= 1] = S["myocardium"]
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
        length = _u(rng, 15, 28)
        bend = np.array([0.0, _u(rng, 0.1, 0.5), 0.0])
        d2 = d + bend
        d2 /= np.linalg.norm(d2)
        r0 = _u(rng, 4.5, 7.0)
        pts = [start, start + d * length * 0.5, start + d * length * 0.5 + d2 * length * 0.5]
        pv |= g.tube(pts, [r0 * 1.15, r0, r0 * 0.9]) <= 0
    labels[pv & (labels != S["bone"])] = S["pulmonary_veins"]
    la = g.ellipsoid(c_la, la_semi, rot_la) <= 1
    laa_c = c_la + [la_semi[0] * 0.9, -la_semi[1] * 0.9, la_semi[2] * 0.3]
    la |= g.ellipsoid(laa_c, (_u(rng, 6, 9), _u(rng, 5, 7), _u(rng, 9, 13)), rotation(rz=_u(rng, 20, 50))) <= 1
    labels[la] = S["left_atrium"]

    lut = np.zeros(N_CODES, dtype=np.float32)
    lut[S["background"]] = 0.0
    lut[S["body"]] = _u(rng, 0.3, 0.4)
    lut[S["fat"]] = _u(rng, 0.75, 0.95)
    lut[S["muscle"]] = _u(rng, 0.25, 0.35)
    lut[S["bone"]] = _u(rng, 0.4, 0.55)
    lut[S["spinal_canal"]] = _u(rng, 0.15, 0.25)
    lut[[S["lung_left"], S["lung_right"]]] = _u(rng, 0.04, 0.09)
    lut[S["myocardium"]] = _u(rng, 0.1, 0.2)
    blood = _u(rng, 0.5, 0.7)
    for k in ("lv", "rv", "ra", "left_atrium", "pulmonary_veins", "aorta"):
        lut[S[k]] = blood * _u(rng, 0.92, 1.08)
    tex = g.field(rng, 5.0)
    img = lut[labels] * (1 + np.float32(0.08) * tex)
    # late-enhancement (fibrosis-like) patches in the atrial wall
    la_wall = (labels == S["myocardium"]) & (la_r_out <= 1)
    img[la_wall & (g.field(rng, 6.0) > np.float32(_u(rng, 0.3, 1.2)))] = np.float32(_u(rng, 0.7, 0.9))
    sig = [0.6 * min(g.spacing) / s for s in g.spacing]
    img = ndimage.gaussian_filter(img, sig, mode="nearest")
    yn = (g.axes[1] / np.float32(max(abs(g.axes[1][0]), 1.0)))[None, :, None]
    bias = np.exp(np.float32(_u(rng, 0.15, 0.35)) * g.field(rng, 70.0) + np.float32(_u(rng, -0.3, 0.3)) * yn)
    gain = np.float32(_u(rng, 80, 400))
    img = img * bias * gain
    sd = np.float32(_u(rng, 0.02, 0.05)) * gain
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n2 = rng.standard_normal(img.shape, dtype=np.float32)
    img = np.sqrt((img + sd * n1) ** 2 + (sd * n2) ** 2).astype(np.float32)
    info = {"pulmonary_veins": names, "gain": round(float(gain), 2), "noise_rel": round(float(sd / gain), 4)}
    return Phantom(labels, img, info)
