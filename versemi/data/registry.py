"""The four datasets of the paper and their task ids (DESIGN.md section 4)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from versemi.utils import VersemiError

SYNTHETIC_TASK = 5


@dataclass(frozen=True)
class DatasetInfo:
    name: str            # short name used everywhere: pancreas | la | spleen | lung
    task_id: int         # prompt id of the paper's code (1..4)
    title: str           # human-readable name
    modality: str        # "CT" | "MRI"
    target: str          # the structure that this dataset labels
    n_train: int
    n_test: int


DATASETS: dict[str, DatasetInfo] = {
    "pancreas": DatasetInfo("pancreas", 1, "NIH Pancreas-CT", "CT", "pancreas", 62, 18),
    "la": DatasetInfo("la", 2, "Left Atrium (2018 challenge)", "MRI", "left atrium", 80, 20),
    "spleen": DatasetInfo("spleen", 3, "MSD Task09 Spleen", "CT", "spleen", 30, 11),
    "lung": DatasetInfo("lung", 4, "MSD Task06 Lung tumour", "CT", "lung tumour", 50, 13),
}
TASK_TO_DATASET = {d.task_id: d.name for d in DATASETS.values()}


def get_dataset(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise VersemiError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}") from None


def task_from_case_name(name: str) -> int:
    """Task id from a case name in the authors' flat layout: data* pancreas, spleen* spleen, lung* lung
    tumour, anything else LA."""
    if name.startswith("data"):
        return 1
    if name.startswith("spleen"):
        return 3
    if name.startswith("lung"):
        return 4
    return 2


@cache
def authors_split(dataset: str) -> dict[str, list[str]]:
    """The authors' case lists for ``dataset``: keys labeled_10, labeled_20, unlabeled_10,
    unlabeled_20, test (case names in the authors' naming: data0001, spleen_02, lung_001, LA ids)."""
    get_dataset(dataset)
    text = resources.files("versemi.data").joinpath("splits", f"{dataset}.json").read_text()
    d = json.loads(text)
    return {k: v for k, v in d.items() if isinstance(v, list)}
