"""Notebooks and source trees shared by the tests of versemi/companion/notebooks.py and book.py.

The example notebook exercises the book machinery without any segmentation: papermill parameters,
a table, a figure, a glued value and widgets that work in the static page without a kernel. It is
written by the tests (it is not a notebook of the companion, hence not registered).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "00_example"
PAGES = ("book/index", "book/method", "book/reproducibility", "book/notebooks", "book/bibliography",
         f"book/executed/{EXAMPLE}")

_EXAMPLE_CELLS = (
    ("markdown", "# Example: the book machinery\n\nThis small notebook tests the machinery that turns "
                 "notebooks into book pages: papermill parameters, a figure, a table, a value glued into the "
                 "text, and widgets that work in the static page without a Python kernel. It uses random "
                 "numbers only."),
    ("parameters",
     'profile: str = "smoke"  # smoke | demo | paper: which data and budget produced this page\n'
     "seed: int = 0  # seed of the random walk\n"
     "n: int = 5  # number of steps of the random walk\n"
     'results_dir: str = "results"  # where runs write their outputs (set by versemi book)\n'
     'data_dir: str = "results/data"  # where prepared data live (set by versemi book)'),
    ("code", "import ipywidgets as widgets\nimport matplotlib.pyplot as plt\nimport numpy as np\n"
             "import pandas as pd\nfrom IPython.display import display\nfrom myst_nb import glue"),
    ("markdown", "## A table\n\nA random walk of `n` steps, with the seed from the parameters cell."),
    ("code", "rng = np.random.default_rng(seed)\nsteps = np.arange(1, n + 1)\nwalk = rng.normal(size=n).cumsum()\n"
             'table = pd.DataFrame({"step": steps, "position": walk.round(3)})\n'
             'table.style.hide(axis="index").set_caption(f"Random walk: {n} steps, seed {seed}, profile {profile}")'),
    ("markdown", "## A figure"),
    ("code", "fig, ax = plt.subplots(figsize=(4.5, 3))\nax.plot(steps, walk, marker=\"o\")\n"
             'ax.set_xlabel("step")\nax.set_ylabel("position")\n'
             'ax.set_title(f"{n} steps (profile {profile}, seed {seed})")\nfig.tight_layout()\nplt.show()'),
    ("markdown", "## A glued value\n\nThe walk has {glue:text}`n_steps` steps and ends at "
                 "{glue:text}`final_position:.3f`; it is {glue:text}`walk_kind`."),
    ("code", 'glue("n_steps", int(n), display=False)\nglue("final_position", float(walk[-1]), display=False)\n'
             'from versemi.companion.figures import glue_value\nglue_value("walk_kind", "a Gaussian random walk")'),
    ("markdown", "## Widgets without a kernel\n\nThe slider and the number box are linked in the browser "
                 "(`jslink`)."),
    ("code", 'slider = widgets.IntSlider(value=n, min=0, max=20, description="steps")\n'
             'box = widgets.IntText(value=n, description="linked")\n'
             'widgets.jslink((slider, "value"), (box, "value"))\ndisplay(widgets.HBox([slider, box]))'),
    ("markdown", "## Points that name themselves\n\nHover a point of the walk: its tooltip names the step "
                 "(an inline SVG, no script)."),
    ("code", "from versemi.companion.figures import hover_html, tip_points\n"
             "fig2, ax2 = plt.subplots(figsize=(4, 2.5))\n"
             'tip_points(ax2, steps, walk, [f"step {s}: {w:.3f}" for s, w in zip(steps, walk)], s=40)\n'
             "display(hover_html(fig2, close=True))"),
)


def _write(nb, path: Path) -> Path:
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def example_notebook(path: Path) -> Path:
    """Write the example notebook (stored without outputs, with a ``parameters`` cell) to ``path``."""
    nb = nbformat.v4.new_notebook()
    for kind, src in _EXAMPLE_CELLS:
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            tags = {"tags": ["parameters"]} if kind == "parameters" else {}
            nb.cells.append(nbformat.v4.new_code_cell(src, metadata=tags))
    return _write(nb, path)


def failing_notebook(path: Path) -> Path:
    """A notebook whose third code cell raises (after one that prints), with a parameter ``n``."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A notebook that fails"),
        nbformat.v4.new_code_cell("n: int = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("before = n * 2\nprint('reached', before)"),
        nbformat.v4.new_code_cell("raise ValueError(f'boom on purpose, n={n}')"),
        nbformat.v4.new_code_cell("print('never reached')"),
    ]
    return _write(nb, path)


def dying_notebook(path: Path) -> Path:
    """A notebook whose kernel is killed (SIGKILL, as the out-of-memory killer does) in its second cell."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("n: int = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
        nbformat.v4.new_code_cell("print('never reached')"),
    ]
    return _write(nb, path)


def copy_sources(dst: Path, with_book: bool = True) -> Path:
    """A minimal copy of the repository for the book: config, pages, assets, and the example notebook
    as ``notebooks/<EXAMPLE>.ipynb``."""
    dst.mkdir(parents=True)
    example_notebook(dst / "notebooks" / f"{EXAMPLE}.ipynb")
    if with_book:
        for name in ("_config.yml", "_toc.yml", "package.json", "package-lock.json"):
            shutil.copy2(ROOT / name, dst / name)
        shutil.copytree(ROOT / "book", dst / "book", ignore=shutil.ignore_patterns("executed", ".*"))
    return dst


def table_rows(nb_path: Path) -> int:
    """Rows of the example's random-walk table, read from the executed notebook's HTML output."""
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            html = out.get("data", {}).get("text/html", "")
            if "Random walk:" in html and "<table" in html:
                return html.count("<tr") - 1  # minus the header row
    raise AssertionError(f"no random-walk table in {nb_path}")
