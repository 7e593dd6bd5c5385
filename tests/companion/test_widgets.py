"""versemi.companion.widgets: the static (jslinked) and live explorers and the explorer data."""

import ipywidgets as W
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from versemi.companion import widgets as X
from versemi.companion.widgets import live_explorer, render_slice_png, slice_indices, static_explorer
from versemi.config import make_config
from versemi.data.registry import DATASETS
from versemi.data.truth import prompt_truth
from versemi.evaluate import sliding_window_predict
from versemi.model import VerSemiNet


def _vol():
    img = np.random.default_rng(0).normal(size=(24, 20, 16)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[6:14, 5:12, 3:13] = 1
    return img, lab


def test_static_explorer_links_sliders_planes_and_prompts_in_the_browser():
    img, lab = _vol()
    preds = {1: lab, 3: np.zeros_like(lab), 5: lab}
    w = static_explorer(img, preds, lab, n_slices=5, title="case")
    head, buttons, sliders, outer = w.children
    assert [s.description for s in sliders.children] == ["axial", "coronal", "sagittal"]
    assert isinstance(outer, W.Stack) and len(outer.children) == 3
    for per_prompt in outer.children:   # each prompt: the three planes side by side, 5 slices each
        assert len(per_prompt.children) == 3
        assert all(isinstance(s, W.Stack) and len(s.children) == 5 for s in per_prompt.children)
    links = [x for x in W.Widget.widgets.values() if isinstance(x, W.widget_link.Link)]
    for k, slider in enumerate(sliders.children):
        assert any(ln.source == (slider, "value") and ln.target[0] is outer.children[0].children[k] for ln in links)
    assert any(ln.source == (buttons, "index") and ln.target == (outer, "selected_index") for ln in links)
    # images differ between slices, between planes and between prompts with different predictions
    axial = [im.value for im in outer.children[0].children[0].children]
    assert len(set(axial)) == 5 and axial[0][:4] == b"\x89PNG"
    views = outer.children[0].children
    assert len({views[k].children[2].value for k in range(3)}) == 3
    assert views[0].children[2].value != outer.children[1].children[0].children[2].value


def test_cut_takes_each_plane_of_an_x_y_z_volume():
    img, _ = _vol()
    assert X.cut(img, "axial", 3).shape == (24, 20) and np.array_equal(X.cut(img, "axial", 3), img[:, :, 3])
    assert np.array_equal(X.cut(img, "coronal", 4), img[:, 4, :]) and np.array_equal(X.cut(img, "sagittal", 5), img[5])


def test_live_explorer_runs_predict_once_per_case_and_prompt():
    img, lab = _vol()
    calls = []

    def predict(case, prompt):
        calls.append((case["name"], prompt))
        return (lab if prompt == 1 else np.zeros_like(lab)), lab.astype(np.float32)

    w = live_explorer({"pancreas": [{"name": "c1", "image": img, "label": lab, "task": 1}]}, predict)
    readout, image = w.children[-1], w.children[-2]
    assert "Dice 1.000" in readout.value
    plane, slider = w.children[2], w.children[3]
    slider.value = 3
    axial = image.value
    plane.value = "sagittal"
    assert image.value != axial and slider.max == 23
    assert calls == [("c1", 1)]  # cached
    prompt = w.children[1].children[0]
    prompt.value = 3
    assert ("c1", 3) in calls and "no reference" in readout.value


def test_live_explorer_parts_carry_stable_classes_and_the_readout_follows_the_slice():
    img, lab = _vol()
    other = {"name": "c2", "image": img[::-1].copy(), "label": lab[::-1].copy(), "task": 1}
    cases = {"pancreas": [{"name": "c1", "image": img, "label": lab, "task": 1}, other]}
    w = live_explorer(cases, lambda case, prompt: (case["label"], case["label"].astype(np.float32)))
    (ds, case), (prompt, layer) = w.children[0].children, w.children[1].children
    plane, z, image, readout = w.children[2:]
    assert X.LIVE_CLASSES["explorer"] in w._dom_classes
    for role, part in (("dataset", ds), ("case", case), ("prompt", prompt), ("layer", layer), ("plane", plane),
                       ("slice", z), ("image", image), ("readout", readout)):
        assert part._dom_classes == (X.LIVE_CLASSES[role],), role
    assert len(set(X.LIVE_CLASSES.values())) == len(X.LIVE_CLASSES)
    # volume metrics first, then the shown slice: z = 8 cuts the label (z 3..12), z = 1 misses it
    assert z.value == 8 and readout.value.startswith("Dice 1.000")
    assert readout.value.endswith("<br>c1 under prompt pancreas, axial slice 8: 56 voxels predicted, 56 true, "
                                  "slice Dice 1.000")
    before = (image.value, readout.value)
    z.value = 1
    assert image.value != before[0] and readout.value.endswith("axial slice 1: 0 voxels predicted, 0 true, slice Dice 1.000")
    before = (image.value, readout.value)
    case.value = "c2"
    assert image.value != before[0] and "<br>c2 under prompt pancreas, axial slice 1:" in readout.value
    assert X.slice_readout(lab[..., 8], None, "axial", 8) == "axial slice 8: 56 voxels predicted"
    assert X.slice_readout(lab[..., 8], np.zeros_like(lab[..., 8]), "coronal", 2).endswith("0 true, slice Dice 0.000")


def test_helpers():
    assert slice_indices(10, 20) == sorted(set(slice_indices(10, 20)))
    assert len(slice_indices(100, 9)) == 9
    img, lab = _vol()
    assert render_slice_png(img[..., 5], lab[..., 5]) != render_slice_png(img[..., 5])
    assert X.PROMPTS == (1, 2, 3, 4, 5)
    assert X.PROMPT_NAMES == {1: "pancreas", 2: "la", 3: "spleen", 4: "lung", 5: "synthetic (Task#5)"}


def test_static_explorer_draws_each_prompts_own_truth():
    img, lab = _vol()
    other = np.zeros_like(lab)
    other[2:6, 2:6, 2:14] = 1
    preds = {1: np.zeros_like(lab), 2: np.zeros_like(lab)}
    # the same (empty) prediction under both prompts: only the green truth can make the images differ
    per_prompt = static_explorer(img, preds, labels={1: lab, 2: other}, n_slices=3).children[-1]
    axial = lambda explorer, prompt: explorer.children[prompt].children[0].children[1].value  # noqa: E731
    assert axial(per_prompt, 0) != axial(per_prompt, 1)
    shared = static_explorer(img, preds, label=lab, n_slices=3).children[-1]
    no_truth = static_explorer(img, preds, labels={1: lab, 2: None}, n_slices=3).children[-1]
    # prompt 1 shows the same mask either way; prompt 2 with no known truth draws no contour
    assert axial(per_prompt, 0) == axial(shared, 0)
    assert axial(no_truth, 1) != axial(shared, 1)


# ------------------------------------------------------------------------------------ explorer data
@pytest.fixture(scope="module")
def prepared(smoke_root):
    return smoke_root / "data" / "smoke" / "prepared"


def test_prompt_truth_from_hidden_labels(prepared):
    cases = X.explorer_cases(prepared, split="test")
    pan = cases["pancreas"][0]
    legend = pan["hidden_legend"]
    own = prompt_truth(pan, 1)
    assert np.array_equal(own.astype(bool), pan["label"].astype(bool))  # exposed label == hidden target
    spleen = prompt_truth(pan, 3)
    assert spleen.any() and np.array_equal(spleen.astype(bool), pan["hidden_label"] == legend["spleen"])
    assert not prompt_truth(pan, 2).any()  # no left atrium in an abdominal scan: "find nothing"
    union = prompt_truth(pan, 5).astype(bool)
    assert np.array_equal(union, own.astype(bool) | spleen.astype(bool))
    real = {k: v for k, v in pan.items() if k not in ("hidden_label", "hidden_legend")}
    assert prompt_truth(real, 3) is None and np.array_equal(prompt_truth(real, 1), pan["label"] == 1)
    scores = X.prompt_scores(pan, {1: own, 2: np.ones_like(own), 3: np.zeros_like(own)}).set_index("prompt")
    assert scores.loc[1, "dice"] == 1.0 and scores.loc[3, "dice"] == 0.0
    assert np.isnan(scores.loc[2, "dice"]) and scores.loc[2, "predicted voxels"] == own.size
    # prompt 5 follows the run's task prompts: a pancreas-only run asks for the own target alone
    five = {5: own}
    assert X.prompt_scores(pan, five).loc[0, "dice"] < 1.0
    assert X.prompt_scores(pan, five, tasks=(1,)).loc[0, "dice"] == 1.0


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return VerSemiNet(n_filters=4).eval()


@pytest.mark.parametrize("datasets, tasks", [(("pancreas", "la", "spleen", "lung"), (1, 2, 3, 4)),
                                             (("pancreas",), (1,))])
def test_explorer_predictions_and_their_views(prepared, net, monkeypatch, datasets, tasks):
    cfg = make_config("versemi" if len(datasets) > 1 else "sup_only", "smoke", datasets=datasets)
    monkeypatch.setattr(X, "load_run_net", lambda run_dir, device=None: (net, cfg))
    items = X.explorer_predictions("unused", prepared)
    assert [it["case"]["dataset"] for it in items] == ["pancreas", "la", "spleen", "lung"]
    pan = items[0]
    assert pan["tasks"] == tasks and sorted(pan["preds"]) == [1, 2, 3, 4, 5]
    assert pan["probs"][1].dtype == np.float32 and pan["probs"][1].shape == pan["case"]["image"].shape
    five = pan["scores"].set_index("prompt").loc[5]
    assert five["truth voxels"] == int(prompt_truth(pan["case"], 5, tasks).sum())
    own_only = int(pan["case"]["label"].sum())
    assert (five["truth voxels"] == own_only) == (tasks == (1,))  # the spleen counts in the unified run
    # one backbone pass per window serves every prompt: the same maps as prompt by prompt
    lab, _ = sliding_window_predict(net, pan["case"]["image"], 3, patch_size=cfg.eval_patch, stride=cfg.eval_stride)
    assert np.array_equal(lab, pan["preds"][3])
    tab = X.static_explorers(items, n_slices=2, caption="smoke")
    assert len(tab.children) == 4 and tab.titles == ("pancreas", "la", "spleen", "lung")
    fig = X.plot_prompt_grid(items, title="grid")
    assert len(fig.axes) == 4 * 5
    planes = X.plot_planes(items, title="planes")
    assert len(planes.axes) == 4 * 3
    for k, it in enumerate(items):   # each row: the case under its own prompt, its volume Dice in the title
        c = it["case"]
        truth = prompt_truth(c, int(c["task"]), it["tasks"])
        dice = 2 * np.count_nonzero(truth & (it["preds"][int(c["task"])] > 0)) / (
            np.count_nonzero(truth) + np.count_nonzero(it["preds"][int(c["task"])]))
        assert planes.axes[3 * k + 1].get_title().startswith(f"{DATASETS[c['dataset']].short_title}: {c['name']}")
        assert f"Dice {dice:.2f}" in planes.axes[3 * k + 1].get_title()
        assert [ax.get_title().split("\n")[-1].split()[0] for ax in planes.axes[3 * k:3 * k + 3]] == [
            "axial", "coronal", "sagittal"]
    plt.close("all")
    live = X.live_explorer_for_run("unused", prepared, per_dataset=1)
    (prompt, _layer), readout = live.children[1].children, live.children[-1]
    prompt.value = 5
    assert readout.value.startswith("Dice")
