"""versemi.companion.figures: the savers (atomic, MultiIndex flattening, returned path) and the shared
drawing primitives (overlay, best slice, three planes, loss curves with validation points, points that name
themselves on hover, method figure)."""

import re
import xml.etree.ElementTree as ET

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


def test_loss_curves_mark_the_validation_points_and_the_selected_step():
    metrics = pd.DataFrame({"step": np.arange(12), "stage": 1, "loss": np.linspace(2, 1, 12)})
    val = pd.DataFrame({"step": [3, 7, 11, 3, 7, 11, 7], "dataset": ["la"] * 3 + ["lung"] * 3 + ["la"],
                        "dice": [0.2, 0.5, 0.6, 0.1, 0.3, 0.4, 0.55], "model": [None] * 6 + ["ema"]})
    ax = G.loss_curves(metrics, smooth=1, val=val, selected_step=7)
    right = [a for a in ax.figure.axes if a is not ax]
    assert len(right) == 1 and right[0].get_ylabel() == "validation Dice"
    pts = {c.get_label(): c.get_offsets() for c in right[0].collections}
    assert sorted(pts) == ["val la", "val la (EMA)", "val lung"]
    assert pts["val la"].tolist() == [[3, 0.2], [7, 0.5], [11, 0.6]]      # one marker per validation
    assert pts["val lung"][:, 1].tolist() == [0.1, 0.3, 0.4] and pts["val la (EMA)"].tolist() == [[7, 0.55]]
    sel = [ln for ln in right[0].get_lines() if ln.get_label().startswith("selected")]
    assert len(sel) == 1 and sel[0].get_xdata()[0] == 7
    assert len(G.loss_curves(metrics, smooth=1).figure.axes) == 1         # no val: no second axis
    plt.close("all")


def test_centre_and_dice_text():
    from versemi.companion.fidelity import dice_text

    m = np.zeros((10, 12, 8), bool)
    m[2:5, 6:9, 1:4] = True          # x slices 2..4, y 6..8, z 1..3: all equally large -> the middle ones
    m[3, 7, 6] = True                # one more voxel in z = 6 and on x = 3, y = 7
    assert G.centre(m, m.shape) == (3, 7, 2)
    assert G.centre(None, (10, 12, 8)) == (5, 6, 4) == G.centre(np.zeros_like(m), m.shape)
    pred = np.zeros_like(m)
    pred[2:5, 6:9, 1:3] = True       # 18 of the 28 true voxels
    assert dice_text(pred, m) == f"Dice {2 * 18 / (18 + 28):.2f}"
    assert dice_text(np.zeros_like(m), m) == "Dice 0.00"       # an empty prediction scores 0
    assert dice_text(pred, np.zeros_like(m)) == "" == dice_text(pred, None)


def test_three_planes_cut_through_the_target_and_give_the_dice():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(20, 24, 16))
    lab = np.zeros(img.shape, bool)
    lab[4:9, 10:15, 5:8] = True
    pred = np.roll(lab, 1, axis=0)
    from versemi.companion.fidelity import dice_text

    fig = G.three_planes(img, lab, pred, title="case A", score=dice_text(pred, lab))
    a, c, s = fig.axes
    assert a.get_title() == "axial 6" and s.get_title() == "sagittal 6"
    want = 2 * np.count_nonzero(lab & pred) / (2 * np.count_nonzero(lab))
    assert c.get_title() == f"case A | Dice {want:.2f}\ncoronal 12"
    assert a.images[0].get_array().shape == (24, 20) and c.images[0].get_array().shape == (16, 20)
    assert s.images[0].get_array().shape == (16, 24)
    assert all(len(ax.collections) == 2 for ax in fig.axes)        # truth and prediction contours
    np.testing.assert_array_equal(a.images[0].get_array(), img[:, :, 6].T)
    _, axes = plt.subplots(2, 3)
    assert G.three_planes(img, lab, None, axes=axes[1], at=(1, 2, 3)) is axes[1][0].figure
    assert [ax.get_title() for ax in axes[1]] == ["axial 3", "coronal 2", "sagittal 1"]   # no prediction: no Dice
    plt.close("all")


def _svg_titles(svg: str) -> list[str]:
    return re.findall(r"<title>(.*?)</title>", svg)


def test_hover_html_gives_every_point_its_own_title_in_order():
    fig, (a, b) = plt.subplots(1, 2)
    G.tip_points(a, [1, 2, 3], [3, 1, 2], ["p1", "p2", "p3"], color="k")
    G.tip_points(b, np.arange(40), np.arange(40) % 7, [f"q{i}" for i in range(40)], marker="x")
    h = G.hover_html(fig)
    assert _svg_titles(h.svg) == ["p1", "p2", "p3"] + [f"q{i}" for i in range(40)]
    root = ET.fromstring(h.svg)                                  # well-formed XML, inline-able
    ns = "{http://www.w3.org/2000/svg}"
    groups = [g for g in root.iter(f"{ns}g") if g.get("class") == "versemi-tip"]
    assert len(groups) == 43
    # each tooltip wraps exactly one mark, and the first three marks sit where the points were drawn (x order)
    marks = [next(e for e in g if e.tag != f"{ns}title") for g in groups[:3]]
    xs = [float(m.get("x")) for m in marks if m.get("x") is not None]
    assert len(xs) == 3 and xs == sorted(xs)
    ids = [e.get("id") for e in root.iter() if e.get("id")]
    refs = re.findall(r'(?:url\(#|href="#)([^)"]+)', h.svg)
    assert refs and set(refs) <= set(ids)                           # every reference resolves after renaming
    assert "<div" in h._repr_html_() and h.svg in h._repr_html_()
    plt.close(fig)


def test_hover_html_ids_are_unique_per_figure_and_the_png_is_unchanged(tmp_path):
    def draw(tips: bool):
        fig, ax = plt.subplots(figsize=(3, 2))
        if tips:
            G.tip_points(ax, [0, 1], [1, 0], ["a", "b"], color="k")
        else:
            ax.scatter([0, 1], [1, 0], color="k")
        return fig

    f1, f2 = draw(True), draw(True)
    f2.axes[0].set_title("other")
    ids = [{e.get("id") for e in ET.fromstring(G.hover_html(f).svg).iter() if e.get("id")} for f in (f1, f2)]
    assert not ids[0] & ids[1]                                      # two figures can share one page
    G.save_figure(f1, tmp_path / "tips.png")
    G.save_figure(draw(False), tmp_path / "plain.png")
    assert (tmp_path / "tips.png").read_bytes() == (tmp_path / "plain.png").read_bytes()
    G.hover_html(f1, close=True)
    assert not plt.fignum_exists(f1.number)
    plt.close("all")


def test_tip_points_wants_one_tip_per_point():
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="3 x, 3 y and 2 tips"):
        G.tip_points(ax, [1, 2, 3], [1, 2, 3], ["a", "b"])
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
