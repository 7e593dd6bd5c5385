"""The staging folder of ``versemi prepare``: resumable per case, swapped in whole.

Prepared cases are written into ``<out>/.prepare-<key>/<dataset>/`` and moved into ``<out>`` only when every
requested dataset is done, so ``<out>`` never holds a half-prepared dataset. A run that dies on the way
(SIGKILL, power loss, a raw case that fails its checks) leaves its finished cases in the staging folder, and
the next run with the same arguments resumes from them instead of starting over.

The key is a hash of the datasets, the absolute source folder, the profile, the seed and the preparation
version: other arguments get another staging folder (stale ones are removed by the next run, which holds the
output folder's lock). A case counts as finished when its entry ``<case>.json`` exists: written atomically
after the case's HDF5 file, it holds the case's manifest entry and the size and modification time of the raw
source it was made from; a case whose source changed since is prepared again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

from versemi.utils import atomic_write_text

PREFIX = ".prepare-"


def stage_key(datasets, src: Path, profile: str, seed: int, version) -> str:
    """12 hex digits identifying one set of ``prepare`` arguments."""
    text = json.dumps([list(datasets), str(Path(src).resolve()), profile, int(seed), str(version)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def open_stage(out: Path, key: str) -> Path:
    """The staging folder of ``key`` under ``out`` (kept if a previous run left it); staging folders of
    other keys are removed (call under the output folder's lock)."""
    out.mkdir(parents=True, exist_ok=True)
    stage = out / f"{PREFIX}{key}"
    for old in out.glob(f"{PREFIX}*"):
        if old != stage and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    stage.mkdir(exist_ok=True)
    return stage


def source_stamp(path: Path) -> list[int]:
    """[size, mtime_ns] of a raw source (a file, or a DICOM series folder and its files)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return [sum(p.stat().st_size for p in files), max((p.stat().st_mtime_ns for p in files), default=0)]
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def finished(stage: Path, rel: str, source: Path) -> dict | None:
    """The manifest entry of case ``rel`` (``<dataset>/<case>.h5``) if a previous run finished it from the
    same raw ``source``; else None."""
    meta = stage / Path(rel).with_suffix(".json")
    if not meta.is_file() or not (stage / rel).is_file():
        return None
    with contextlib.suppress(OSError, ValueError, KeyError):
        doc = json.loads(meta.read_text())
        if doc["stamp"] == source_stamp(source):
            return doc["entry"]
    return None


def record(stage: Path, rel: str, entry: dict, source: Path) -> None:
    """Mark case ``rel`` finished (after its HDF5 file is complete)."""
    atomic_write_text(stage / Path(rel).with_suffix(".json"),
                      json.dumps({"entry": entry, "stamp": source_stamp(source)}))  # entry keys in manifest order


def swap_in(stage: Path, out: Path, datasets, manifest: Path, manifest_text: str) -> None:
    """Move the staged datasets into ``out`` (their entry files left behind) and write the manifest: it goes
    first (the folder reads as incomplete meanwhile) and comes back last. The stage is removed after."""
    with contextlib.suppress(FileNotFoundError):
        manifest.unlink()
    for ds in datasets:
        for meta in (stage / ds).glob("*.json"):
            meta.unlink()
        final = out / ds
        if final.exists():
            os.replace(final, stage / f".old-{ds}")
        os.replace(stage / ds, final)
    atomic_write_text(manifest, manifest_text)
    shutil.rmtree(stage, ignore_errors=True)
