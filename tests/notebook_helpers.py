"""Reading notebooks in the tests: glued values, glue references, errors of executed notebooks; the
"Parameters" list of a source notebook's first markdown cell."""

from __future__ import annotations

import re
from pathlib import Path

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


# --------------------------------------------------------------------------- the documented parameters

PARAMETERS_HEADING = "**Parameters**"
_PARAM_LINE = re.compile(r"^- `(?P<name>\w+)` \((?P<type>[^,]+), default `(?P<default>.*)`\): (?P<help>.*)$")


def _code_paths(text: str) -> str:
    """Words holding ``<...>`` (paths such as ``<results_dir>/runs``) as code spans, so that Markdown
    does not read them as HTML tags; trailing punctuation stays outside."""
    def one(word: str) -> str:
        if "<" not in word or "`" in word:
            return word
        core = word.rstrip(",;:.)")
        return f"`{core}`{word[len(core):]}"
    return " ".join(one(w) for w in text.split(" "))


def parameter_list(path) -> str:
    """The "Parameters" list of a notebook's first markdown cell, from what papermill infers from its
    ``parameters`` cell (``papermill --help-notebook``): one line per parameter with its type,
    default and meaning (the trailing comment)."""
    import papermill as pm

    info = pm.inspect_notebook(str(path))
    name = f"notebooks/{Path(path).name}"
    lines = [f"{PARAMETERS_HEADING} (papermill: `papermill --help-notebook {name}` lists them; "
             f"`-p NAME VALUE` sets one):", ""]
    for p in info.values():
        lines.append(f"- `{p['name']}` ({p['inferred_type_name']}, default `{p['default']}`): "
                     f"{_code_paths(p['help'])}")
    return "\n".join(lines)


def documented_parameters(nb_or_path) -> dict[str, dict]:
    """name -> {type, default, help} of the "Parameters" list in the notebook's first markdown cell
    (help without the code-span backticks); empty when the cell has no such list."""
    nb = _read(nb_or_path)
    first = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if first is None or PARAMETERS_HEADING not in first.source:
        return {}
    out = {}
    for line in first.source.split(PARAMETERS_HEADING, 1)[1].splitlines():
        m = _PARAM_LINE.match(line.strip())
        if m:
            out[m["name"]] = {"type": m["type"], "default": m["default"], "help": m["help"].replace("`", "")}
    return out
