"""Grids, smooth random fields and implicit shapes of the procedural phantoms (``versemi/data/phantoms``).

Every builder works in physical millimetres on a voxel grid given by ``shape`` (nx, ny, nz) and
``spacing`` (sx, sy, sz).  Axis 0 runs towards the patient's left, axis 1 towards posterior,
axis 2 towards superior (DICOM's LPS patient axes), and the centre of the grid is the origin.
A smooth random displacement field deforms the coordinates once per case (:class:`Grid`), so all organs
are deformed consistently; shapes are implicit functions (ellipsoids, elliptic cylinders, tubes
around spline curves) evaluated on the deformed coordinates.  Everything is vectorised numpy /
scipy; the only Python loops run over curve points, never over voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

from versemi.data.registry import STRUCTURES

S = STRUCTURES
N_CODES = max(S.values()) + 1


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
    # contract the node axes in x, y, z order: each product appends its voxel axis last, so the result
    # comes out as (n, i, j, k) without a transposed copy
    t = np.tensordot(g, w0, axes=([1], [1]))            # (n, b, c, i)
    t = np.tensordot(t, w1, axes=([1], [1]))            # (n, c, i, j)
    return np.tensordot(t, w2, axes=([1], [1]))         # (n, i, j, k)


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
        p = np.stack([self.X.ravel()[idx], self.Y.ravel()[idx], self.Z.ravel()[idx]], axis=1).astype(np.float64)
        pts64 = pts.astype(np.float64)
        pp = (pts64**2).sum(1)[None, :]
        best = np.full(idx.size, np.inf, dtype=np.float32)
        chunk = max(1, 4_000_000 // m)
        for a in range(0, idx.size, chunk):
            q = p[a:a + chunk]
            # |q - p|^2 = |q|^2 + |p|^2 - 2 q.p as one matrix product (float64: no cancellation at mm scale)
            d2 = np.maximum((q**2).sum(1)[:, None] + pp - 2.0 * (q @ pts64.T), 0.0)
            best[a:a + chunk] = (np.sqrt(d2) - rad[None, :]).min(axis=1)
        out.ravel()[idx] = best
        return out


def uniform(rng, lo, hi) -> float:
    """One draw of U(lo, hi) as a Python float."""
    return float(rng.uniform(lo, hi))


@dataclass
class Phantom:
    """A generated volume: full label map (uint8 codes) and intensities (float32: HU or MRI units)."""

    labels: np.ndarray
    image: np.ndarray
    info: dict
