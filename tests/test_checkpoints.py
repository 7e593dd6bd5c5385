"""Checkpoint files: atomic writes, the fallback to prev.pt, the old one-network layout."""

import errno

import pytest
import torch

from versemi import checkpoints as C
from versemi.checkpoints import LAST, PREV, load_checkpoint, rotate, save_checkpoint
from versemi.utils import VersemiError


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

    with pytest.raises(VersemiError, match=r"last.pt: cannot write the checkpoint \(RuntimeError: boom\)"):
        save_checkpoint(tmp_path / LAST, {"x": Boom()})
    assert list(tmp_path.iterdir()) == []


def test_one_network_checkpoints_are_upgraded(tmp_path):
    w = {"w": torch.ones(2)}
    save_checkpoint(tmp_path / LAST, {"net": w, "opt": {"state": {}}, "teacher": w, "step": 5})
    st = load_checkpoint(tmp_path)
    assert set(st["nets"]) == {"net", "teacher"} and st["optimizers"] == {"net": {"state": {}}} and st["step"] == 5


def test_disk_full_while_checkpointing_keeps_the_current_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / LAST, {"nets": {"net": {}}, "optimizers": {}, "step": 4}, keep_previous=True)

    def full(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(C.torch, "save", full)
    with pytest.raises(VersemiError, match=r"last.pt: cannot write the checkpoint \(OSError: .*No space left"):
        save_checkpoint(tmp_path / LAST, {"nets": {"net": {}}, "optimizers": {}, "step": 6}, keep_previous=True)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["step"] == 4 and not (tmp_path / PREV).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST]
