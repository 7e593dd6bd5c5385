"""The authors' flat preprocessed layout: a folder of ``<name>.h5`` files (datasets image, label; optional
hidden_label and attribute spacing), the task read from the name (``data*`` pancreas, ``spleen*``,
``lung*``, anything else LA)."""

from __future__ import annotations

from pathlib import Path

import h5py

from versemi.data.registry import DATASETS, TASK_TO_DATASET, task_from_case_name
from versemi.utils import VersemiError

from .common import (
    CaseRef,
    RawCase,
    check_hidden,
    check_spacing,
    check_unique,
    hidden_for,
    read_h5_case,
    reading,
    strip_ext,
)
from .la import LA_SPACING

FLAT_DEFAULT_SPACING = {"pancreas": (1.0, 1.0, 1.0), "la": LA_SPACING, "spleen": (1.0, 1.0, 1.0),
                        "lung": (1.0, 1.0, 1.0)}


def list_authors_flat(folder, dataset: str | None = None, hidden_dir=None) -> list[CaseRef]:
    """Cases of a folder of ``<name>.h5`` files in the authors' layout; the task comes from the name
    (``data*`` pancreas, ``spleen*``, ``lung*``, anything else LA). With ``dataset`` only its cases are
    listed; a folder without any is an error ('unknown task')."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VersemiError(f"{folder}: folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".h5", ".hdf5")
                   and not p.name.startswith("."))
    if not files:
        raise VersemiError(f"{folder}: no <name>.h5 files (authors' flat layout) found")
    refs = []
    for p in files:
        name = strip_ext(p.name)
        ds = TASK_TO_DATASET[task_from_case_name(name)]
        if dataset is not None and ds != dataset:
            continue
        refs.append(CaseRef(name, ds, p, "authors-h5", True, _flat_loader(p, name, ds, hidden_dir)))
    if dataset is not None and not refs:
        found = sorted({TASK_TO_DATASET[task_from_case_name(strip_ext(p.name))] for p in files})
        raise VersemiError(f"{folder}: unknown task: no case name maps to dataset {dataset!r} "
                           f"(task {DATASETS[dataset].task_id}); the names map to {', '.join(found)}")
    return check_unique(refs, folder)


def _flat_loader(path: Path, name: str, dataset: str, hidden_dir):
    def load() -> RawCase:
        image, label, attrs = read_h5_case(path)
        sp = attrs.get("spacing")
        spacing = check_spacing(sp, path) if sp is not None else FLAT_DEFAULT_SPACING[dataset]
        hidden = None
        with reading(path, "HDF5 file"), h5py.File(path, "r") as f:
            if "hidden_label" in f:
                hidden = check_hidden(f["hidden_label"][()], path, image.shape)
        if hidden is None:
            hidden = hidden_for(Path(hidden_dir) if hidden_dir else None, name, image.shape, reorient=False)
        return RawCase(name, dataset, image, label, spacing, None, path, hidden, preprocessed=True,
                       fmt="authors-h5", label_source=path)

    return load

