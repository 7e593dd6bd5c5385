"""The unseen-site page pieces: the displayed drop table and its sentence."""

import pandas as pd

from versemi.companion.generalisation import drop_display, drop_sentence, unseen_site_results


def test_drop_display_and_sentence():
    t = pd.DataFrame({"row": ["VerSemi", "BCP", "Fully supervised"], "method": ["v", "b", "f"],
                      "msd": [85.0, 84.0, 90.0], "unseen": [84.5, 80.0, 89.0], "drop": [0.5, 4.0, 1.0],
                      "drop_lo": [-0.5, 3.0, 0.0], "drop_hi": [1.5, 5.0, 2.0], "p_drop": [0.4, 0.0004, 0.1],
                      "n_seeds": [3, 3, 3], "n_msd": [33, 33, 33], "n_unseen": [90, 90, 90]})
    shown = drop_display(t)
    assert shown["drop [95% CI]"].tolist()[1] == "4.00 [3.00, 5.00]" and shown["p (no drop)"][1] == "< 0.001"
    s = drop_sentence(t)
    assert "VerSemi's Dice drops by 0.50 points" in s and "the other 1 model(s) by 4.00" in s
    assert drop_display(t.iloc[:0]).empty and drop_sentence(t.iloc[:0]).startswith("No model")


def test_a_book_build_never_scores_the_unseen_site_live(tmp_path):
    assert unseen_site_results("demo", "auto", out=tmp_path / "none") is None
