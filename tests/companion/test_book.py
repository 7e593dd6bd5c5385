"""versemi/companion/book.py: papermill batch execution within the book build (failures isolated,
parameters, records), ``versemi run``, and the Jupyter Book build (-W -n) of the executed example
notebook (tests/companion/book_fixtures.py).

The book is built once per session (``built_book``), into a temporary copy of the book sources,
and shared with tests/companion/test_browser.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml

from tests.companion.book_fixtures import EXAMPLE, PAGES, ROOT, copy_sources, failing_notebook, table_rows
from versemi.companion import book, notebooks
from versemi.utils import VersemiError

__all__ = ["EXAMPLE", "PAGES", "BuiltBook", "build_example_book"]


@dataclass
class BuiltBook:
    src: Path  # temporary book source root (copy of the repository's book files)
    html: Path  # built HTML
    code: int  # build_book's exit code
    output: str  # what build_book printed


_BUILT: dict[int, BuiltBook] = {}


def build_example_book(tmp_path_factory) -> BuiltBook:
    """Execute the example notebook (smoke) and build the book with -W -n; once per session."""
    key = id(tmp_path_factory)
    if key not in _BUILT:
        try:
            book.ensure_assets(ROOT)  # npm ci once if book/_static/vendor is missing
        except VersemiError as e:
            pytest.fail(f"offline book assets unavailable: {e}")
        base = tmp_path_factory.mktemp("book")
        src = copy_sources(base / "src")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = book.build_book("smoke", names=[src / "notebooks" / f"{EXAMPLE}.ipynb"], root=src,
                                   path_output=base, quiet=True)
        _BUILT[key] = BuiltBook(src=src, html=base / "_build" / "html", code=code, output=buf.getvalue())
    return _BUILT[key]


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> BuiltBook:
    return build_example_book(tmp_path_factory)


# --------------------------------------------------------------------------- fast checks


def test_toc_and_config_point_at_the_book_pages():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert toc["root"] == "book/index"
    files = [toc["root"]]
    globs = []
    for part in toc["parts"]:
        for ch in part["chapters"]:
            files.append(ch["file"])
            globs += [s["glob"] for s in ch.get("sections", []) if "glob" in s]
    for f in files:
        assert (ROOT / f"{f}.md").is_file(), f
    assert globs == [notebooks.BOOK_EXECUTED.as_posix() + "/*"]
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["only_build_toc_files"] is True
    assert "notebooks" in cfg["exclude_patterns"]
    assert cfg["sphinx"]["config"]["mathjax_path"].startswith("vendor/")
    widget_js = list(cfg["sphinx"]["config"]["nb_ipywidgets_js"])
    assert widget_js == ["vendor/ipywidgets/require.js", "versemi-widgets.js", "vendor/ipywidgets/embed-amd.js"]
    assert (ROOT / "book" / "_static" / "versemi-widgets.js").is_file()


def test_notebooks_page_lists_every_registered_notebook():
    """book/notebooks.md names each registered notebook and no longer calls them unwritten."""
    page = (ROOT / "book" / "notebooks.md").read_text()
    for nb in notebooks.NOTEBOOKS:
        assert f"`{nb.name}`" in page, nb.name
    assert "not written yet" not in page and "00_smoke_example" not in page
    for path in [ROOT / "_toc.yml", *(ROOT / "book").glob("*.md")]:
        assert "00_smoke_example" not in path.read_text(), path


def test_book_figure_is_saved_once(tmp_path):
    out = book.ensure_figures(tmp_path)
    assert out == tmp_path / "book" / "_static" / "figures" / "method.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = out.stat().st_mtime_ns
    assert book.ensure_figures(tmp_path) == out and out.stat().st_mtime_ns == before  # not redrawn


# --------------------------------------------------------------------------- executions


@pytest.fixture(scope="module")
def failure_run(tmp_path_factory):
    """A failing notebook first, then the example with n=7: the example must still run."""
    src = copy_sources(tmp_path_factory.mktemp("fail") / "src", with_book=False)
    bad = failing_notebook(src / "notebooks" / "90_fails.ipynb")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = book.build_book("smoke", params={"n": 7}, build=False,
                               names=[bad, src / "notebooks" / f"{EXAMPLE}.ipynb"], root=src, quiet=True)
    return src, code, buf.getvalue()


def test_a_failing_notebook_does_not_stop_the_others(failure_run):
    src, code, printed = failure_run
    out = src / "book" / "executed"
    assert code != 0
    assert "FAILED notebooks" in printed and "90_fails: ValueError: boom on purpose, n=7" in printed
    summary = json.loads((out / "run_summary.json").read_text())
    status = {e["name"]: (e["status"], e["error"]) for e in summary["notebooks"]}
    assert status["90_fails"][0] == "failed" and "boom on purpose" in status["90_fails"][1]
    assert status[EXAMPLE] == ("ok", None)

    # the partly executed notebook is kept, marked by papermill and by the run record
    nb = nbformat.read(out / "90_fails.ipynb", as_version=4)
    assert nb.metadata.papermill["exception"] is True
    texts = [c.source for c in nb.cells]
    assert any("papermill-error-cell" in t for t in texts)
    assert any("FAILED" in t and "boom on purpose" in t for t in texts)
    reached = [c for c in nb.cells if c.cell_type == "code" and "before = n * 2" in c.source][0]
    assert "reached 14" in "".join(o.get("text", "") for o in reached.outputs)
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_changed_parameter_changes_the_output(built_book, failure_run):
    src, _, _ = failure_run
    n5 = table_rows(built_book.src / "book" / "executed" / f"{EXAMPLE}.ipynb")
    n7 = table_rows(src / "book" / "executed" / f"{EXAMPLE}.ipynb")
    assert (n5, n7) == (5, 7)
    nb = nbformat.read(src / "book" / "executed" / f"{EXAMPLE}.ipynb", as_version=4)
    assert nb.metadata.papermill["parameters"]["n"] == 7
    assert nb.metadata.papermill["parameters"]["profile"] == "smoke"
    assert "seed" not in nb.metadata.papermill["parameters"]  # only what was given is injected


def test_versemi_run_writes_outside_the_book(tmp_path, capsys, monkeypatch):
    # a registry holding the example notebook as the group "example" of a copied source tree
    src = copy_sources(tmp_path / "src", with_book=False)
    example = notebooks.Notebook(EXAMPLE, f"notebooks/{EXAMPLE}.ipynb", ("example",))
    monkeypatch.setattr(notebooks, "NOTEBOOKS", (*notebooks.NOTEBOOKS, example))
    args = argparse.Namespace(group="example", profile="smoke", param=["n=3", "seed=4"], into_book=False,
                              out=str(tmp_path / "run"), kernel="python3", timeout=120)
    assert book.cli_run(args, root=src) == 0
    assert table_rows(tmp_path / "run" / f"{EXAMPLE}.ipynb") == 3
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["last_call"]["seed"] == 4 and prov["notebooks"][EXAMPLE]["parameters"]["n"] == 3
    assert "executed notebooks:" in capsys.readouterr().out
    assert not (src / "book" / "executed").exists()


# --------------------------------------------------------------------------- the built book


def test_book_builds_without_warnings(built_book):
    assert built_book.code == 0, built_book.output
    executed = built_book.src / "book" / "executed"
    summary = json.loads((executed / "run_summary.json").read_text())
    assert [(e["name"], e["status"]) for e in summary["notebooks"]] == [(EXAMPLE, "ok")]
    prov = json.loads((executed / "provenance.json").read_text())
    # the one record of versemi.provenance.record(): machine.cpus/python, libraries (were cpu_count,
    # a top-level python and packages), code fingerprint
    assert prov["machine"]["cpus"] >= 1 and prov["machine"]["python"].startswith("3.")
    assert prov["libraries"]["papermill"] and "torch" in prov["libraries"]
    assert len(prov["code"]) == 16 and set(prov["git"]) == {"commit", "dirty"}
    assert prov["notebooks"][EXAMPLE]["profile"] == "smoke" and prov["notebooks"][EXAMPLE]["seconds"] > 0


def test_built_pages_show_the_outputs(built_book):
    html = built_book.html
    for page in PAGES:
        assert (html / f"{page}.html").is_file(), page
    nb_page = (html / "book" / "executed" / f"{EXAMPLE}.html").read_text()
    imgs = [s for s in nb_page.split('src="')[1:] if s.split('"')[0].endswith(".png")]
    assert imgs, "no figure <img> on the notebook page"
    for s in imgs:
        assert (html / "book" / "executed" / s.split('"')[0]).resolve().is_file()
    assert "<table" in nb_page and "Random walk: 5 steps" in nb_page
    assert "Run record" in nb_page and "profile <strong>smoke</strong>" in nb_page
    assert 'class="pasted-text">5<' in nb_page  # the glued n_steps
    # glued text reads as prose: no quote marks around it (a glued str would show its repr)
    assert 'class="pasted-text">a Gaussian random walk<' in nb_page
    assert not re.search(r'class="pasted-text">[\'\u2018"]', nb_page)
    # the hover figure: an inline SVG whose points carry their names (one <title> per point)
    assert nb_page.count('class="versemi-tip"') == 5 and "<title>step 1: " in nb_page
    assert "application/vnd.jupyter.widget-state+json" in nb_page
    assert "_static/vendor/ipywidgets/embed-amd.js" in nb_page
    method = (html / "book" / "method.html").read_text()
    assert "_static/vendor/mathjax/tex-chtml.js" in method and "P_{\\text{agg}}" in method
    bib = (html / "book" / "bibliography.html").read_text().lower()
    for needle in ("segment together", "medical segmentation decathlon", "bidirectional copy-paste"):
        assert needle in bib
    for page in PAGES:
        text = (html / f"{page}.html").read_text()
        for cdn in ("cdn.jsdelivr.net", "cdnjs.cloudflare.com", "unpkg.com/@jupyter-widgets"):
            assert f'src="https://{cdn}' not in text, (page, cdn)


def test_build_problems_fail_the_build_and_are_listed(tmp_path):
    """Without executed notebooks the toc glob matches nothing: -W turns that into a failure, and
    the warning is collected for the summary (ANSI colours stripped)."""
    src = copy_sources(tmp_path / "src")
    code, problems = book.run_jupyter_book(src, path_output=tmp_path, quiet=True)
    assert code != 0
    assert any("book/executed/*" in p and "didn't match any documents" in p for p in problems), problems
    assert all("\x1b[" not in p for p in problems)
