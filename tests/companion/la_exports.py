"""Small fake exports of the la-real study (test helper): a few runs over two seeds on 20 real LA test cases,
the joint run with phantom CT test cases too, written as ``versemi study run`` writes them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from versemi.experiments import HYBRID_LABEL, la_real_study_configs
from versemi.runs import run_fields
from versemi.studies import export_dir

# label -> (mean Dice, seeds): VerSemi clearly best at 10 %, the joint run a bit above it
RUNS = {"Sup-only 10%": (0.80, (2333, 1)), "BCP 10%": (0.84, (2333, 1)), "VerSemi 10%": (0.88, (2333, 1)),
        HYBRID_LABEL: (0.885, (2333, 1)), "MagicNet 10%": (0.83, (2333,)), "Sup-only 20%": (0.85, (2333, 1)),
        "BCP 20%": (0.86, (2333, 1)), "Fully supervised 100%": (0.91, (2333, 1))}
N_CASES = 20


def _write_export(out, label, seed, dice):
    cfg = la_real_study_configs(seed=seed)[label]
    rng = np.random.default_rng([seed, len(label)])
    fields = run_fields(cfg)
    lines = []
    for ds in cfg.datasets:   # the joint run is also scored on its phantom CT test cases
        for i in range(N_CASES if ds == "la" else 3):
            d = float(np.clip(dice + rng.normal(0, 0.01) + 0.02 * np.sin(i), 0, 1)) if ds == "la" else 0.1
            lines.append({"method": label, "seed": seed, "dataset": ds, **fields, "case": f"{ds}{i:02d}", "task": 2,
                          "dice": d, "jaccard": d / (2 - d), "hd95": 10 * (1 - d), "asd": 3 * (1 - d),
                          "empty_pred": False, "empty_gt": False, "n_pred_voxels": 100, "n_gt_voxels": 100,
                          "seconds": 0.1})
    dest = export_dir(out, "la-real", "la-real", label, seed)
    dest.mkdir(parents=True)
    pd.DataFrame(lines).to_csv(dest / "cases.csv", index=False)
    pd.DataFrame({"step": [1, 2], "stage": [1, 1], "loss": [1.0, 0.5]}).to_csv(dest / "loss.csv", index=False)
    pd.DataFrame({"step": [2], "dataset": ["la"], "dice": [dice], "model": [""]}).to_csv(dest / "val.csv", index=False)
    run = f"{cfg.method}-{cfg.identity('fake')}"
    rec = {"label": label, "seed": seed, "run": run, "config": cfg.to_dict(), "train_seconds": 600.0 + seed % 7,
           "best": {"dice": dice}, "times": {"method": label, "train_seconds": 600.0 + seed % 7, "steps": cfg.steps,
                                            "median_step_s": 0.5, "run": run},
           "selection": {"method": label, "selection": "val", "checkpoint": "best.pt", "steps": cfg.steps},
           "provenance": {"code": "c0de", "method_code": f"m-{cfg.method}", "data_code": "d0",
                          "git": {"commit": "0123456789abcdef0123", "dirty": False},
                          "machine": {"cpus": 2, "torch": "2.13.0+cpu"}, "time": "2026-12-01T00:00:00"}}
    (dest / "run.json").write_text(json.dumps(rec))


def write_la_exports(out):
    """Every run of :data:`RUNS` for each of its seeds under ``out`` (a studies folder); returns ``out``."""
    for label, (dice, seeds) in RUNS.items():
        for s in seeds:
            _write_export(out, label, s, dice)
    return out
