import ipywidgets as W
import numpy as np

from versemi.widgets import live_explorer, render_slice_png, slice_indices, static_explorer


def _vol():
    img = np.random.default_rng(0).normal(size=(24, 20, 16)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[6:14, 5:12, 3:13] = 1
    return img, lab


def test_static_explorer_links_slider_and_prompts_in_the_browser():
    img, lab = _vol()
    preds = {1: lab, 3: np.zeros_like(lab), 5: lab}
    w = static_explorer(img, preds, lab, n_slices=5, title="case")
    head, buttons, slider, outer = w.children
    assert isinstance(outer, W.Stack) and len(outer.children) == 3
    assert all(isinstance(s, W.Stack) and len(s.children) == 5 for s in outer.children)
    links = [x for x in W.Widget.widgets.values() if isinstance(x, W.widget_link.Link)]
    assert any(ln.source == (slider, "value") and ln.target[0] is outer.children[0] for ln in links)
    assert any(ln.source == (buttons, "index") and ln.target == (outer, "selected_index") for ln in links)
    # images differ between slices and between prompts with different predictions
    pngs = [im.value for im in outer.children[0].children]
    assert len(set(pngs)) == 5 and pngs[0][:4] == b"\x89PNG"
    assert outer.children[0].children[2].value != outer.children[1].children[2].value


def test_live_explorer_runs_predict_once_per_case_and_prompt():
    img, lab = _vol()
    calls = []

    def predict(case, prompt):
        calls.append((case["name"], prompt))
        return (lab if prompt == 1 else np.zeros_like(lab)), lab.astype(np.float32)

    w = live_explorer({"pancreas": [{"name": "c1", "image": img, "label": lab, "task": 1}]}, predict)
    readout = w.children[-1]
    assert "Dice 1.000" in readout.value
    slider = w.children[2]
    slider.value = 3
    assert calls == [("c1", 1)]  # cached
    prompt = w.children[1].children[0]
    prompt.value = 3
    assert ("c1", 3) in calls and "no reference" in readout.value


def test_helpers():
    assert slice_indices(10, 20) == sorted(set(slice_indices(10, 20)))
    assert len(slice_indices(100, 9)) == 9
    img, lab = _vol()
    assert render_slice_png(img[..., 5], lab[..., 5]) != render_slice_png(img[..., 5])


def test_static_explorer_draws_each_prompts_own_truth():
    img, lab = _vol()
    other = np.zeros_like(lab)
    other[2:6, 2:6, 2:14] = 1
    preds = {1: np.zeros_like(lab), 2: np.zeros_like(lab)}
    # the same (empty) prediction under both prompts: only the green truth can make the images differ
    per_prompt = static_explorer(img, preds, labels={1: lab, 2: other}, n_slices=3).children[-1]
    assert per_prompt.children[0].children[1].value != per_prompt.children[1].children[1].value
    shared = static_explorer(img, preds, label=lab, n_slices=3).children[-1]
    no_truth = static_explorer(img, preds, labels={1: lab, 2: None}, n_slices=3).children[-1]
    # prompt 1 shows the same mask either way; prompt 2 with no known truth draws no contour
    assert per_prompt.children[0].children[1].value == shared.children[0].children[1].value
    assert no_truth.children[1].children[1].value != shared.children[1].children[1].value
