"""The book machinery: papermill batch execution (failures isolated), parameters, and the
Jupyter Book build (-W -n) of the executed example notebook.

The book is built once per session (``built_book``), into a temporary copy of the book sources,
and shared with tests/test_browser.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml

from versemi import book
from versemi.utils import VersemiError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "00_smoke_example"
PAGES = ("book/index", "book/method", "book/reproducibility", "book/notebooks", "book/bibliography",
         f"book/executed/{EXAMPLE}")


@dataclass
class BuiltBook:
    src: Path  # temporary book source root (copy of the repository's book files)
    html: Path  # built HTML
    code: int  # build_book's exit code
    output: str  # what build_book printed


def _copy_sources(dst: Path, with_book: bool = True) -> Path:
    """A minimal copy of the repository for the book: config, pages, assets, the example notebook."""
    dst.mkdir(parents=True)
    (dst / "notebooks").mkdir()
    shutil.copy2(ROOT / "notebooks" / f"{EXAMPLE}.ipynb", dst / "notebooks")
    if with_book:
        for name in ("_config.yml", "_toc.yml", "package.json", "package-lock.json"):
            shutil.copy2(ROOT / name, dst / name)
        shutil.copytree(ROOT / "book", dst / "book", ignore=shutil.ignore_patterns("executed", ".*"))
    return dst


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
        src = _copy_sources(base / "src")
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = book.build_book("smoke", names=[EXAMPLE], root=src, path_output=base, quiet=True)
        _BUILT[key] = BuiltBook(src=src, html=base / "_build" / "html", code=code, output=buf.getvalue())
    return _BUILT[key]


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> BuiltBook:
    return build_example_book(tmp_path_factory)


def _table_rows(nb_path: Path) -> int:
    """Rows of the example's random-walk table, read from the executed notebook's HTML output."""
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            html = out.get("data", {}).get("text/html", "")
            if "Random walk:" in html and "<table" in html:
                return html.count("<tr") - 1  # minus the header row
    raise AssertionError(f"no random-walk table in {nb_path}")


def _failing_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A notebook that fails"),
        nbformat.v4.new_code_cell("n: int = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("before = n * 2\nprint('reached', before)"),
        nbformat.v4.new_code_cell("raise ValueError(f'boom on purpose, n={n}')"),
        nbformat.v4.new_code_cell("print('never reached')"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


# --------------------------------------------------------------------------- fast checks


def test_registry_lists_every_notebook_once():
    names = [nb.name for nb in book.NOTEBOOKS]
    assert len(names) == len(set(names))
    for nb in book.NOTEBOOKS:
        assert nb.source == f"notebooks/{nb.name}.ipynb", nb
        assert nb.groups and "all" not in nb.groups
    on_disk = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert on_disk <= set(names), f"notebooks not registered in versemi.book.NOTEBOOKS: {on_disk - set(names)}"
    assert EXAMPLE in {nb.name for nb in book.available(ROOT)}
    assert book.select_group("example") == [book.registered(EXAMPLE)]
    with pytest.raises(VersemiError, match="unknown notebook group"):
        book.select_group("no-such-group")


def test_example_notebook_is_stored_without_outputs_and_declares_parameters():
    nb = nbformat.read(ROOT / "notebooks" / f"{EXAMPLE}.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    declared = book.declared_parameters(ROOT / "notebooks" / f"{EXAMPLE}.ipynb")
    assert {"profile", "seed", "n", "results_dir", "data_dir"} <= set(declared)
    assert declared["profile"] == '"smoke"' and declared["n"] == "5"


def test_parse_params_reads_yaml_values():
    got = book.parse_params(["lr=1e-3", "sizes=[1, 2]", "name=abc", "flag=true", "n=7", "empty="])
    assert got == {"lr": 0.001, "sizes": [1, 2], "name": "abc", "flag": True, "n": 7, "empty": ""}
    for bad, msg in (("novalue", "key=value"), ("profile=demo", "--profile"), ("1x=2", "identifier"),
                     ("a=[1,", "YAML")):
        with pytest.raises(VersemiError, match=msg):
            book.parse_params([bad])
    with pytest.raises(VersemiError, match="twice"):
        book.parse_params(["a=1", "a=2"])


def test_params_hash_separates_runs():
    h = book.params_hash("demo", {"n": 5})
    assert h == book.params_hash("demo", {"n": 5}) and len(h) == 10
    assert h != book.params_hash("demo", {"n": 7}) != book.params_hash("smoke", {"n": 5})


def test_undeclared_parameter_is_an_error_before_anything_runs(tmp_path):
    with pytest.raises(VersemiError, match="not declared"):
        book.execute_notebooks([EXAMPLE], "smoke", {"n_epochs": 3}, tmp_path / "out", root=ROOT)
    with pytest.raises(VersemiError, match="unknown profile"):
        book.execute_notebooks([EXAMPLE], "tiny", None, tmp_path / "out", root=ROOT)
    assert not (tmp_path / "out").exists()


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
    assert globs == [book.BOOK_EXECUTED.as_posix() + "/*"]
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["only_build_toc_files"] is True
    assert "notebooks" in cfg["exclude_patterns"]
    assert cfg["sphinx"]["config"]["mathjax_path"].startswith("vendor/")
    widget_js = list(cfg["sphinx"]["config"]["nb_ipywidgets_js"])
    assert widget_js == ["vendor/ipywidgets/require.js", "versemi-widgets.js", "vendor/ipywidgets/embed-amd.js"]
    assert (ROOT / "book" / "_static" / "versemi-widgets.js").is_file()


# --------------------------------------------------------------------------- executions


@pytest.fixture(scope="module")
def failure_run(tmp_path_factory):
    """A failing notebook first, then the example with n=7: the example must still run."""
    src = _copy_sources(tmp_path_factory.mktemp("fail") / "src", with_book=False)
    bad = _failing_notebook(src / "notebooks" / "90_fails.ipynb")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = book.build_book("smoke", params={"n": 7}, build=False, names=[bad, EXAMPLE], root=src, quiet=True)
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
    n5 = _table_rows(built_book.src / "book" / "executed" / f"{EXAMPLE}.ipynb")
    n7 = _table_rows(src / "book" / "executed" / f"{EXAMPLE}.ipynb")
    assert (n5, n7) == (5, 7)
    nb = nbformat.read(src / "book" / "executed" / f"{EXAMPLE}.ipynb", as_version=4)
    assert nb.metadata.papermill["parameters"]["n"] == 7
    assert nb.metadata.papermill["parameters"]["profile"] == "smoke"
    assert "seed" not in nb.metadata.papermill["parameters"]  # only what was given is injected


def test_versemi_run_writes_outside_the_book(tmp_path, capsys):
    args = argparse.Namespace(group="example", profile="smoke", param=["n=3", "seed=4"], into_book=False,
                              out=str(tmp_path / "run"), kernel="python3", timeout=120)
    assert book.cli_run(args) == 0
    assert _table_rows(tmp_path / "run" / f"{EXAMPLE}.ipynb") == 3
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["last_call"]["seed"] == 4 and prov["notebooks"][EXAMPLE]["parameters"]["n"] == 3
    assert "executed notebooks:" in capsys.readouterr().out


# --------------------------------------------------------------------------- the built book


def test_book_builds_without_warnings(built_book):
    assert built_book.code == 0, built_book.output
    executed = built_book.src / "book" / "executed"
    summary = json.loads((executed / "run_summary.json").read_text())
    assert [(e["name"], e["status"]) for e in summary["notebooks"]] == [(EXAMPLE, "ok")]
    prov = json.loads((executed / "provenance.json").read_text())
    assert prov["machine"]["cpu_count"] >= 1 and prov["python"].startswith("3.")
    assert prov["packages"]["papermill"] and "torch" in prov["packages"]
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
    src = _copy_sources(tmp_path / "src")
    code, problems = book.run_jupyter_book(src, path_output=tmp_path, quiet=True)
    assert code != 0
    assert any("book/executed/*" in p and "didn't match any documents" in p for p in problems), problems
    assert all("\x1b[" not in p for p in problems)
