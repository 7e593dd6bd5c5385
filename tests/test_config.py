"""The one profile table and RunConfig: defaults per profile, per-method settings, validation, names
and the identity hash that keys the run cache."""

import dataclasses

import pytest

from versemi.config import (
    PROFILES,
    PhantomSpec,
    RunConfig,
    data_note,
    get_profile,
    is_phantom,
    make_config,
    profile_names,
)
from versemi.utils import VersemiError


def test_every_profile_is_complete_and_its_train_defaults_are_config_fields():
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for name, p in PROFILES.items():
        assert p.name == name and p.data in ("phantom", "real") and p.note.startswith(name)
        assert set(p.train) <= fields and set(p.train.get("patch", ())) and p.prepare.min_size >= 32
        assert (p.phantoms is not None) == p.is_phantom
    from versemi.methods import get_method_class, method_names
    for m in method_names():   # each method's released settings and defaults are config fields
        cls = get_method_class(m)
        assert set(cls.paper_settings) <= fields and set(cls.config_defaults) <= fields, m
    assert [n for n, p in PROFILES.items() if p.released_settings] == ["paper"]
    assert profile_names("phantom") == ("smoke", "demo") and "la-real" not in profile_names("notebooks")
    assert set(profile_names()) == {"smoke", "demo", "la-real", "paper"}
    assert is_phantom("demo") and not is_phantom("paper") and data_note("la-real").startswith("la-real profile")
    assert isinstance(get_profile("smoke").phantoms, PhantomSpec)
    with pytest.raises(VersemiError, match="unknown profile 'huge'"):
        get_profile("huge")


def test_make_config_layers_profile_method_settings_and_overrides():
    c = make_config("uamt", "demo", datasets=("la",))
    assert (c.n_filters, c.steps, c.dropout, c.head, c.options) == (8, get_profile("demo").train["steps"], 0.5, "none", {"mc_passes": 4})
    p = make_config("uamt", "paper")
    assert (p.optimizer, p.lr, p.batch_size, p.steps, p.options) == ("sgd", 0.01, 2, 6000, {})
    v = make_config("versemi", "paper", datasets=("la",), steps=10, options={"laux": False})
    assert (v.head, v.steps, v.optimizer, v.options) == ("dynamic", 10, "adam", {"laux": False})
    with pytest.raises(VersemiError, match="unknown config key"):
        make_config("versemi", "demo", stepz=3)
    # BCP pre-trains half of a demo run (issue 13); the paper profile keeps the released 2,000 of 17,000
    from versemi.methods import get_method

    b = make_config("bcp", "demo", datasets=("lung",))
    assert b.options == {"pretrain_fraction": 0.5}
    assert [n for _, n in get_method("bcp", b.options).stages(b.steps)] == [b.steps // 2, b.steps - b.steps // 2]
    bp = make_config("bcp", "paper")
    assert bp.options == {} and get_method("bcp", bp.options).stages(bp.steps)[0][1] == round(bp.steps * 2000 / 17000)


def test_names_come_from_fields():
    assert make_config("sup_only", "demo", datasets=("la",), ratio=100).label() == "Fully supervised (la) 100%"
    assert make_config("bcp", "demo").label() == "Uni-BCP 10%"
    assert make_config("versemi", "demo", ratio=20).label() == "VerSemi 20%"
    c = make_config("uamt", "demo", datasets=("lung",))
    assert c.label() == "UA-MT (lung) 10%" and c.label(with_dataset=False) == "UA-MT 10%"
    assert c.row_name() == "UA-MT" and c.task_specific and not c.fully_supervised and c.split_ratio == 10
    full = make_config("sup_only", "demo", ratio=100)
    assert full.fully_supervised and full.split_ratio == 10


def test_identity_is_stable_and_ignores_checkpoint_frequency():
    c = make_config("versemi", "demo")
    # pinned: a change here invalidates every user's run cache (it changed with the demo schedule of issue 13)
    assert c.identity() == "ab2a7655f0ca"
    assert dataclasses.replace(c, ckpt_every=7).identity() == c.identity()
    assert dataclasses.replace(c, checkpoint_activations=True).identity() == c.identity()
    assert dataclasses.replace(c, seed=1).identity() != c.identity()
    assert c.identity("abc") != c.identity("abd")


def test_yaml_round_trip_and_errors(tmp_path):
    c = make_config("versemi", "smoke", options={"unlab_ratio_range": [0.2, 0.5]})
    p = tmp_path / "c.yaml"
    p.write_text(c.to_yaml())
    assert RunConfig.from_yaml(p) == c and c.options["unlab_ratio_range"] == (0.2, 0.5)
    p.write_text("- a list")
    with pytest.raises(VersemiError, match="expected a mapping"):
        RunConfig.from_yaml(p)
    for bad, msg in [(dict(ratio=50), "label ratio"), (dict(head="x"), "head must be"),
                     (dict(patch=(20, 32, 32)), "patch must be"), (dict(selection="best"), "selection must be"),
                     (dict(datasets=("liver",)), "unknown dataset"), (dict(optimizer="rmsprop"), "optimizer must be")]:
        with pytest.raises(VersemiError, match=msg):
            make_config("versemi", "smoke", **bad)


def test_late_fields_at_their_default_keep_the_run_identity_and_paper_la_runs_take_the_released_patch():
    cfg = make_config("versemi", "demo")
    d = cfg.to_dict()
    d.pop("augment")                       # a config written before the field existed
    old = RunConfig.from_dict(d)
    assert old.identity("x") == cfg.identity("x")
    assert make_config("versemi", "demo", augment="rotflip").identity("x") != cfg.identity("x")
    la = make_config("uamt", "paper", datasets=("la",))
    assert la.patch == la.eval_patch == (112, 112, 80) and la.augment == "rotflip" and la.dropout == 0.5
    assert make_config("uamt", "paper").patch == (96, 96, 96)            # the Uni- variant keeps 96^3
    assert make_config("uamt", "demo", datasets=("la",)).augment == "none"  # CPU profiles: no augmentation
    with pytest.raises(VersemiError, match="augment"):
        make_config("versemi", "demo", augment="mixup")
