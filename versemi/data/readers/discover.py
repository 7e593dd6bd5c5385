"""Finding a dataset under a source folder (any of the layouts in ``versemi/data/readers/__init__.py``)
and listing its cases."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from versemi.data.registry import DATASETS, TASK_TO_DATASET, get_dataset, task_from_case_name
from versemi.utils import VersemiError

from .common import CaseRef, strip_ext
from .flat import list_authors_flat
from .la import LA_TRAINING_FOLDER, list_la
from .msd import MSD_FOLDERS, list_msd
from .pancreas import PANCREAS_FOLDER, list_nih_pancreas, pancreas_entries

_SEARCH_DEPTH = 3


def _walk_dirs(src: Path, depth: int = _SEARCH_DEPTH) -> Iterator[Path]:
    """Directories under ``src`` (``src`` first), breadth first, sorted, at most ``depth`` levels deep."""
    level = [src]
    for _ in range(depth + 1):
        nxt = []
        for d in level:
            yield d
            try:
                subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
                              and p.name != "hidden_labels")
            except OSError:
                subs = []
            nxt += subs
        level = nxt


def _is_root(d: Path, dataset: str) -> bool:
    """Whether folder ``d`` holds ``dataset`` in one of its raw layouts (not the authors' flat one)."""
    if dataset == "pancreas":
        return d.name == PANCREAS_FOLDER or bool(pancreas_entries(d))
    if dataset == "la":
        if (d / LA_TRAINING_FOLDER).is_dir():
            return True
        if d.name == LA_TRAINING_FOLDER:
            return True
        try:
            return any((p / "lgemri.nrrd").is_file() or (p / "mri_norm2.h5").is_file()
                       for p in d.iterdir() if p.is_dir())
        except OSError:
            return False
    folder = MSD_FOLDERS[dataset]
    if d.name == folder:
        return True
    js = d / "dataset.json"
    if js.is_file():
        with contextlib.suppress(Exception):
            name = str(json.loads(js.read_text()).get("name", "")).lower()
            return dataset in name
    return False


def _flat_candidates(d: Path) -> list[Path]:
    try:
        return [p for p in d.iterdir() if p.is_file() and p.suffix.lower() in (".h5", ".hdf5")]
    except OSError:
        return []


def find_dataset_root(src, dataset: str) -> Path:
    """The folder under ``src`` (``src`` itself included, searched 3 levels deep) holding ``dataset``.

    Raw layouts are preferred; otherwise a folder of ``<name>.h5`` files (the authors' flat layout) whose
    names map to ``dataset``. For LA the folder holding '2018LA_Seg_Training Set' is returned, so
    ``--src /data`` and ``--src /data/LA`` both work.
    """
    get_dataset(dataset)
    src = Path(src)
    if not src.is_dir():
        raise VersemiError(f"{src}: source folder does not exist")
    dirs = list(_walk_dirs(src))
    for d in dirs:
        if _is_root(d, dataset):
            if dataset == "la" and d.name == LA_TRAINING_FOLDER:
                return d.parent
            return d
    wrong_task = None
    for d in dirs:
        files = _flat_candidates(d)
        if files:
            names = [strip_ext(p.name) for p in files]
            if any(TASK_TO_DATASET[task_from_case_name(n)] == dataset for n in names):
                return d
            wrong_task = wrong_task or d
    if wrong_task is not None:
        list_authors_flat(wrong_task, dataset)  # raises the 'unknown task' error naming the folder
    hints = {"pancreas": f"{PANCREAS_FOLDER}/PANCREAS_XXXX (DICOM or NIfTI)",
             "la": f"'{LA_TRAINING_FOLDER}/<ID>/mri_norm2.h5' or <ID>/lgemri.nrrd",
             "spleen": "Task09_Spleen/dataset.json", "lung": "Task06_Lung/dataset.json"}
    raise VersemiError(f"{src}: no {DATASETS[dataset].title} data found (looked for {hints[dataset]} or a "
                       "folder of authors' <name>.h5 files)")


def hidden_dir_for(src, dataset: str) -> Path | None:
    """``src/hidden_labels/<dataset>`` (the phantoms' complete label maps) if it exists, else None."""
    d = Path(src) / "hidden_labels" / dataset
    return d if d.is_dir() else None


def list_raw_cases(src, dataset: str) -> list[CaseRef]:
    """All cases of ``dataset`` under ``src`` (not read yet), sorted by name."""
    root = find_dataset_root(src, dataset)
    hidden = hidden_dir_for(src, dataset)
    if dataset == "pancreas" and _is_root(root, "pancreas"):
        return list_nih_pancreas(root, hidden)
    if dataset == "la" and _is_root(root, "la"):
        return list_la(root, hidden)
    if dataset in MSD_FOLDERS and _is_root(root, dataset):
        return list_msd(root, dataset, hidden)
    return list_authors_flat(root, dataset, hidden)

