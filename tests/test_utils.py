"""Shared helpers (versemi/utils.py): device choice, seeding, atomic writes."""

import os

import numpy as np
import pytest
import torch

from versemi.utils import VersemiError, atomic_path, atomic_write_text, get_device, seed_everything


def test_device_choice():
    assert get_device("cpu").type == "cpu"
    assert get_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(VersemiError, match="no CUDA GPU is available"):
            get_device("cuda")


def test_seed_everything_repeats_every_generator():
    seed_everything(5)
    a = (np.random.rand(), torch.rand(1).item())
    seed_everything(5)
    assert (np.random.rand(), torch.rand(1).item()) == a


def test_atomic_path_publishes_on_success_only(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    mode = os.stat(target).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "hello" and sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]
