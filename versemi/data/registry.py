"""The four datasets of the paper: their task ids, case counts, titles, the structure each labels, and
the codes of the complete (hidden) label maps of the phantoms.

The task id of a dataset is its prompt in the network (1..4, the order of the authors' code: pancreas,
left atrium, spleen, lung tumour); prompt 5 (:data:`SYNTHETIC_TASK`) is VerSemi's synthetic task. The case
lists of the authors' 10% / 20% settings ship in ``versemi/data/splits/<dataset>.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from versemi.utils import VersemiError

SYNTHETIC_TASK = 5

#: Codes of the complete hidden label maps of the phantoms (0 is background / air outside the body);
#: ``versemi/data/phantoms`` paints them and writes them to ``hidden_labels/legend.json``.
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


@dataclass(frozen=True)
class DatasetInfo:
    name: str            # short name used everywhere: pancreas | la | spleen | lung
    task_id: int         # prompt id of the paper's code (1..4)
    title: str           # human-readable name
    modality: str        # "CT" | "MRI"
    target: str          # the structure that this dataset labels, in words
    n_train: int
    n_test: int
    structure: str       # the structure that this dataset labels: a key of STRUCTURES
    short_title: str     # the name in figure titles


DATASETS: dict[str, DatasetInfo] = {
    "pancreas": DatasetInfo("pancreas", 1, "NIH Pancreas-CT", "CT", "pancreas", 62, 18,
                            structure="pancreas", short_title="NIH Pancreas"),
    "la": DatasetInfo("la", 2, "Left Atrium (2018 challenge)", "MRI", "left atrium", 80, 20,
                      structure="left_atrium", short_title="Left Atrium"),
    "spleen": DatasetInfo("spleen", 3, "MSD Task09 Spleen", "CT", "spleen", 30, 11,
                          structure="spleen", short_title="MSD Spleen"),
    "lung": DatasetInfo("lung", 4, "MSD Task06 Lung tumour", "CT", "lung tumour", 50, 13,
                        structure="tumour", short_title="MSD Lung tumour"),
}
TASK_TO_DATASET = {d.task_id: d.name for d in DATASETS.values()}
ALL_DATASETS: tuple[str, ...] = tuple(sorted(DATASETS, key=lambda d: DATASETS[d].task_id))  # the paper's order
TASK_IDS: tuple[int, ...] = tuple(DATASETS[d].task_id for d in ALL_DATASETS)  # the task prompts 1..4


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
