"""Publishing the book (issue 17, part 1): the GitHub Actions workflow, ``make publish``, the Binder
environment and the repository / launch buttons of ``_config.yml``.

The workflow cannot run here: these are its local checks (it parses, it runs the README's command, it
deploys with the official Pages actions, it caches). The book is built once per session by
``tests/companion/test_book.py::build_example_book`` (shared with the book and browser tests) with the
repository's ``_config.yml``, so the launch buttons are checked on that build.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.companion.test_book import EXAMPLE, build_example_book

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
OFFICIAL_PAGES = ("actions/configure-pages", "actions/upload-pages-artifact", "actions/deploy-pages")


def _workflow() -> dict:
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(wf, dict), "book.yml is not a YAML mapping"
    if True in wf:  # YAML 1.1 (PyYAML) reads the key `on` as the boolean true
        wf["on"] = wf.pop(True)
    return wf


def _steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def _uses(step: dict) -> str:
    return step.get("uses", "").split("@")[0]


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


# --------------------------------------------------------------------------- the workflow


def test_workflow_builds_with_the_readme_command_on_a_push_to_main():
    wf = _workflow()
    assert wf["on"]["push"]["branches"] == ["main"]
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make book\b", readme, re.M), "the README no longer documents `make book`"
    runs = [s["run"].strip() for s in _steps(wf["jobs"]["build"]) if "run" in s]
    assert [r for r in runs if re.match(r"make book(\s|$)", r)], f"no step runs `make book`: {runs}"
    # the published folder is the one `make book` builds and `make publish` pushes
    upload = [s for s in _steps(wf["jobs"]["build"]) if _uses(s) == "actions/upload-pages-artifact"]
    assert upload and upload[0]["with"]["path"] == "_build/html"
    assert re.search(r"^BOOK_HTML\s*\?=\s*_build/html$", (ROOT / "Makefile").read_text(), re.M)
    for job in wf["jobs"].values():
        for step in _steps(job):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), f"unpinned action {step['uses']}"


def test_workflow_deploys_with_the_official_pages_actions():
    wf = _workflow()
    perms = wf["permissions"]
    assert perms["pages"] == "write" and perms["id-token"] == "write"
    assert wf["concurrency"]["group"]
    used = {_uses(s) for job in wf["jobs"].values() for s in _steps(job) if "uses" in s}
    assert set(OFFICIAL_PAGES) <= used
    assert all(u.startswith("actions/") for u in used), f"only official actions: {sorted(used)}"
    build = [_uses(s) for s in _steps(wf["jobs"]["build"])]
    assert build.index("actions/configure-pages") < build.index("actions/upload-pages-artifact")
    deploy = wf["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [_uses(s) for s in _steps(deploy)] == ["actions/deploy-pages"]


def test_workflow_caches_the_downloads_and_the_run_cache():
    steps = [s for s in _steps(_workflow()["jobs"]["build"]) if _uses(s) == "actions/cache"]
    paths = {p.strip() for s in steps for p in s["with"]["path"].splitlines() if p.strip()}
    assert {"~/.cache/pip", "~/.npm", "results/runs", "results/data"} <= paths
    for s in steps:
        assert "hashFiles('pyproject.toml', 'package-lock.json')" in s["with"]["key"], s["name"]
    # make book must come after the caches are restored
    names = [s.get("name", s.get("uses", "")) for s in _steps(_workflow()["jobs"]["build"])]
    assert max(names.index(s["name"]) for s in steps) < names.index("make book")


# --------------------------------------------------------------------------- make publish


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True,
                          text=True, timeout=120)


def test_make_publish_refuses_without_a_built_book(tmp_path):
    empty = tmp_path / "_build" / "html"
    empty.mkdir(parents=True)
    r = _make("publish", f"BOOK_HTML={empty}")
    assert r.returncode != 0
    assert f"no built book: {empty}/index.html is missing" in r.stderr and "make book" in r.stderr
    # nothing else ran: no installation, no push
    assert "ghp-import" not in r.stdout + r.stderr and "pip" not in r.stdout


def test_make_publish_pushes_the_built_book_with_ghp_import(tmp_path):
    built = tmp_path / "html"
    built.mkdir()
    (built / "index.html").write_text("<html></html>")
    r = _make("-n", "publish", f"BOOK_HTML={built}")  # -n: print the commands, run none
    assert r.returncode == 0, r.stderr
    push = [line for line in r.stdout.splitlines() if "ghp-import" in line]
    assert push and "--no-jekyll" in push[0] and "--push" in push[0]
    assert str(built) in r.stdout.split("ghp-import", 1)[1]
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert "ghp-import" in {canonicalize_name(Requirement(d).name) for d in dev}


# --------------------------------------------------------------------------- Binder environment


def _compatible(a, b) -> bool:
    """Whether two specifier sets admit a common version (tried at every version either one names)."""
    candidates = {Version(s.version.removesuffix(".*")) for s in [*a, *b]} or {Version("0")}
    return any(a.contains(v, prereleases=True) and b.contains(v, prereleases=True) for v in candidates)


def test_binder_environment_agrees_with_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)

    python = next(d for d in conda if d.startswith("python"))
    assert Version(python.split("=")[-1]) in Requirement(f"python{project['requires-python']}").specifier
    # the package itself with its dev tools (ghp-import, pytest): repo2docker sees the local `-e .`
    # and installs the environment after copying the repository
    assert [p for p in pip if p.startswith("-")] == ["-e .[dev]"]

    env_reqs = [Requirement(p) for p in pip if not p.startswith("-")]
    py_reqs = [Requirement(d) for d in project["dependencies"]]
    env_by = {canonicalize_name(r.name): r for r in env_reqs}
    py_by = {canonicalize_name(r.name): r for r in py_reqs}
    assert len(env_by) == len(env_reqs) and len(py_by) == len(py_reqs), "a dependency listed twice"
    assert set(env_by) == set(py_by), (
        f"only in environment.yml: {sorted(set(env_by) - set(py_by))}; "
        f"only in pyproject.toml: {sorted(set(py_by) - set(env_by))}")
    bad = [f"{env_by[n]} vs {py_by[n]}" for n in py_by if not _compatible(env_by[n].specifier, py_by[n].specifier)]
    assert not bad, f"incompatible version ranges: {bad}"


def test_version_ranges_are_compared():
    from packaging.specifiers import SpecifierSet as S

    assert _compatible(S(">=2.2,<2.15"), S("==2.13.0")) and _compatible(S(">=1,<2"), S(">=1.5"))
    assert not _compatible(S(">=2,<3"), S("<2")) and not _compatible(S("==1.0"), S(">=1.1"))


# --------------------------------------------------------------------------- repository and launch buttons


def test_config_has_the_repository_and_launch_buttons():
    cfg = _config()
    repo = cfg["repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo["url"]), repo["url"]
    assert repo["branch"] and repo["path_to_book"] == ""  # the book's source directory is the root
    assert cfg["html"]["use_repository_button"] is True and cfg["html"]["use_issues_button"] is True
    launch = cfg["launch_buttons"]
    assert launch["binderhub_url"] == "https://mybinder.org"
    assert launch["colab_url"] == "https://colab.research.google.com"
    assert cfg["sphinx"]["local_extensions"]["versemi_launch"] == "book/_ext"
    assert (ROOT / "book" / "_ext" / "versemi_launch.py").is_file()
    # the README names the line to change while the URL is a placeholder
    if "/OWNER/" in repo["url"]:
        assert repo["url"] in (ROOT / "README.md").read_text()


def _launch_module():
    spec = importlib.util.spec_from_file_location("versemi_launch", ROOT / "book" / "_ext" / "versemi_launch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_launch_links_of_executed_pages_are_rewritten_to_the_sources():
    mod = _launch_module()

    def context():
        buttons = [{"url": "https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/book/executed/05_tsne.ipynb"},
                   {"url": "https://colab.research.google.com/github/o/r/blob/main/book/executed/05_tsne.ipynb"}]
        return {"header_buttons": [{"label": "launch-buttons", "buttons": buttons},
                                   {"label": "download-buttons", "buttons": [{"url": "book/executed/x"}]}]}

    ctx = context()
    mod.point_launch_buttons_at_sources(None, "book/executed/05_tsne", "page.html", ctx, None)
    urls = [b["url"] for b in ctx["header_buttons"][0]["buttons"]]
    assert urls == ["https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/notebooks/05_tsne.ipynb",
                    "https://colab.research.google.com/github/o/r/blob/main/notebooks/05_tsne.ipynb"]
    assert ctx["header_buttons"][1]["buttons"][0]["url"] == "book/executed/x"  # other groups untouched
    other = context()
    mod.point_launch_buttons_at_sources(None, "book/method", "page.html", other, None)
    assert other == context()


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    return build_example_book(tmp_path_factory)


def test_built_pages_launch_the_notebook_sources(built_book):
    """The book builds (-W -n) with the repository and launch-button keys; the notebook page's
    Binder and Colab buttons open notebooks/<name>.ipynb, the header links the repository."""
    assert built_book.code == 0, built_book.output
    cfg = _config()
    url, branch = cfg["repository"]["url"], cfg["repository"]["branch"]
    org, repo = url.removeprefix("https://github.com/").split("/")
    page = (built_book.html / "book" / "executed" / f"{EXAMPLE}.html").read_text()
    source = f"notebooks/{EXAMPLE}.ipynb"
    assert f"https://mybinder.org/v2/gh/{org}/{repo}/{branch}?urlpath=lab/tree/{source}" in page
    assert f"https://colab.research.google.com/github/{org}/{repo}/blob/{branch}/{source}" in page
    assert f"tree/book/executed/{EXAMPLE}" not in page and f"blob/{branch}/book/executed" not in page
    assert f'href="{url}"' in page and f"{url}/issues/new" in page
    # chapters that are not notebooks get the repository buttons but no launch buttons
    method = (built_book.html / "book" / "method.html").read_text()
    assert f'href="{url}"' in method and "mybinder.org" not in method
