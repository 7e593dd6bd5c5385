"""Checkpoint files: atomic writes, the fallback to prev.pt, the old one-network layout."""

import pytest
import torch

from versemi.checkpoints import LAST, PREV, load_checkpoint, rotate, save_checkpoint


def test_corrupt_last_falls_back_to_previous(tmp_path):
    save_checkpoint(tmp_path / LAST, {"nets": {"net": {}}, "optimizers": {}, "step": 2})
    rotate(tmp_path)
    save_checkpoint(tmp_path / LAST, {"nets": {"net": {}}, "optimizers": {}, "step": 3})
    assert load_checkpoint(tmp_path)["step"] == 3 and (tmp_path / PREV).is_file()
    (tmp_path / LAST).write_bytes(b"\x00garbage")
    with pytest.warns(UserWarning, match=r"last.pt: unreadable checkpoint"):
        assert load_checkpoint(tmp_path)["step"] == 2
    assert load_checkpoint(tmp_path / "nothing") is None


def test_a_failed_write_leaves_no_file(tmp_path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path / LAST, {"x": Boom()})
    assert list(tmp_path.iterdir()) == []


def test_one_network_checkpoints_are_upgraded(tmp_path):
    w = {"w": torch.ones(2)}
    save_checkpoint(tmp_path / LAST, {"net": w, "opt": {"state": {}}, "teacher": w, "step": 5})
    st = load_checkpoint(tmp_path)
    assert set(st["nets"]) == {"net", "teacher"} and st["optimizers"] == {"net": {"state": {}}} and st["step"] == 5
