"""One writer per folder: a second process waits (naming the holder) or, without waiting, fails with
exit code 2; a lock left by a dead holder is taken over with a warning; a clean exit leaves nothing to
take over."""

import json
import subprocess
import sys
import time
import warnings

import pytest

from tests.companion.book_fixtures import example_notebook
from versemi.cli import main
from versemi.companion.notebooks import execute_notebooks
from versemi.locks import LockBusy, StaleLockWarning, folder_lock, holder_of, lock_path

HOLD = """
import sys, time
from versemi.locks import folder_lock
with folder_lock(sys.argv[1], "run"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(tmp_path, folder, seconds):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_no_wait_names_the_holder(tmp_path):
    folder = tmp_path / "run"
    p = _holder(tmp_path, folder, 30)
    try:
        with pytest.raises(LockBusy, match=rf"run: the run is being written by pid {p.pid} on "):
            with folder_lock(folder, "run", wait=False):
                pass
        assert holder_of(folder)["pid"] == p.pid
    finally:
        p.kill()
        p.wait()


def test_second_process_waits_then_gets_the_lock(tmp_path):
    folder = tmp_path / "run"
    p = _holder(tmp_path, folder, 1.5)
    said = []
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # the holder ended cleanly: no take-over warning
        with folder_lock(folder, "run", announce=said.append, poll_seconds=0.05):
            assert holder_of(folder)["pid"] != p.pid
    assert time.perf_counter() - t0 > 0.5 and p.wait() == 0
    assert len(said) == 1 and f"waiting for pid {p.pid}" in said[0]
    assert lock_path(folder).read_text() == ""   # a clean exit clears the holder


def test_a_dead_holder_is_taken_over_with_a_warning(tmp_path):
    folder = tmp_path / "run"
    p = _holder(tmp_path, folder, 60)
    p.kill()   # SIGKILL: the kernel drops the flock, the file still names the holder
    p.wait()
    assert holder_of(folder)["pid"] == p.pid
    with pytest.warns(StaleLockWarning, match=rf"taking over the lock of pid {p.pid} .* which is gone"):
        with folder_lock(folder, "run", wait=False):
            assert json.loads(lock_path(folder).read_text())["pid"] != p.pid


def test_every_writer_takes_its_folder_lock(tmp_path, capsys):
    """`versemi prepare --no-wait` on a folder being written, and executing notebooks into a folder being
    written, answer with the holder instead of writing alongside it."""
    (tmp_path / "src").mkdir()
    out = tmp_path / "prepared"
    p = _holder(tmp_path, out, 30)
    q = _holder(tmp_path, tmp_path / "executed", 30)
    try:
        assert main(["prepare", "--src", str(tmp_path / "src"), "--out", str(out), "--profile", "smoke",
                     "--no-wait"]) == 2
        assert f"the prepared data is being written by pid {p.pid}" in capsys.readouterr().err
        nb = example_notebook(tmp_path / "nb" / "00_example.ipynb")
        with pytest.raises(LockBusy, match=f"executed notebooks is being written by pid {q.pid}"):
            execute_notebooks([nb], "smoke", out_dir=tmp_path / "executed", root=tmp_path, wait=False, quiet=True)
        assert not list((tmp_path / "executed").glob("*.ipynb"))
    finally:
        for x in (p, q):
            x.kill()
            x.wait()
