"""Launch buttons that open the notebook sources (a Sphinx extension, stdlib only).

The book renders the papermill-executed copies ``book/executed/NN_name.ipynb`` (written by
``versemi book``, not committed), while the repository holds their sources, stored without outputs,
as ``notebooks/NN_name.ipynb`` (same file name, see ``versemi/companion/notebooks.py``).
sphinx-book-theme builds the Binder and Colab links of ``_config.yml``'s ``launch_buttons`` from the
page's own path, which would open a file that is not in the repository. This handler runs after the
theme's (``html-page-context``, priority 501) and points those links at the source instead:

- Binder: ``.../v2/gh/<org>/<repo>/<branch>?urlpath=lab/tree/notebooks/NN_name.ipynb``
- Colab:  ``.../github/<org>/<repo>/blob/<branch>/notebooks/NN_name.ipynb``
"""

from __future__ import annotations

EXECUTED = "book/executed/"
SOURCES = "notebooks/"
LAUNCH_GROUP = "launch-buttons"  # sphinx-book-theme's label of the launch-button group


def source_url(url: str) -> str:
    """A launch link of an executed copy -> the same link to its source in ``notebooks/``."""
    return url.replace(EXECUTED, SOURCES, 1)


def point_launch_buttons_at_sources(app, pagename, templatename, context, doctree) -> None:
    """Rewrite the launch links of the executed-notebook pages (``book/executed/*``) in place."""
    if not pagename.startswith(EXECUTED):
        return
    for group in context.get("header_buttons", []):
        if group.get("label") != LAUNCH_GROUP:
            continue
        for button in group.get("buttons", []):
            if button.get("url"):
                button["url"] = source_url(button["url"])


def setup(app):
    app.connect("html-page-context", point_launch_buttons_at_sources, priority=600)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
