"""Hidden labels and what each prompt should find: the ground truth of the prompt analyses.

The phantoms keep the complete hidden label map of every structure: ``hidden_label`` (X, Y, Z) uint8
codes with the legend ``hidden_legend`` {structure: code} (:data:`~versemi.data.registry.STRUCTURES`;
written by ``versemi/data/phantoms``, cropped and resampled with the label by ``versemi/data/prepare.py``).
So on a phantom scan the right answer of every prompt is known, including the prompts of the other
datasets. Real scans carry only their own label.

What a prompt should find (:func:`prompt_truth`). Write ``h`` for the hidden label map, ``c(s)`` for the
code of structure ``s``, ``s_k`` for the structure dataset ``k`` labels (``DatasetInfo.structure``:
pancreas, left_atrium, spleen, tumour) and ``T_k = [h == c(s_k)]`` for its mask in this scan.

* Task prompt ``k`` in 1..4: ``T_k``. The head with prompt ``k`` is trained (L_sup = Dice + CE with each
  sample's own prompt, ``versemi/losses.py``) to output the structure dataset ``k`` labels, so on any scan
  it should find that structure wherever it is, and nothing (an all-False mask) when the scan does not
  hold it (e.g. the lung-tumour prompt on a cardiac MRI).
* Synthetic prompt 5: ``union_{k in K} T_k`` with ``K`` the run's task prompts (``tasks``). In stage 2
  VerSemi trains prompt 5 on every scan towards ``P_agg = max_{k in K} p_k`` (``aggregate_prompts`` in
  ``versemi/losses.py``; ``K = ctx.task_prompts`` in ``versemi/methods/versemi.py``). For a network whose
  task prompts are right, ``p_k = T_k`` and so ``P_agg = max_{k in K} T_k = union_{k in K} T_k``. The
  supervised term L_syn (stage 1 and 2) has the target ``y_mix = y_a M + y_b (1 - M)``: region by region
  the own label of the sample the region came from, i.e. the union of the mixed samples' own targets.
  Labels are partial (a dataset labels only its own structure; another dataset's structure in its scans
  is unlabeled there, not absent), so ``y_mix`` equals ``union_{k in K} T_k`` wherever the scans hold no
  other run task's structure, and ``P_agg`` is what defines prompt 5 on a whole scan. For a run on the
  four datasets the truth is the union of the four targets; for a task-specific run
  (``K = (own task,)``) it is the scan's own target.

Without hidden labels (real data) only these are known: the case's own prompt -> ``label == 1``, and prompt
5 of a run whose only task is the case's own -> ``label == 1``; anything else is unknown (None).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from versemi.data.loaders import load_split_cases
from versemi.data.prepare import decode_legend, load_manifest
from versemi.data.registry import DATASETS, SYNTHETIC_TASK, TASK_IDS, TASK_TO_DATASET
from versemi.utils import VersemiError

__all__ = ["read_hidden", "load_cases", "prompt_structures", "prompt_truth"]


# ---------------------------------------------------------------------------------------------- hidden labels
def read_hidden(path) -> tuple[np.ndarray | None, dict | None]:
    """The hidden label map (uint8 codes, the prepared volume's shape) and its legend {structure: code} of
    a prepared case file; (None, None) when it has none. A file without a stored legend holds the phantom
    generator's codes (see :func:`versemi.data.prepare.decode_legend`)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "hidden_label" not in f:
                return None, None
            hidden = f["hidden_label"][()]
            legend = f.attrs.get("hidden_legend")
    except OSError as e:
        raise VersemiError(f"{path}: cannot read the hidden labels ({e})") from None
    return hidden, decode_legend(legend)


def load_cases(prepared_dir, ratio: int = 10, split: str = "test", datasets="all") -> list[dict]:
    """The cases of ``split`` with their hidden labels where the prepared files have them.

    Each dict holds what :func:`versemi.data.loaders.load_split_cases` gives (name, task, dataset, image,
    label, spacing) plus ``hidden_label`` (uint8 codes or None) and ``hidden_legend`` ({structure: code}
    or None).
    """
    prepared_dir = Path(prepared_dir)
    manifest = load_manifest(prepared_dir)
    files = {(ds, c["name"]): c["file"] for ds, e in manifest["datasets"].items() for c in e["cases"]}
    cases = load_split_cases(prepared_dir, datasets, ratio, split)
    for c in cases:
        path = prepared_dir / files[(c["dataset"], c["name"])]
        hidden, legend = read_hidden(path)
        if hidden is not None and hidden.shape != c["image"].shape:
            raise VersemiError(f"{path}: hidden label shape {hidden.shape} != image shape {c['image'].shape}")
        c["hidden_label"], c["hidden_legend"] = hidden, legend
    return cases


# ---------------------------------------------------------------------------------------------- prompt truth
def _check_tasks(tasks: Iterable[int]) -> tuple[int, ...]:
    tasks = tuple(tasks)
    bad = [t for t in tasks if t not in TASK_IDS]
    if bad or not tasks:
        raise VersemiError(f"unknown task prompt(s) {bad or list(tasks)}; expected a non-empty subset of "
                           f"{', '.join(map(str, TASK_IDS))}")
    return tuple(dict.fromkeys(int(t) for t in tasks))


def prompt_structures(prompt: int, tasks: Iterable[int] = TASK_IDS) -> tuple[str, ...]:
    """The hidden-label structures (keys of ``STRUCTURES``) that ``prompt`` asks for: prompt k in 1..4 ->
    the structure dataset k labels; the synthetic prompt 5 -> the structures of ``tasks``, the run's task
    prompts (see the module doc). An unknown prompt or task is a :class:`VersemiError`."""
    tasks = _check_tasks(tasks)
    if prompt == SYNTHETIC_TASK:
        return tuple(DATASETS[TASK_TO_DATASET[k]].structure for k in tasks)
    if prompt not in TASK_IDS:
        raise VersemiError(f"unknown prompt {prompt!r}; expected 1..{SYNTHETIC_TASK}")
    return (DATASETS[TASK_TO_DATASET[int(prompt)]].structure,)


def case_dataset(case: dict) -> str:
    """The dataset of a case dict: its ``dataset``, else the dataset of its ``task``."""
    ds = case.get("dataset") or TASK_TO_DATASET.get(int(case.get("task", 0)))
    if ds not in DATASETS:
        raise VersemiError(f"case {case.get('name')!r}: unknown dataset/task ({case.get('dataset')!r}, "
                           f"{case.get('task')!r})")
    return ds


def prompt_truth(case: dict, prompt: int, tasks: Iterable[int] = TASK_IDS) -> np.ndarray | None:
    """The boolean (X, Y, Z) mask that ``prompt`` should find on ``case``, or None when it is unknown.

    ``case``: a dict with ``dataset`` (or ``task``), ``label`` and, for phantoms, ``hidden_label`` and
    ``hidden_legend`` (as :func:`load_cases` gives; a missing legend means ``STRUCTURES``). ``tasks``: the
    run's task prompts (all four by default), which define the synthetic prompt 5.

    With hidden labels: prompt k in 1..4 -> ``hidden == code(structure of dataset k)`` (all False when the
    scan does not hold it); prompt 5 -> the union of those masks over ``tasks``. Without (real data): the
    case's own prompt, and prompt 5 when ``tasks`` is only the case's own task -> ``label == 1``; anything
    else -> None. The module doc derives this from the losses that train each prompt.
    """
    tasks = _check_tasks(tasks)
    structures = prompt_structures(prompt, tasks)
    ds = case_dataset(case)
    own = DATASETS[ds].task_id
    hidden = case.get("hidden_label")
    if hidden is not None:
        legend = case.get("hidden_legend")
        legend = decode_legend(None) if legend is None else legend
        codes = [int(legend[s]) for s in structures if s in legend]  # a structure not in the legend: absent
        return np.isin(np.asarray(hidden), codes)
    label = case.get("label")
    if label is None:
        return None
    if prompt == own or (prompt == SYNTHETIC_TASK and tasks == (own,)):
        return np.asarray(label) == 1
    return None
