"""Bad input through the command line: one clear line on stderr, exit code 2, no traceback, nothing
half-written. (Readers, prepare and the trainer have their own bad-input tests.)"""

import errno
import subprocess
import sys

import pytest

from versemi import cli
from versemi.cli import main, parse_overrides
from versemi.utils import VersemiError

CASES = [
    (["train", "--method", "fixmatch"], "unknown method 'fixmatch'"),
    (["train", "--profile", "huge"], "unknown profile 'huge'"),
    (["train", "--ratio", "50"], "label ratio must be 10, 20 or 100"),
    (["train", "--set", "patch=[20,20,20]"], "patch must be three sizes divisible by 16"),
    (["train", "--set", "lr=-1"], "lr must be positive"),
    (["train", "--set", "stepz=3"], "unknown config key(s): stepz"),
    (["train", "--set", "selection=best"], "selection must be val, last or test"),
    (["train", "--datasets", "liver"], "unknown dataset(s) ['liver']"),
    (["train", "--set", "batch_size=1"], "batch_size >= 2"),
    (["train", "--profile", "smoke", "--data", "{tmp}/none"], "none: no manifest.json; run `versemi prepare` first"),
    (["train", "--config", "{tmp}/missing.yaml"], "missing.yaml: config file not found"),
    (["evaluate", "{tmp}/norun", "--data", "{tmp}"], "norun/config.yaml: config file not found"),
    (["prepare", "--src", "{tmp}/nosrc", "--out", "{tmp}/out"], "nosrc: source folder does not exist"),
    (["run", "nope"], "unknown notebook group 'nope'"),
    (["train", "--set", "steps"], "expected KEY=VALUE"),
]


@pytest.mark.parametrize("argv,message", CASES)
def test_user_errors_exit_2_with_one_line(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.rglob("*.tmp"))


def test_forced_cuda_without_gpu(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["train", "--device", "cuda", "--profile", "smoke"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_unwritable_output_and_disk_full(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc = main(["phantoms", "--out", str(ro / "x"), "--profile", "smoke", "--dataset", "la"])
    finally:
        ro.chmod(0o700)
    import os

    if os.geteuid() == 0:  # root may write anyway: then it must have succeeded
        assert rc == 0
    else:
        assert rc == 2 and "Permission denied" in capsys.readouterr().err

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out"))

    monkeypatch.setattr(cli, "generate", full)   # the command's generator
    assert main(["phantoms", "--out", str(tmp_path / "out"), "--profile", "smoke"]) == 2
    assert "No space left on device" in capsys.readouterr().err


def test_overrides_parse_yaml_values_and_nesting():
    assert parse_overrides(["steps=5", "options.laux=false", "patch=[32, 32, 48]"]) == {
        "steps": 5, "options": {"laux": False}, "patch": [32, 32, 48]}
    with pytest.raises(VersemiError):
        parse_overrides(["noequals"])


def test_console_script_help_and_exit_codes():
    res = subprocess.run([sys.executable, "-m", "versemi.cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "phantoms" in res.stdout and "prepare" in res.stdout
    res = subprocess.run([sys.executable, "-m", "versemi.cli", "train", "--method", "x"], capture_output=True,
                         text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_prepare_an_external_test_set_like_the_training_data(smoke_root, tmp_path, capsys):
    from versemi.data.external import load_external_cases
    from versemi.data.phantoms.unseen import generate_unseen

    raw = generate_unseen(tmp_path / "raw", profile="smoke", seed=2333)
    training = smoke_root / "data" / "smoke" / "prepared"
    out = tmp_path / "btcv"
    assert main(["prepare", "--external", "btcv", "--src", str(raw), "--out", str(out)]) == 2   # needs --training
    assert "--training" in capsys.readouterr().err
    assert main(["prepare", "--external", "btcv", "--src", str(raw), "--out", str(out), "--training", str(training),
                 "--verify"]) == 0
    cases = load_external_cases(out)
    assert cases and {c["task"] for c in cases} == {3} and {c["dataset"] for c in cases} == {"btcv"}
