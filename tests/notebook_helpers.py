"""Reading executed notebooks in the tests: glued values, glue references, errors."""

from __future__ import annotations

import re

import nbformat


def _read(nb_or_path):
    return nb_or_path if isinstance(nb_or_path, nbformat.NotebookNode) else nbformat.read(nb_or_path, as_version=4)


def glued(nb_or_path) -> dict:
    """key -> text/plain of every myst_nb glue output of an executed notebook (a notebook or its path).

    Fails when a key is glued twice: Jupyter Book warns about duplicate keys, and the book builds with -W."""
    nb = _read(nb_or_path)
    out = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                assert name not in out, f"glue key {name!r} is glued twice"
                out[name] = o["data"].get("application/papermill.record/text/plain")
    return out


def referenced(nb_or_path) -> set[str]:
    """Glue keys that the markdown cells of a notebook paste ({glue:text}`key[:format]`)."""
    nb = _read(nb_or_path)
    return {m.split(":")[0] for c in nb.cells if c.cell_type == "markdown"
            for m in re.findall(r"\{glue:[a-z]*\}`([^`]+)`", c.source)}


def errors(nb_or_path) -> list[str]:
    """``ename: evalue`` of every error output."""
    nb = _read(nb_or_path)
    return [f"{o['ename']}: {o['evalue']}" for c in nb.cells for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
