"""Offline browser assets for the VerSemi companion book.

Two roles in one stdlib-only file (Sphinx imports it as a local extension, ``versemi.companion.book``
loads it by path, and it runs as a script):

* ``ensure_assets(root)`` installs the npm packages pinned in ``package-lock.json``
  (``npm ci``, only when ``node_modules`` is missing or older than the lock file) and copies the
  few files the HTML needs into ``book/_static/vendor/``:

  - ``ipywidgets/require.js`` and ``ipywidgets/embed-amd.js`` (+ its icon fonts): the Jupyter
    widget manager of the ipywidgets 8 line, so saved widget state renders without a CDN;
  - ``mathjax/tex-chtml.js`` (+ fonts, TeX extensions, menu): MathJax 3 without a CDN.

  They are too large to commit (about 5 MB minified), hence fetched from the npm registry.

* ``setup(app)``: the Sphinx extension. It adds ``book/_static`` to ``html_static_path`` at
  ``config-inited`` (Jupyter Book only auto-adds a ``_static`` folder at the source root, and it
  injects every .js found there into every page, which loads the widget manager several times),
  and warns, naming the fix, when the vendored files are missing; under ``-W`` that fails the
  build instead of publishing a book that silently needs the internet.

Script use: ``python book/_ext/versemi_assets.py [--force]``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC_REL = "book/_static"
VENDOR_REL = "book/_static/vendor"
STAMP_NAME = ".lock-sha256"

# (source under node_modules, destination under book/_static/vendor, is_directory)
MANIFEST: tuple[tuple[str, str, bool], ...] = (
    ("requirejs/require.js", "ipywidgets/require.js", False),
    ("@jupyter-widgets/html-manager/dist/embed-amd.js", "ipywidgets/embed-amd.js", False),
    ("@jupyter-widgets/html-manager/dist/embed.js.LICENSE.txt", "ipywidgets/LICENSE.txt", False),
    ("mathjax/es5/tex-chtml.js", "mathjax/tex-chtml.js", False),
    ("mathjax/es5/output/chtml/fonts/woff-v2", "mathjax/output/chtml/fonts/woff-v2", True),
    ("mathjax/es5/input/tex/extensions", "mathjax/input/tex/extensions", True),
    ("mathjax/es5/ui", "mathjax/ui", True),
    ("mathjax/es5/a11y", "mathjax/a11y", True),
    ("mathjax/LICENSE", "mathjax/LICENSE", False),
)
# the icon fonts that embed-amd.js loads from its own folder
_FONT_SUFFIXES = (".woff2", ".woff", ".ttf", ".eot", ".svg")

# paths relative to the HTML _static folder, used in _config.yml
WIDGET_JS = ("vendor/ipywidgets/require.js", "vendor/ipywidgets/embed-amd.js")
MATHJAX_JS = "vendor/mathjax/tex-chtml.js"
REQUIRED = ("ipywidgets/require.js", "ipywidgets/embed-amd.js", "mathjax/tex-chtml.js")


class AssetError(RuntimeError):
    """The vendored browser assets cannot be provided (npm missing, install failed, ...)."""


def _lock_hash(root: Path) -> str:
    lock = root / "package-lock.json"
    if not lock.is_file():
        raise AssetError(f"{lock} is missing: it pins the book's browser assets")
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def missing_assets(root: Path = ROOT) -> list[str]:
    """Required vendored files that are absent (relative to book/_static/vendor)."""
    vendor = root / VENDOR_REL
    return [rel for rel in REQUIRED if not (vendor / rel).is_file()]


def assets_current(root: Path = ROOT) -> bool:
    """True when every required file exists and was copied from the current package-lock.json."""
    stamp = root / VENDOR_REL / STAMP_NAME
    try:
        return not missing_assets(root) and stamp.read_text().strip() == _lock_hash(root)
    except (OSError, AssetError):
        return False


def _npm_ci(root: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError(
            "npm is not installed; it is needed once to fetch the book's offline JS assets "
            "(widget manager, RequireJS, MathJax). Install Node.js/npm, then run "
            "`python book/_ext/versemi_assets.py`."
        )
    cmd = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise AssetError(f"`{' '.join(cmd[1:])}` failed in {root}: " + " | ".join(tail))


def ensure_assets(root: Path = ROOT, force: bool = False) -> Path:
    """Make ``book/_static/vendor`` hold the assets pinned by ``package-lock.json``; return its path.

    Does nothing when the copy is current. The copy is assembled in a temporary folder and
    renamed into place, so an interrupted run never leaves a half-filled vendor folder.
    """
    root = Path(root)
    vendor = root / VENDOR_REL
    if not force and assets_current(root):
        return vendor
    lock_hash = _lock_hash(root)
    nm = root / "node_modules"
    installed_lock = nm / ".package-lock.json"
    if force or not installed_lock.is_file() or installed_lock.stat().st_mtime < (
        root / "package-lock.json"
    ).stat().st_mtime:
        _npm_ci(root)
    tmp = vendor.with_name(f".vendor.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for src_rel, dst_rel, is_dir in MANIFEST:
            src, dst = nm / src_rel, tmp / dst_rel
            if not src.exists():
                raise AssetError(f"{src} is missing after npm ci; is package-lock.json complete?")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if is_dir:
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
        dist = nm / "@jupyter-widgets/html-manager/dist"
        for font in sorted(dist.iterdir()):
            if font.suffix in _FONT_SUFFIXES:
                shutil.copy2(font, tmp / "ipywidgets" / font.name)
        (tmp / STAMP_NAME).write_text(lock_hash + "\n")
        old = vendor.with_name(f".vendor.old{os.getpid()}")
        if vendor.exists():
            vendor.rename(old)
        tmp.rename(vendor)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return vendor


# --------------------------------------------------------------------------- Sphinx extension


def _on_config_inited(app, config) -> None:
    from sphinx.util import logging

    srcdir = Path(app.srcdir)
    static = srcdir / STATIC_REL
    if str(static) not in map(str, config.html_static_path):
        config.html_static_path.append(str(static))
    missing = missing_assets(srcdir)
    if missing:
        logging.getLogger(__name__).warning(
            "offline book assets missing in %s (%s): the widgets and the equations would need a "
            "CDN. Run `python book/_ext/versemi_assets.py` (needs npm once) or `versemi book`.",
            VENDOR_REL,
            ", ".join(missing),
            type="versemi",
            subtype="assets",
        )


def setup(app):
    app.connect("config-inited", _on_config_inited)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    try:
        out = ensure_assets(ROOT, force="--force" in sys.argv[1:])
    except AssetError as e:
        print(f"versemi_assets: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"book assets ready in {out.relative_to(ROOT)}")
