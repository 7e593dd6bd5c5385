"""Benchmarks (not tests): run as modules, e.g. ``python -m bench.eval_speed``."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def save_profiles(df: pd.DataFrame, path, profiles, keep_unmeasured: str | None = None) -> None:
    """Write ``df`` (the lines of ``profiles`` just measured) to ``path`` with the machine's columns
    (:func:`versemi.provenance.machine`), keeping the lines of the profiles not measured in this call (e.g.
    the paper profile's, measured on a GPU), atomically; print the table and where it went.
    ``keep_unmeasured``: a column (e.g. ``method``) whose values not in ``df`` keep their earlier lines in the
    measured profiles too (a few methods measured again). Kept lines keep their own machine columns."""
    from versemi.companion.figures import save_table
    from versemi.provenance import machine

    df = df.copy()
    for k, v in machine().items():
        df[k] = v
    path = Path(path)
    if path.is_file():
        old = pd.read_csv(path)
        keep = ~old["profile"].isin(list(profiles))
        if keep_unmeasured is not None:
            keep |= ~old[keep_unmeasured].isin(list(df[keep_unmeasured]) if keep_unmeasured in df else [])
        df = pd.concat([old[keep], df], ignore_index=True)
    save_table(df, path)
    print(df.to_string(index=False))
    print(f"wrote {path}", file=sys.stderr)
