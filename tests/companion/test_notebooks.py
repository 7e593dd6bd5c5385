"""versemi/companion/notebooks.py: the notebook registry, the parameters, and the checks made before
anything runs. Executions (failures isolated, records, changed parameters) are tested through the
book build in tests/companion/test_book.py, which shares the executions."""

from __future__ import annotations

import nbformat
import pytest

from tests.companion.book_fixtures import EXAMPLE, ROOT, dying_notebook, example_notebook
from versemi.companion import notebooks
from versemi.config import profile_names
from versemi.utils import VersemiError


def test_registry_lists_every_notebook_once():
    names = [nb.name for nb in notebooks.NOTEBOOKS]
    assert len(names) == len(set(names))
    for nb in notebooks.NOTEBOOKS:
        assert nb.source == f"notebooks/{nb.name}.ipynb", nb
        assert nb.groups and "all" not in nb.groups
    on_disk = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert on_disk <= set(names), f"notebooks not registered in versemi.companion.notebooks.NOTEBOOKS: {on_disk - set(names)}"
    assert "00_smoke_example" not in names  # the random walk is no notebook of the companion
    assert [nb.name for nb in notebooks.available(ROOT)] == names
    assert notebooks.select_group("data") == [notebooks.registered("01_data")]
    assert notebooks.groups()[0] == "all" and notebooks.select_group("all") == list(notebooks.NOTEBOOKS)
    with pytest.raises(VersemiError, match="unknown notebook group"):
        notebooks.select_group("no-such-group")
    with pytest.raises(VersemiError, match="unknown notebook"):
        notebooks.registered("00_smoke_example")


def test_notebooks_are_stored_without_outputs_and_declare_parameters(tmp_path):
    for nb in notebooks.NOTEBOOKS:
        path = ROOT / nb.source
        cells = nbformat.read(path, as_version=4).cells
        assert all(not c.get("outputs") for c in cells if c.cell_type == "code"), nb.name
        assert {"seed", "results_dir", "data_dir"} <= set(notebooks.declared_parameters(path)), nb.name
    declared = notebooks.declared_parameters(example_notebook(tmp_path / f"{EXAMPLE}.ipynb"))
    assert {"profile", "seed", "n", "results_dir", "data_dir"} <= set(declared)
    assert declared["profile"] == '"smoke"' and declared["n"] == "5"


def test_parse_params_reads_yaml_values():
    got = notebooks.parse_params(["lr=1e-3", "sizes=[1, 2]", "name=abc", "flag=true", "n=7", "empty="])
    assert got == {"lr": 0.001, "sizes": [1, 2], "name": "abc", "flag": True, "n": 7, "empty": ""}
    for bad, msg in (("novalue", "key=value"), ("profile=demo", "--profile"), ("1x=2", "identifier"),
                     ("a=[1,", "YAML")):
        with pytest.raises(VersemiError, match=msg):
            notebooks.parse_params([bad])
    with pytest.raises(VersemiError, match="twice"):
        notebooks.parse_params(["a=1", "a=2"])


def test_params_hash_separates_runs():
    h = notebooks.params_hash("demo", {"n": 5})
    assert h == notebooks.params_hash("demo", {"n": 5}) and len(h) == 10
    assert h != notebooks.params_hash("demo", {"n": 7}) != notebooks.params_hash("smoke", {"n": 5})


def test_undeclared_parameter_is_an_error_before_anything_runs(tmp_path):
    example = example_notebook(tmp_path / "src" / f"{EXAMPLE}.ipynb")
    with pytest.raises(VersemiError, match="not declared"):
        notebooks.execute_notebooks([example], "smoke", {"n_epochs": 3}, tmp_path / "out", root=ROOT)
    with pytest.raises(VersemiError, match="unknown profile"):
        notebooks.execute_notebooks([example], "tiny", None, tmp_path / "out", root=ROOT)
    # a profile the notebooks cannot run with (no notebooks in versemi.config) is refused the same way
    assert "la-real" not in profile_names("notebooks")
    with pytest.raises(VersemiError, match="unknown profile"):
        notebooks.execute_notebooks([example], "la-real", None, tmp_path / "out", root=ROOT)
    with pytest.raises(VersemiError, match="given twice"):
        notebooks.execute_notebooks([example, example], "smoke", None, tmp_path / "out", root=ROOT)
    assert not (tmp_path / "out").exists()


def test_a_dying_kernel_is_a_failed_notebook_and_the_others_still_run(tmp_path):
    dying = dying_notebook(tmp_path / "src" / "00_dying.ipynb")
    example = example_notebook(tmp_path / "src" / f"{EXAMPLE}.ipynb")
    results = notebooks.execute_notebooks([dying, example], "smoke", None, tmp_path / "out", root=ROOT,
                                          timeout=120, quiet=True)
    assert [r.status for r in results] == ["failed", "ok"]
    assert "DeadKernelError" in results[0].error_line or "died" in results[0].error_line.lower()
    assert (tmp_path / "out" / "00_dying.ipynb").is_file() and (tmp_path / "out" / f"{EXAMPLE}.ipynb").is_file()
