"""The one provenance record: the code fingerprint ignores docstrings and comments but not code, the
git state of a tree, and the compatibility check of a table's runs."""

import subprocess
from pathlib import Path

import pytest

from versemi import provenance as P
from versemi.utils import VersemiError


def _fp(tmp_path, text):
    (tmp_path / "m.py").write_text(text)
    return P.code_fingerprint(entries=("m.py",), root=tmp_path)


def test_fingerprint_follows_code_not_docstrings_or_comments(tmp_path):
    base = _fp(tmp_path, '"""Doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 1\n')
    assert _fp(tmp_path, '"""Other words."""\n# a comment\n\ndef f(x):\n    return x + 1  # one\n') == base
    assert _fp(tmp_path, '"""Doc."""\n\ndef f(x):\n    return x + 2\n') != base
    assert len(P.code_fingerprint()) == 16 and P.code_fingerprint() == P.code_fingerprint()
    assert P.code_fingerprint({"a": 1}) != P.code_fingerprint({"a": 2}) != P.code_fingerprint()


def test_git_state_of_a_tree(tmp_path):
    assert P.git_state(tmp_path) == {"commit": None, "dirty": None}
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "f").write_text("1")
    run("add", "f")
    run("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x")
    st = P.git_state(tmp_path)
    assert len(st["commit"]) == 40 and st["dirty"] is False
    (tmp_path / "f").write_text("2")
    assert P.git_state(tmp_path)["dirty"] is True


def test_record_and_compatibility():
    rec = P.record({"seed": 1})
    assert {"code", "code_and_config", "git", "machine", "libraries", "time"} <= set(rec)
    assert rec["libraries"]["torch"] and P.record()["code"] == rec["code"] and "code_and_config" not in P.record()
    assert P.check_compatible({"a": "x", "b": "x", "c": None}) == "x"
    assert P.check_compatible({"a": None}) is None
    with pytest.raises(VersemiError, match=r"different code .*x: a; y: b"):
        P.check_compatible({"a": "x", "b": "y"})


def test_method_fingerprint_covers_the_method_modules_it_imports(tmp_path):
    from versemi.provenance import method_modules

    (tmp_path / "base.py").write_text("X = 1\n")
    (tmp_path / "helper.py").write_text("from .base import X\nY = X\n")
    (tmp_path / "deep.py").write_text("Z = 3\n")
    (tmp_path / "mine.py").write_text("from .helper import Y\nfrom . import deep\nfrom versemi.utils import VersemiError\n")
    assert method_modules(tmp_path / "mine.py") == {"mine.py", "helper.py", "deep.py"}
    from pathlib import Path

    import versemi.methods.uamt as uamt
    assert method_modules(Path(uamt.__file__)) == {"uamt.py", "mean_teacher.py"}


def test_the_machine_record_names_the_processor():
    from versemi.provenance import cpu_model, machine

    m = machine()
    assert m["cpu"] == cpu_model() and m["cpu"] and m["cpus"] >= 1
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        assert m["cpu"] in cpuinfo.read_text()
