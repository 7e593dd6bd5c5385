"""The Medical Segmentation Decathlon layout (Task09_Spleen, Task06_Lung): ``dataset.json``, ``imagesTr/``,
``labelsTr/``, ``imagesTs/``; NIfTI images reoriented to the closest canonical (RAS+) orientation."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from versemi.data.registry import get_dataset
from versemi.utils import VersemiError

from .common import (
    CaseRef,
    RawCase,
    check_image,
    check_label,
    check_same_spacing,
    check_task,
    check_unique,
    hidden_for,
    nifti_canonical,
    reading,
    strip_ext,
)

MSD_FOLDERS = {"spleen": "Task09_Spleen", "lung": "Task06_Lung"}


def msd_case_name(stem: str, dataset: str) -> str:
    """MSD file stem -> the authors' name: spleen_2 -> spleen_02, lung_1 -> lung_001 (others unchanged)."""
    m = re.fullmatch(r"(spleen|lung)_0*(\d+)", stem)
    if not m:
        return stem
    width = 2 if m.group(1) == "spleen" else 3
    return f"{m.group(1)}_{int(m.group(2)):0{width}d}"


def list_msd(task_dir, dataset: str, hidden_dir=None) -> list[CaseRef]:
    """Cases of an MSD task folder (``dataset.json`` 'training' entries labeled, 'test'/imagesTs unlabeled)."""
    get_dataset(dataset)
    task_dir = Path(task_dir)
    hidden_dir = Path(hidden_dir) if hidden_dir else None
    js = task_dir / "dataset.json"
    if not js.is_file():
        raise VersemiError(f"{js}: dataset.json is missing (not an MSD task folder)")
    with reading(js, "dataset.json"):
        meta = json.loads(js.read_text())
    if not isinstance(meta, dict) or "training" not in meta:
        raise VersemiError(f"{js}: missing key 'training' in dataset.json")
    if not isinstance(meta["training"], list):
        raise VersemiError(f"{js}: key 'training' must be a list of {{'image', 'label'}} entries")
    refs = []
    for i, entry in enumerate(meta["training"]):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            missing = [k for k in ("image", "label") if not isinstance(entry, dict) or k not in entry]
            raise VersemiError(f"{js}: training entry {i} is missing key(s) {missing}")
        img = Path(os.path.normpath(task_dir / entry["image"]))
        lab = Path(os.path.normpath(task_dir / entry["label"]))
        refs.append(_msd_ref(img, lab, dataset, hidden_dir, task_dir))
    test = meta.get("test")
    if test is None and (task_dir / "imagesTs").is_dir():
        test = sorted(p.name for p in (task_dir / "imagesTs").iterdir()
                      if p.name.endswith((".nii", ".nii.gz")) and not p.name.startswith("._"))
        test = [f"imagesTs/{t}" for t in test]
    for entry in test or []:
        rel = entry["image"] if isinstance(entry, dict) else entry
        refs.append(_msd_ref(Path(os.path.normpath(task_dir / rel)), None, dataset, hidden_dir, task_dir))
    return check_unique(refs, task_dir)


def _msd_ref(img: Path, lab: Path | None, dataset: str, hidden_dir, task_dir: Path) -> CaseRef:
    name = msd_case_name(strip_ext(img.name), dataset)
    check_task(name, dataset, img)

    def load() -> RawCase:
        arr, spacing, affine = nifti_canonical(img, "image")
        image = check_image(arr, img)
        label = None
        if lab is not None:
            if not lab.is_file():
                raise VersemiError(f"{lab}: label file is missing for image {img.name} (missing label)")
            larr, lsp, _ = nifti_canonical(lab, "label")
            label = check_label(larr, lab, image.shape, img)
            check_same_spacing(lsp, spacing, lab, img)
        hidden = hidden_for(hidden_dir, name, image.shape, reorient=True)
        return RawCase(name, dataset, image, label, spacing, affine, img, hidden, fmt="nifti", label_source=lab)

    return CaseRef(name, dataset, img, "nifti", lab is not None, load)

