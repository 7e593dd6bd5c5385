"""versemi.companion.figures: the savers (atomic, MultiIndex flattening, returned path) and the shared
drawing primitives (overlay, best slice, loss curves, method figure)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from versemi.companion import figures as G
from versemi.model import VerSemiNet, count_parameters


# ---------------------------------------------------------------------------------------------- savers
def test_save_figure_writes_a_png_and_returns_the_path(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = G.save_figure(fig, tmp_path / "sub" / "dir" / "line.png")
    assert path == tmp_path / "sub" / "dir" / "line.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.fignum_exists(fig.number)  # left open for the notebook to show
    svg = G.save_figure(fig, tmp_path / "line.svg")
    assert b"<svg" in svg.read_bytes()[:400]
    plt.close(fig)


def test_save_figure_is_atomic(tmp_path):
    path = tmp_path / "fig.png"
    path.write_bytes(b"old")
    fig = plt.figure()

    def broken(*args, **kwargs):
        with open(args[0], "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    fig.savefig = broken
    with pytest.raises(RuntimeError):
        G.save_figure(fig, path)
    assert path.read_bytes() == b"old"           # never half-written
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]  # no temporary left behind
    plt.close(fig)


def test_save_table_flattens_multiindex_columns_and_is_atomic(tmp_path):
    df = pd.DataFrame([[1, 2.5, 3]], columns=pd.MultiIndex.from_tuples([("Dice", "mean"), ("Dice", "std"),
                                                                        ("n", "")]))
    path = G.save_table(df, tmp_path / "t" / "table.csv")
    assert path == tmp_path / "t" / "table.csv"
    back = pd.read_csv(path)
    assert list(back.columns) == ["Dice | mean", "Dice | std", "n"]
    assert back.iloc[0].tolist() == [1, 2.5, 3]
    assert list(df.columns) == [("Dice", "mean"), ("Dice", "std"), ("n", "")]  # the caller's frame unchanged
    indexed = G.save_table(pd.DataFrame({"a": [1.23456]}, index=pd.Index(["x"], name="k")), tmp_path / "i.csv",
                           index=True, float_format="%.2f")
    assert indexed.read_text().splitlines() == ["k,a", "x,1.23"]
    assert G.save_table(pd.DataFrame({"a": [1]}), tmp_path / "n.csv").read_text().splitlines() == ["a", "1"]

    class Broken(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise OSError("disk full")

    (tmp_path / "n.csv").write_text("old")
    with pytest.raises(OSError):
        G.save_table(Broken({"a": [1]}), tmp_path / "n.csv")
    assert (tmp_path / "n.csv").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.csv", "n.csv", "t"]


# ---------------------------------------------------------------------------------------------- primitives
def test_best_slice_picks_the_largest_area_and_the_middle_when_empty():
    m = np.zeros((8, 8, 10), bool)
    m[2:4, 2:4, 3] = True
    m[1:6, 1:6, 7] = True
    assert G.best_slice(m) == 7
    assert G.best_slice(np.zeros((4, 4, 9), bool)) == 4


def test_overlay_draws_contours_only_for_non_empty_masks():
    img = np.random.default_rng(0).normal(size=(16, 12))
    lab = np.zeros((16, 12), bool)
    lab[4:10, 3:8] = True
    fig, (a, b, c) = plt.subplots(1, 3)
    G.overlay(a, img, lab, lab, title="both")
    G.overlay(b, img, np.zeros_like(lab), None)
    G.overlay(c, img)
    assert a.get_title() == "both" and not a.axison
    assert len(a.images) == 1 and a.images[0].get_array().shape == (12, 16)  # drawn transposed
    n_contours = [len(ax.collections) for ax in (a, b, c)]
    assert n_contours[0] == 2 and n_contours[1] == n_contours[2] == 0
    plt.close(fig)


def test_loss_curves_draw_each_term_and_stage_boundaries():
    steps = np.arange(20)
    metrics = pd.DataFrame({"step": steps, "stage": [1] * 10 + [2] * 10, "lr": 1e-3, "seconds": 0.1,
                            "loss": np.linspace(2, 1, 20), "sup": np.linspace(1, 0.5, 20), "unsup": [np.nan] * 10 + [0.3] * 10})
    ax = G.loss_curves(metrics, smooth=5)
    labels = [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    assert labels == ["loss", "sup", "unsup"]  # lr, seconds, step, stage are not losses
    vlines = [ln for ln in ax.get_lines() if ln.get_label().startswith("_")]
    assert len(vlines) == 1 and vlines[0].get_xdata()[0] == 10  # stage 2 starts at step 10
    loss = next(ln for ln in ax.get_lines() if ln.get_label() == "loss")
    assert loss.get_ydata()[4] == pytest.approx(np.linspace(2, 1, 20)[:5].mean())  # rolling mean
    ax2 = G.loss_curves(metrics, terms=["sup", "missing"], smooth=1)
    assert [ln.get_label() for ln in ax2.get_lines() if not ln.get_label().startswith("_")] == ["sup"]
    plt.close("all")


def test_method_figure_states_the_parameter_count_and_saves(tmp_path):
    fig = G.method_figure(tmp_path / "method.png")
    n = count_parameters(VerSemiNet(n_filters=16, num_tasks=4))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(f"{n:,} parameters" in t for t in texts)
    assert any("P_agg = max_k" in t for t in texts)
    assert (tmp_path / "method.png").read_bytes()[:4] == b"\x89PNG"
    plt.close(fig)


def test_glued_text_is_shown_bare_and_numbers_keep_their_type(monkeypatch):
    import myst_nb
    from IPython.core.formatters import format_display_data

    from versemi.companion.figures import Prose, glue_value

    assert format_display_data(Prose("90.6"))[0]["text/plain"] == "90.6"   # a str would show '90.6'
    got = {}
    monkeypatch.setattr(myst_nb, "glue", lambda key, value, display=True: got.update({key: (value, display)}))
    glue_value("a", "reaches 90.6")
    glue_value("b", 0.25)
    assert isinstance(got["a"][0], Prose) and got["a"][1] is False
    assert got["b"] == (0.25, False) and type(got["b"][0]) is float
