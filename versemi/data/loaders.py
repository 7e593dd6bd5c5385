"""Deterministic, resumable patch sampling for the trainer (built on MONAI array transforms).

``PatchSampler.batch(step)`` is a pure function of ``(seed, stream, step)``:

* which cases: the authors' labeled DataLoader repeats the labeled list 5 times per epoch, shuffles and
  drops the last incomplete batch. We emulate it with an epoch-wise permutation of the
  ``len(cases) * repeats`` items (shuffling without replacement inside an epoch): epoch
  ``e = step // batches_per_epoch`` with ``batches_per_epoch = n_items // B`` (drop_last); the permutation
  of epoch ``e`` comes from ``SeedSequence((seed, stream, e), spawn_key=(1,))``. When ``n_items < B`` an
  epoch is filled with further permutations of the same generator.
* where to crop: ``numpy.random.default_rng((seed, stream, step))``.

So resuming at step k needs no sampler state, and two samplers with different ``stream`` (e.g. labeled
and unlabeled) draw independently.

Crops (volumes smaller than the patch are first zero-padded symmetrically, as the authors' RandomCrop
pads): ``"random"`` uniform position (the authors' labeled transform); ``"center"`` the central patch (the
authors only ever centre-crop *unlabeled* volumes: their unlabeled transform is the test-time CenterCrop);
``"posneg"`` a patch centred on a foreground voxel with probability ``pos_fraction`` else on a background
voxel (MONAI's RandCropByPosNegLabel rule; falls back to random for cases without a label).

Augmentation (``augment``): ``"none"`` (VerSemi's released training) or ``"rotflip"``, the
``RandomRotFlip`` of the UA-MT / DTC / BCP LA scripts (``code/dataloaders/la_heart.py`` of yulequan/UA-MT):
a rotation by k x 90 degrees in the axial plane (k uniform in 0..3) and a flip along one of the two
in-plane axes, applied to image and label alike (always a flip: the result is one of the square's four
reflections, never the unchanged patch, as released). It is applied to the cropped patch (the released code
rotates the volume, then crops: with a square in-plane patch the two give the same distribution of
patches); its draws follow the crop's from the same per-step generator, so ``"none"`` draws exactly what
it drew before the option existed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.transforms import CenterSpatialCrop, SpatialCrop, SpatialPad

from versemi.data.prepare import load_case, load_manifest
from versemi.utils import VersemiError

CROPS = ("random", "center", "posneg")
AUGMENTS = ("none", "rotflip")


class PatchSampler:
    """Batches of patches from in-memory cases.

    cases: list of dicts ``{name, task, image (X, Y, Z) ndarray, label (X, Y, Z) ndarray | None}``.
    batch(step) -> dict(image=(B, 1, *patch) float32, label=(B, *patch) int64 (zeros when unlabeled),
    task=(B,) int64, names=list[str]).
    ``repeats``: items per case per epoch (default 5 for labeled samplers as the authors, 1 otherwise).
    """

    def __init__(self, cases, patch_size, batch_size: int, seed: int, crop: str = "random",
                 pos_fraction: float = 0.5, stream: int = 0, labeled: bool = True, repeats: int | None = None,
                 augment: str = "none"):
        if not cases:
            raise VersemiError("PatchSampler: no cases (is the split empty?)")
        if crop not in CROPS:
            raise VersemiError(f"PatchSampler: unknown crop {crop!r}; expected one of {', '.join(CROPS)}")
        if augment not in AUGMENTS:
            raise VersemiError(f"PatchSampler: unknown augment {augment!r}; expected one of {', '.join(AUGMENTS)}")
        if batch_size < 1:
            raise VersemiError(f"PatchSampler: batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= pos_fraction <= 1.0:
            raise VersemiError(f"PatchSampler: pos_fraction must be in [0, 1], got {pos_fraction}")
        if isinstance(patch_size, int):
            patch_size = (patch_size,) * 3
        self.patch = tuple(int(p) for p in patch_size)
        if len(self.patch) != 3 or min(self.patch) < 1:
            raise VersemiError(f"PatchSampler: patch_size must be 3 positive ints, got {patch_size}")
        self.batch_size, self.seed, self.stream = int(batch_size), int(seed), int(stream)
        self.crop, self.pos_fraction, self.labeled = crop, float(pos_fraction), bool(labeled)
        self.augment = augment
        if augment == "rotflip" and self.patch[0] != self.patch[1]:
            raise VersemiError(f"PatchSampler: augment='rotflip' rotates in the axial plane and needs a square "
                               f"in-plane patch, got {self.patch}")
        self.repeats = int(repeats if repeats is not None else (5 if labeled else 1))
        pad = SpatialPad(spatial_size=self.patch, method="symmetric", mode="constant")
        self._items = []
        for c in cases:
            img = np.asarray(c["image"], dtype=np.float32)
            if img.ndim != 3:
                raise VersemiError(f"PatchSampler: case {c.get('name')!r} image is {img.ndim}-D; expected 3-D")
            lab = c.get("label") if self.labeled else None
            lab = None if lab is None else np.asarray(lab)
            if lab is not None and lab.shape != img.shape:
                raise VersemiError(f"PatchSampler: case {c.get('name')!r} label shape {lab.shape} != image "
                                   f"shape {img.shape}")
            img_t = pad(torch.from_numpy(img[None]))
            lab_t = None if lab is None else pad(torch.from_numpy(lab.astype(np.int64)[None]))
            fg = bg = None
            if crop == "posneg" and lab_t is not None:
                flat = lab_t[0].numpy().ravel()
                fg, bg = np.flatnonzero(flat > 0), np.flatnonzero(flat == 0)
            self._items.append({"name": str(c["name"]), "task": int(c["task"]), "image": torch.as_tensor(img_t),
                                "label": None if lab_t is None else torch.as_tensor(lab_t), "fg": fg, "bg": bg})
        self.n_items = len(self._items) * self.repeats
        self.batches_per_epoch = max(1, self.n_items // self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _epoch_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence((self.seed, self.stream, epoch), spawn_key=(1,)))
        order = [rng.permutation(self.n_items)]
        while sum(len(o) for o in order) < self.batch_size:
            order.append(rng.permutation(self.n_items))
        return np.concatenate(order) % len(self._items)

    def indices(self, step: int) -> list[int]:
        """Case indices of batch ``step``."""
        epoch, j = divmod(int(step), self.batches_per_epoch)
        order = self._epoch_order(epoch)
        return order[j * self.batch_size:(j + 1) * self.batch_size].tolist()

    def _start(self, item, rng) -> list[int]:
        shape = item["image"].shape[1:]
        hi = [s - p for s, p in zip(shape, self.patch)]
        if self.crop == "center":
            return [h // 2 for h in hi]
        if self.crop == "posneg" and item["fg"] is not None:
            pool = item["fg"] if (len(item["fg"]) and (rng.random() < self.pos_fraction or not len(item["bg"]))) \
                else item["bg"]
            centre = np.unravel_index(pool[rng.integers(len(pool))], shape)
            return [int(min(max(c - p // 2, 0), h)) for c, p, h in zip(centre, self.patch, hi)]
        return [int(rng.integers(0, h + 1)) for h in hi]

    def batch(self, step: int) -> dict:
        rng = np.random.default_rng((self.seed, self.stream, int(step)))
        images, labels, tasks, names = [], [], [], []
        for i in self.indices(step):
            item = self._items[i]
            start = self._start(item, rng)
            if self.crop == "center":
                cropper = CenterSpatialCrop(self.patch)
            else:
                cropper = SpatialCrop(roi_start=start, roi_end=[s + p for s, p in zip(start, self.patch)])
            img = torch.as_tensor(cropper(item["image"])).float()
            lab = (torch.as_tensor(cropper(item["label"]))[0].long() if item["label"] is not None
                   else torch.zeros(self.patch, dtype=torch.long))
            if self.augment == "rotflip":
                img, lab = rot_flip(img, lab, rng)
            images.append(img)
            labels.append(lab)
            tasks.append(item["task"])
            names.append(item["name"])
        return {"image": torch.stack(images).contiguous(), "label": torch.stack(labels).contiguous(),
                "task": torch.tensor(tasks, dtype=torch.long), "names": names}


def rot_flip(image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``RandomRotFlip``: image (1, X, Y, Z) and label (X, Y, Z) rotated by k x 90 degrees in the (X, Y)
    plane, k ~ U{0..3}, then flipped along X or Y (uniform), with draws from ``rng``."""
    k, axis = int(rng.integers(0, 4)), int(rng.integers(0, 2))
    image = torch.flip(torch.rot90(image, k, dims=(1, 2)), dims=(1 + axis,))
    label = torch.flip(torch.rot90(label, k, dims=(0, 1)), dims=(axis,))
    return image.contiguous(), label.contiguous()


def load_split_cases(prepared_dir, datasets, ratio, split: str) -> list[dict]:
    """Cases of ``split`` (labeled | unlabeled | unlabeled_train | val | test) of the ``ratio`` (10 | 20)
    setting for ``datasets`` (a name, a list, or 'all'), loaded into memory in manifest order.

    Each dict: name, task, dataset, image (float32 ndarray), label (uint8 ndarray or None), spacing
    (hidden labels: :func:`versemi.data.truth.load_cases`).
    """
    prepared_dir = Path(prepared_dir)
    manifest = load_manifest(prepared_dir)
    if isinstance(datasets, str):
        datasets = list(manifest["datasets"]) if datasets == "all" else [datasets]
    ratio = str(ratio).rstrip("%")
    out = []
    for ds in datasets:
        entry = manifest["datasets"].get(ds)
        if entry is None:
            raise VersemiError(f"{prepared_dir}: dataset {ds!r} is not prepared there; run `versemi prepare "
                               f"--dataset {ds} --out {prepared_dir}`")
        if ratio not in entry["splits"]:
            raise VersemiError(f"unknown labeled ratio {ratio!r}; expected one of {', '.join(entry['splits'])}")
        splits = entry["splits"][ratio]
        if split not in splits:
            raise VersemiError(f"unknown split {split!r}; expected one of {', '.join(splits)}")
        files = {c["name"]: c["file"] for c in entry["cases"]}
        for name in splits[split]:
            d = load_case(prepared_dir / files[name])
            out.append({"name": name, "task": int(d["attrs"]["task"]), "dataset": ds, "image": d["image"],
                        "label": d["label"], "spacing": tuple(d["attrs"]["spacing"])})
    return out
