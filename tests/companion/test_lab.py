"""The live (kernel-backed) explorer of notebooks/07_explorer.ipynb in JupyterLab, in headless Chromium.

A ``jupyter lab`` server runs headless on a free port of 127.0.0.1 with a token made here, a temporary
root folder and temporary Jupyter / IPython / JupyterLab config, data, runtime and settings folders (HOME
too), and the project's kernel (the ``.venv``'s ``python3`` kernel spec; the test asks the running kernel for its
``sys.executable``). The notebook is
the repository's, with its parameters injected by papermill (``prepare_only``): the smoke profile, the
session's smoke phantoms, ``live = True``. The smoke VerSemi run is trained beforehand through
:func:`versemi.runs.run_group` (the notebook's own call then finds it in the cache), so the in-browser run
is short. Chromium (Debian's /usr/bin/chromium through Playwright, flags of tests/companion/test_browser.py)
opens the notebook, runs every cell from the Run menu, then changes the case, the slice and the prompt of
the live explorer (:func:`versemi.companion.widgets.live_explorer`, found by its ``LIVE_CLASSES``) and
checks that the prediction image (blob URL and PNG bytes) and the metric readout change after each change.
No console error beyond :data:`CONSOLE_ALLOW`, no request leaving the server; a screenshot is saved under
the test's tmp folder. The server is shut down in the fixture's teardown in every case.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import papermill as pm
import pytest

from tests.companion.test_browser import ARGS, CHROMIUM
from versemi.companion.notebooks import ROOT
from versemi.companion.widgets import LIVE_CLASSES
from versemi.experiments import sota_configs
from versemi.runs import run_group

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.is_file(), reason="/usr/bin/chromium is missing (make test installs it "
                                                                "with apt-get install chromium)")]

NOTEBOOK = ROOT / "notebooks" / "07_explorer.ipynb"
LABEL = "VerSemi 10%"  # the run the notebook shows (its ratio parameter's default, 10)
SERVER_START_S = 90  # seconds for jupyter lab to answer /api/status
RUN_ALL_S = 180  # seconds for every cell to run (imports, explorer data, static explorers, live explorer)
STEP_S = 60  # seconds for one change of the live explorer to come back from the kernel
# Messages JupyterLab 4 itself may log in a fresh, offline profile (none from the explorer):
CONSOLE_ALLOW: tuple[str, ...] = ()
# the live explorer's parts (CSS selectors)
EXPLORER, CASE, PROMPT, SLICE, IMAGE, READOUT = (f".{LIVE_CLASSES[r]}" for r in
                                                 ("explorer", "case", "prompt", "slice", "image", "readout"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET", timeout: float = 5.0):
    """JSON of the server's REST API at ``path`` (token in the Authorization header)."""
    req = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"},
                                 data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body else None


def _isolated_env(tmp: Path) -> dict[str, str]:
    """The server's environment: every Jupyter / IPython / JupyterLab folder (and HOME) under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    dirs = {"HOME": "home", "JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data",
            "JUPYTER_RUNTIME_DIR": "runtime", "IPYTHONDIR": "ipython", "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
            "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces"}
    for key, name in dirs.items():
        (tmp / name).mkdir(parents=True, exist_ok=True)
        env[key] = str(tmp / name)
    # no "notified about official Jupyter news?" toast over the screenshot (the server is offline anyway)
    (tmp / "config" / "labconfig").mkdir()
    (tmp / "config" / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    # the kernels inherit this environment; the .venv's own kernel spec comes first (its "python" is the
    # server's sys.executable, i.e. this .venv's Python)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MPLBACKEND="Agg", JUPYTER_PREFER_ENV_PATH="1")
    return env


@pytest.fixture(scope="module")
def lab_notebook(smoke_root, tmp_path_factory) -> Path:
    """The explorer notebook, parameters injected for the smoke profile and the live explorer, in a fresh
    root folder; its VerSemi run already trained into its results folder's run cache."""
    tmp = tmp_path_factory.mktemp("lab")
    results, root = tmp / "results", tmp / "root"
    root.mkdir()
    prepared = smoke_root / "data" / "smoke" / "prepared"
    run_group({LABEL: sota_configs("smoke", 10, 2333)[LABEL]}, prepared, results / "runs", device="cpu",
              progress=False)
    params = {"profile": "smoke", "data_dir": str(smoke_root / "data"), "results_dir": str(results),
              "seed": 2333, "device": "cpu", "n_slices": 2, "live": True, "live_cases": 2}
    out = root / NOTEBOOK.name
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters=params, prepare_only=True, kernel_name="python3",
                        progress_bar=False)
    return out


@pytest.fixture(scope="module")
def lab(lab_notebook, tmp_path_factory):
    """A headless ``jupyter lab`` serving the notebook's folder: yields (base URL, token). Teardown: the
    /api/shutdown request, then SIGTERM and SIGKILL to the server's own process group if it lingers."""
    tmp = tmp_path_factory.mktemp("lab_server")
    port, token = _free_port(), secrets.token_hex(24)
    base = f"http://127.0.0.1:{port}"
    log = tmp / "jupyter-lab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={lab_notebook.parent}", "--ServerApp.terminals_enabled=False",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.expose_app_in_browser=True", "--LabApp.extension_manager=readonly",
           *(["--allow-root"] if os.geteuid() == 0 else [])]  # the CI container runs as root
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=lab_notebook.parent, env=_isolated_env(tmp), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert proc.poll() is None, f"jupyter lab exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            with contextlib.suppress(OSError):
                _api(base, token, "/api/status", timeout=2)
                break
            assert time.monotonic() < deadline, f"jupyter lab did not answer in {SERVER_START_S} s:\n" \
                                                f"{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield base, token
    finally:
        with contextlib.suppress(OSError):
            _api(base, token, "/api/shutdown", method="POST", timeout=5)
        try:
            proc.wait(timeout=20)  # the server shuts its kernel down first
        except subprocess.TimeoutExpired:  # a kernel left behind exits with its parent (ipykernel's parent poller)
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=wait)
                    break
        print(f"jupyter lab log: {log}")


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


# the notebook panel's session, through the app object that --LabApp.expose_app_in_browser puts on window
_KERNEL_STATUS = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  return (w && w.sessionContext) ? w.sessionContext.kernelDisplayStatus : null;
}"""
# what ``code`` prints in the notebook's kernel, asked through the page's own kernel connection
_KERNEL_PRINT = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  let out = '';
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  future.onIOPub = msg => { if (msg.header.msg_type === 'stream') out += msg.content.text; };
  await future.done;
  return out;
}"""
# per code cell of the notebook model (JupyterLab renders only the cells in view): its execution count and
# the "ename: evalue" of its error outputs
_CELL_RESULTS = """() => {
  const cells = window.jupyterapp.shell.currentWidget.content.model.cells, out = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    const errors = [];
    for (let j = 0; j < c.outputs.length; j++) {
      const o = c.outputs.get(j).toJSON();
      if (o.output_type === 'error') errors.push(`${o.ename}: ${o.evalue}`);
    }
    out.push({count: c.executionCount, errors});
  }
  return out;
}"""
_IMAGE_STATE = """async (el) => {
  const bytes = new Uint8Array(await (await fetch(el.src)).arrayBuffer());
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return {src: el.src, size: bytes.length, png: bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47,
          sha: Array.from(digest, b => b.toString(16).padStart(2, '0')).join(''), loaded: el.naturalWidth > 0};
}"""


def _state(page) -> dict:
    """The live explorer's image (blob src, PNG bytes' SHA-256) and readout text, as the browser shows them."""
    img = page.locator(f"{EXPLORER} img{IMAGE}")
    state = img.evaluate(_IMAGE_STATE)
    state["readout"] = page.locator(f"{EXPLORER} {READOUT}").inner_text().strip()
    return state


def _changed(page, before: dict, expect_in_readout: str, what: str) -> dict:
    """Wait until the image src and the readout differ from ``before`` and the readout holds
    ``expect_in_readout``; return the new state after checking that the PNG bytes changed too."""
    page.wait_for_function(
        """([img, readout, src, text, want]) => {
             const i = document.querySelector(img), r = document.querySelector(readout);
             return i && r && i.src !== src && r.innerText.trim() !== text && r.innerText.includes(want);
           }""",
        arg=[f"{EXPLORER} img{IMAGE}", f"{EXPLORER} {READOUT}", before["src"], before["readout"], expect_in_readout],
        timeout=STEP_S * 1000)
    page.wait_for_function(f"() => ({_KERNEL_STATUS})() === 'idle'", timeout=STEP_S * 1000)
    after = _state(page)
    assert after["png"] and after["loaded"], f"{what}: the new image is not a loaded PNG"
    assert after["sha"] != before["sha"], f"{what}: same image bytes"
    assert after["readout"] != before["readout"], f"{what}: same readout"
    return after


def test_live_explorer_in_jupyterlab(lab, browser, smoke_root, tmp_path):
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    errors, external = [], []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else external.append(r.url))
    shot = tmp_path / "lab_live_explorer.png"
    try:
        page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}", wait_until="domcontentloaded", timeout=60_000)
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
        page.wait_for_function(f"() => ({_KERNEL_STATUS})() === 'idle'", timeout=60_000)
        # Run > Run All Cells, as a reader would
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item:visible", has_text="Run All Cells").first.click()
        page.wait_for_selector(EXPLORER, timeout=RUN_ALL_S * 1000)
        page.wait_for_function(f"() => ({_KERNEL_STATUS})() === 'idle'", timeout=RUN_ALL_S * 1000)
        cells = page.evaluate(_CELL_RESULTS)
        assert all(c["count"] for c in cells), f"cells not run: {cells}"
        assert not [e for c in cells for e in c["errors"]], cells
        # the project's kernel, running the notebook in the smoke profile on the session's phantoms
        ran = json.loads(page.evaluate(_KERNEL_PRINT, "import json, sys; print(json.dumps([sys.executable, "
                                                      "profile, live, str(prepared)]))"))
        assert ran == [sys.executable, "smoke", True, str(smoke_root / "data" / "smoke" / "prepared")], ran
        explorer = page.locator(EXPLORER)
        assert explorer.count() == 1
        explorer.scroll_into_view_if_needed()
        page.wait_for_function(f"() => document.querySelector('{EXPLORER} img{IMAGE}')?.naturalWidth > 0")
        state = _state(page)
        assert state["png"] and state["readout"].startswith("Dice"), state["readout"]

        # the case: the second test case of the first dataset
        case = page.locator(f"{CASE} select")
        names = case.locator("option").all_inner_texts()
        assert len(names) == 2, names
        case.select_option(index=1)
        state = _changed(page, state, f"{names[1]} under prompt", "case")

        # the slice: two steps down with the keyboard on the slider's handle
        value = int(page.locator(f"{SLICE} .widget-readout").inner_text().strip())
        handle = page.locator(f"{SLICE} .noUi-handle")
        handle.focus()
        handle.press("ArrowLeft")
        handle.press("ArrowLeft")
        state = _changed(page, state, f"axial slice {value - 2}:", "slice")

        # the prompt: the spleen prompt on a pancreas-set scan (the hidden labels know the spleen)
        page.locator(f"{PROMPT} select").select_option(label="spleen")
        state = _changed(page, state, "under prompt spleen,", "prompt")
        assert state["readout"].startswith("Dice"), state["readout"]
        explorer.scroll_into_view_if_needed()
    finally:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shot), timeout=15_000)
            print(f"screenshot: {shot}")
        page.close()
    unexpected = [e for e in errors if not any(a in e for a in CONSOLE_ALLOW)]
    assert not unexpected, f"console errors: {unexpected}"
    assert not external, f"requests leaving the server: {external}"
