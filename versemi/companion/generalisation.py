"""The unseen-site page pieces: which results a page shows and the drop table as it is displayed.

The measurements are ``versemi/generalisation.py`` (evaluation on the external set, drops with intervals);
the study is ``versemi study run generalisation`` (``versemi/studies.py``).
"""

from __future__ import annotations

import math

import pandas as pd

from versemi.utils import VersemiError

NO_RESULTS = ("no committed unseen-site results for the {profile} profile yet (`versemi study run generalisation "
              "--profile {profile}` trains nothing new: it scores the SOTA group's spleen models on the unseen site); "
              "a book build does not compute them live")


def unseen_site_results(profile: str, source: str = "auto", **kwargs):
    """The generalisation study's results for a page, or None: committed results when the profile has
    them; live ones only in the smoke profile or when ``source="live"`` (a book build does not score every
    spleen model on the unseen site live). ``kwargs``: those of :func:`versemi.studies.study_results`."""
    from versemi.studies import study_results

    if source == "auto" and profile != "smoke":
        source = "committed"
    try:
        return study_results("generalisation", profile, source=source, progress=False, **kwargs)
    except VersemiError as e:
        if "no committed results" in str(e):
            return None
        raise


def _f(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def drop_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`versemi.generalisation.drop_table` as the page shows it (Dice in %, drop = MSD - unseen)."""
    if table.empty:
        return pd.DataFrame(columns=["row", "MSD spleen Dice", "unseen-site Dice", "drop [95% CI]", "p (no drop)",
                                     "seeds", "cases (MSD / unseen)"])
    return pd.DataFrame({
        "row": table["row"], "MSD spleen Dice": table["msd"].map(_f), "unseen-site Dice": table["unseen"].map(_f),
        "drop [95% CI]": [f"{_f(d)} [{_f(lo)}, {_f(hi)}]" for d, lo, hi in
                          zip(table["drop"], table["drop_lo"], table["drop_hi"])],
        "p (no drop)": table["p_drop"].map(lambda p: "< 0.001" if p < 0.001 else f"{p:.3f}"),
        "seeds": table["n_seeds"], "cases (MSD / unseen)": [f"{a} / {b}" for a, b in
                                                            zip(table["n_msd"], table["n_unseen"])],
    })


def drop_sentence(table: pd.DataFrame, row: str = "VerSemi") -> str:
    """One sentence for the page: the drop of ``row`` with its interval and the mean drop of the others."""
    if table.empty:
        return "No model was scored on the unseen site in this build."
    mine = table[table["row"] == row]
    others = table[~table["row"].isin([row, "Fully supervised"])]
    parts = []
    if len(mine):
        r = mine.iloc[0]
        parts.append(f"{row}'s Dice drops by {_f(r['drop'])} points on the unseen site "
                     f"(95% CI [{_f(r['drop_lo'])}, {_f(r['drop_hi'])}])")
    if len(others):
        parts.append(f"the other {len(others)} model(s) by {_f(float(others['drop'].mean()))} points on average "
                     f"(from {_f(float(others['drop'].min()))} to {_f(float(others['drop'].max()))})")
    return "; ".join(parts) + "." if parts else "No model was scored on the unseen site in this build."
