"""versemi.companion.comparison_plots on synthetic tables (no training)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from versemi.companion import comparison_plots  # noqa: E402
from versemi.companion.figures import save_figure  # noqa: E402
from versemi.companion.tables import DATASET_TITLES  # noqa: E402
from versemi.utils import VersemiError  # noqa: E402

from .case_tables import DS, sota_table, universal  # noqa: E402


def test_plots_and_saving(tmp_path):
    df = sota_table()
    df.loc[df.index[:2], ["dice", "empty_pred"]] = [0.0, True]
    fig = comparison_plots.plot_case_scores(df, title="synthetic")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [DATASET_TITLES[d] for d in DS]
    assert any(ax.get_legend() is not None for ax in visible)  # empty predictions flagged
    p = save_figure(fig, tmp_path / "f" / "cases.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one panel per dataset shown; rows on the y axis in the paper's order
    fig_la = comparison_plots.plot_case_scores(df, datasets=["la"])
    labels = [t.get_text() for t in fig_la.axes[0].get_yticklabels()]
    assert labels == ["BCP", "Uni-BCP", "VerSemi", "Fully supervised"]
    abl = pd.concat([universal("VerSemi (full)", {"la": [0.8, 0.7]}), universal("w/o L_aux", {"la": [0.6, 0.7]})])
    fig2 = comparison_plots.plot_ablation(abl)
    assert [t.get_text() for t in fig2.axes[0].get_xticklabels()] == ["VerSemi (full)", "w/o L_aux"]
    fig3 = comparison_plots.plot_case_scores(abl, rows="key")
    assert [t.get_text() for t in fig3.axes[0].get_yticklabels()] == ["VerSemi (full)", "w/o L_aux"]
    with pytest.raises(VersemiError, match="no cases"):
        comparison_plots.plot_case_scores(df, datasets=["nowhere"])
    plt.close("all")


def test_every_case_point_names_itself_on_hover():
    """Each case of the table is one point whose tooltip names the case, the row, the seed and the value, at
    the row's height; empty predictions are tipped too (as red crosses)."""
    import re

    from versemi.companion.figures import hover_html

    df = sota_table()
    df["seed"] = 7
    df.loc[df.index[:2], ["dice", "empty_pred"]] = [0.0, True]
    fig = comparison_plots.plot_case_scores(df)
    titles = re.findall(r"<title>(.*?)</title>", hover_html(fig).svg)
    assert len(titles) == len(df)
    want = {f"{r.case} | {r.row} | seed 7 | Dice {100 * r.dice:.1f} %" + (" (empty prediction)" if r.empty_pred
                                                                             else "")
            for r in comparison_plots.with_rows(df, "config").itertuples()}
    assert set(titles) == want
    # the points sit on their row: y within the jitter of the row's tick
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    for coll in ax.collections:
        tips = fig._versemi_tips.get(coll.get_gid())
        if tips:
            for (x, y), tip in zip(coll.get_offsets(), tips):
                assert abs(y - rows.index(tip.split(" | ")[1])) <= comparison_plots.JITTER + 1e-9
                assert x == pytest.approx(float(tip.split("Dice ")[1].split(" %")[0]), abs=0.051)
    abl = pd.concat([universal("VerSemi (full)", {"la": [0.8, 0.7]}), universal("w/o L_aux", {"la": [0.6, 0.7]})])
    titles = re.findall(r"<title>(.*?)</title>", hover_html(comparison_plots.plot_ablation(abl)).svg)
    assert sorted(t.split(" | ")[1] for t in titles) == ["VerSemi (full)"] * 2 + ["w/o L_aux"] * 2
    plt.close("all")
