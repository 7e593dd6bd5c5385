"""The notebooks with the plain tools, without the ``versemi`` wrapper (issue 17, part 2):

- ``papermill --help-notebook`` lists every parameter of every registered notebook with its type and
  meaning (papermill reads them from the ``parameters`` cell: one parameter per line, a type annotation
  and a trailing ``# comment``), and each notebook's first markdown cell lists the same parameters;
- the ``papermill`` command line executes a notebook (09_budget: it reads committed files only, so it
  is cheap) in the smoke profile with ``-p`` parameters, from the repository root as a user would;
- ``jupyter-book build . -W -n --keep-going``, run directly in a tiny book made of that executed notebook
  and the book's pages, builds it. (``tests/companion/test_book.py`` runs the same command through
  ``versemi.companion.book.run_jupyter_book`` on a notebook that ``versemi`` executed and annotated; here
  nothing of the package runs between papermill and jupyter-book.)
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from tests.companion.book_fixtures import copy_sources
from versemi.companion import book
from versemi.companion.notebooks import NOTEBOOKS, Notebook
from versemi.config import get_profile
from versemi.utils import VersemiError

from ..notebook_helpers import documented_parameters, errors, glued

ROOT = Path(__file__).resolve().parents[2]
CHEAP = "09_budget"

# Notebooks that another contributor is editing: their parameters cell / first markdown cell are to be
# completed by them. Strict: once completed, the test passes unexpectedly and fails, so that the name is
# removed from these sets.
UNTYPED: set[str] = set()
UNDOCUMENTED: set[str] = set()


def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed in this environment")
    return found


def _mark(nb: Notebook, pending: set[str], why: str):
    marks = [pytest.mark.xfail(strict=True, reason=why)] if nb.name in pending else []
    return pytest.param(nb, id=nb.name, marks=marks)


@functools.cache
def _help(source: str) -> str:
    r = subprocess.run([_tool("papermill"), "--help-notebook", source], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _declared(nb: Notebook) -> dict:
    return pm.inspect_notebook(str(ROOT / nb.source))


@pytest.mark.parametrize("nb", [pytest.param(nb, id=nb.name) for nb in NOTEBOOKS])
def test_help_notebook_lists_every_parameter_with_its_meaning(nb):
    declared = _declared(nb)
    assert declared, f"{nb.source}: no parameters cell"
    text = _help(nb.source)
    flat = " ".join(text.split())
    for name, p in declared.items():
        assert p["help"], f"{nb.source}: parameter {name} has no trailing # comment (its help text)"
        assert re.search(rf"^\s+{name}: ", text, re.M), f"{nb.source}: {name} missing from --help-notebook"
        assert f"(default {p['default']})" in flat and " ".join(p["help"].split()) in flat, name


@pytest.mark.parametrize("nb", [_mark(nb, UNTYPED, "parameters cell without type annotations (edited "
                                                   "by another contributor)") for nb in NOTEBOOKS])
def test_help_notebook_shows_the_type_of_every_parameter(nb):
    untyped = [name for name, p in _declared(nb).items() if p["inferred_type_name"] == "None"]
    assert not untyped, f"{nb.source}: no type annotation for {untyped}"
    assert "Unknown type" not in _help(nb.source)


@pytest.mark.parametrize("nb", [_mark(nb, UNDOCUMENTED, "first markdown cell without the Parameters list "
                                                        "(edited by another contributor)") for nb in NOTEBOOKS])
def test_first_markdown_cell_lists_the_parameters(nb):
    src = ROOT / nb.source
    # the list shows paths such as <results_dir>/runs as code; compared without the backticks
    expected = {name: {"type": p["inferred_type_name"], "default": p["default"], "help": p["help"].replace("`", "")}
                for name, p in _declared(nb).items()}
    assert documented_parameters(src) == expected
    first = next(c for c in nbformat.read(src, as_version=4).cells if c.cell_type == "markdown")
    assert first.source.startswith("# ")  # still the page title first


# --------------------------------------------------------------------------- papermill, then jupyter-book


@pytest.fixture(scope="module")
def cli_book(tmp_path_factory):
    """A tiny book (the pages, the config and toc, the offline assets) whose only notebook is 09_budget,
    executed by the papermill command line in the smoke profile from the repository root."""
    try:
        book.ensure_assets(ROOT)  # npm ci once if book/_static/vendor is missing
    except VersemiError as e:
        pytest.fail(f"offline book assets unavailable: {e}")
    base = tmp_path_factory.mktemp("cli")
    src = copy_sources(base / "src")
    executed = src / "book" / "executed" / f"{CHEAP}.ipynb"
    executed.parent.mkdir(parents=True)
    cmd = [_tool("papermill"), f"notebooks/{CHEAP}.ipynb", str(executed), "-p", "profile", "smoke",
           "-p", "seed", "2333", "-p", "results_dir", str(base / "results"), "--no-progress-bar"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return src, executed, base / "results", run


def test_papermill_command_line_runs_a_notebook_with_parameters(cli_book):
    src, executed, results, run = cli_book
    assert run.returncode == 0, run.stderr[-3000:]
    nb = nbformat.read(executed, as_version=4)
    assert errors(nb) == [] and not nb.metadata.papermill.get("exception")
    assert nb.metadata.papermill["parameters"] == {"profile": "smoke", "seed": 2333, "results_dir": str(results)}
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert 'profile = "smoke"' in injected[0].source and "seed = 2333" in injected[0].source
    # the profile reached the code: the page shows the smoke schedule, and wrote under results_dir
    assert glued(nb)["budget_schedule"].strip("'") == str(int(get_profile("smoke").train["steps"]))
    assert (results / "smoke" / CHEAP / "tables").is_dir()


def test_jupyter_book_builds_the_papermill_output_directly(cli_book):
    src, executed, _, run = cli_book
    assert run.returncode == 0, "papermill failed (see the test above)"
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    r = subprocess.run([_tool("jupyter-book"), "build", ".", "-W", "-n", "--keep-going"], cwd=src,
                       capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    page = (src / "_build" / "html" / "book" / "executed" / f"{CHEAP}.html").read_text()
    assert "Budget: schedules, speed and memory" in page
    assert "<strong>Parameters</strong>" in page and '<span class="pre">--help-notebook</span>' in page
    assert "Run record" not in page  # only versemi adds that box: nothing but papermill ran
    assert f"/notebooks/{CHEAP}.ipynb" in page  # the launch buttons open the source
