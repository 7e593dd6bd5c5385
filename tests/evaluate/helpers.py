"""Helpers of the versemi.evaluate tests: smooth random volumes and an independent, one-window-at-a-time
sliding window in the style of the authors' ``test_single_case``."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

PATCH = (32, 32, 32)
STRIDE = (8, 8, 4)


def volume(shape, seed=0):
    rng = np.random.default_rng(seed)
    v = ndimage.gaussian_filter(rng.normal(size=shape), 2.0) * 5
    return v.astype(np.float32)


def reference_predict(net, image, task_id, patch, stride_xy, stride_z):
    """One window at a time, numpy accumulation: the authors' test_single_case, written for the test."""
    w, h, d = image.shape
    pads = [max(p - s, 0) for p, s in zip(patch, image.shape)]
    lr = [(p // 2, p - p // 2) for p in pads]
    img = np.pad(image, lr, mode="constant") if any(pads) else image
    ww, hh, dd = img.shape
    nx = math.ceil((ww - patch[0]) / stride_xy) + 1
    ny = math.ceil((hh - patch[1]) / stride_xy) + 1
    nz = math.ceil((dd - patch[2]) / stride_z) + 1
    score = np.zeros((2,) + img.shape, np.float32)
    cnt = np.zeros(img.shape, np.float32)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for ix in range(nx):
            xs = min(stride_xy * ix, ww - patch[0])
            for iy in range(ny):
                ys = min(stride_xy * iy, hh - patch[1])
                for iz in range(nz):
                    zs = min(stride_z * iz, dd - patch[2])
                    win = img[xs:xs + patch[0], ys:ys + patch[1], zs:zs + patch[2]]
                    out = net(torch.from_numpy(np.ascontiguousarray(win))[None, None].float(),
                              torch.tensor([int(task_id)]))
                    prob = F.softmax(out, dim=1)[0].numpy()
                    sl = (slice(xs, xs + patch[0]), slice(ys, ys + patch[1]), slice(zs, zs + patch[2]))
                    score[(slice(None),) + sl] = score[(slice(None),) + sl] + prob
                    cnt[sl] = cnt[sl] + 1
    net.train(was_training)
    score = score / cnt[None]
    label = np.argmax(score, axis=0)
    crop = tuple(slice(a, a + n) for (a, _), n in zip(lr, (w, h, d)))
    return label[crop], score[(slice(None),) + crop]
