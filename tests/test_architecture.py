"""The rules of ARCHITECTURE.md, checked on the sources: module size, the layer order and no import
cycle, no import of another module's private name, one definition per concept, a mirrored test module
for every package module, and notebooks without function definitions."""

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "versemi"
MAX_LINES = 500
CORE = ("versemi.model", "versemi.losses", "versemi.mixing", "versemi.methods", "versemi.train",
        "versemi.evaluate", "versemi.data", "versemi.config", "versemi.runs", "versemi.checkpoints",
        "versemi.provenance", "versemi.utils", "versemi.locks", "versemi.studies", "versemi.experiments",
        "versemi.allocator", "versemi.generalisation")


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if _is_package(importer) else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                if hasattr(sub, "lineno"):
                    lines.add(sub.lineno)
    return lines


def _imports(name: str) -> list[tuple[str, str, ast.AST]]:
    """(imported module, imported name or '', node) of every versemi import of module ``name``
    outside ``if TYPE_CHECKING:`` blocks, wherever it sits (module level or inside a function)."""
    tree = ast.parse(MODULES[name].read_text())
    skip = _type_checking_lines(tree)
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, "", node) for a in node.names if a.name.split(".")[0] == "versemi"]
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(name, node)
            if mod.split(".")[0] != "versemi":
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append((sub, "", node) if sub in MODULES else (mod, a.name, node))
    return out


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in _imports(m) if t in MODULES and t != m} for m in MODULES}


def test_no_module_over_the_size_limit():
    big = {str(p.relative_to(ROOT)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, big


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, cycles


def test_layers():
    """The core never imports the companion layer; the trainer never imports the run cache or the
    experiment groups (they call it, not the other way round)."""
    bad = []
    for m in MODULES:
        targets = {t for t, _, _ in _imports(m)}
        if m.startswith(CORE) and any(t.startswith("versemi.companion") for t in targets):
            bad.append((m, "companion"))
        if m == "versemi.train" and targets & {"versemi.experiments", "versemi.runs"}:
            bad.append((m, "experiments/runs"))
    assert not bad, bad


def test_no_import_of_private_names():
    bad = []
    for m, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for t, n, node in _imports(m):
            if n.startswith("_") and not n.startswith("__"):
                bad.append((m, f"{t}.{n}"))
            if isinstance(node, ast.ImportFrom) and not n:
                for a in node.names:
                    aliases[a.asname or a.name] = t
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append((m, f"{aliases[node.value.id]}.{node.attr}"))
    assert not bad, bad


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(t, ast.Name):
                    names.add(t.id)
    return names


@pytest.mark.parametrize("name,home", [
    ("PROFILES", "versemi.config"), ("RunConfig", "versemi.config"), ("prompt_truth", "versemi.data.truth"),
    ("save_figure", "versemi.companion.figures"), ("save_table", "versemi.companion.figures"),
    ("load_run_net", "versemi.runs"), ("is_phantom", "versemi.config"), ("code_fingerprint", "versemi.provenance"),
    ("git_state", "versemi.provenance"), ("TARGET_STRUCTURE", None), ("parse_label", None),
    ("machine_info", None), ("environment_record", None),
])
def test_one_definition_per_concept(name, home):
    where = sorted(m for m, p in MODULES.items() if name in _top_level_names(p))
    assert where == ([home] if home else []), where


def _defines_something(path: Path) -> bool:
    return any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in ast.parse(path.read_text()).body)


def test_every_module_has_a_mirrored_test_module():
    missing = []
    for m, path in MODULES.items():
        if m == "versemi":
            continue
        rel = path.relative_to(PKG)
        if path.name == "__init__.py":
            if not _defines_something(path):
                continue   # a package docstring and re-exports only
            test = ROOT / "tests" / rel.parent / f"test_{rel.parent.name}.py"
        else:
            test = ROOT / "tests" / rel.parent / f"test_{path.stem}.py"
        if not test.is_file():
            missing.append(str(test.relative_to(ROOT)))
    assert not missing, missing


def test_notebook_cells_define_no_functions():
    bad = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                    bad.append(f"{nb.name} cell {i}: {type(node).__name__}")
    assert not bad, bad


def test_docstrings_refer_only_to_files_inside_the_repository():
    bad = [str(p.relative_to(ROOT)) for p in MODULES.values()
           if any(s in p.read_text() for s in ("DESIGN.md", "../shared", "shared/research", "peer-methods.md"))]
    assert not bad, bad
