"""The memory-allocator setting of the package's entry points: keep freed memory for the next step.

On a CPU, PyTorch takes every activation from ``malloc``. glibc serves blocks above a threshold with
``mmap`` and gives them back to the system on ``free``, so each training step faults every page of its
activations in again: at 96^3 that was 43 % of the CPU time spent in the kernel (issue 12). Keeping the
memory (never ``mmap`` a block, never trim the heap) removes most of it; the side-by-side measurement is
``bench/allocator.py`` (``results/bench/allocator.csv``).

:func:`configure` applies it to the running process (``mallopt``) and exports the same settings as
``GLIBC_TUNABLES`` so that the processes it starts inherit them (the notebook kernels of ``versemi book``
and ``versemi run``, data-loader workers). The entry points call it: the ``versemi`` command and
``python -m bench.run``. ``VERSEMI_ALLOCATOR=system`` leaves glibc's defaults. On a C library other than
glibc it does nothing. The cost: the process keeps its peak heap until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

ENV = "VERSEMI_ALLOCATOR"
MODES = ("keep", "system")
# mallopt parameter numbers of glibc's malloc.h, and the values that keep memory
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
KEEP = {"mmap_max": 0, "trim_threshold": 2**31 - 1, "top_pad": 256 << 20}
_PARAMS = {"mmap_max": _M_MMAP_MAX, "trim_threshold": _M_TRIM_THRESHOLD, "top_pad": _M_TOP_PAD}


def is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def tunables(settings: dict[str, int] = KEEP) -> str:
    """The ``GLIBC_TUNABLES`` value of ``settings``: 'glibc.malloc.mmap_max=0:...'."""
    return ":".join(f"glibc.malloc.{k}={v}" for k, v in settings.items())


def mode() -> str:
    """The requested mode: ``$VERSEMI_ALLOCATOR`` (default ``keep``); an unknown value is a ValueError."""
    m = os.environ.get(ENV, "keep").strip().lower() or "keep"
    if m not in MODES:
        raise ValueError(f"{ENV}={m!r}: expected one of {', '.join(MODES)}")
    return m


def configure() -> str:
    """Apply the allocator mode to this process and to the processes it starts; returns what is in
    effect: ``keep``, ``system`` (asked for, or not glibc) ."""
    if mode() == "system" or not is_glibc():
        return "system"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    for key, value in KEEP.items():
        if libc.mallopt(_PARAMS[key], value) != 1:
            return "system"
    mine = tunables()
    current = os.environ.get("GLIBC_TUNABLES", "")
    if mine not in current:
        os.environ["GLIBC_TUNABLES"] = f"{current}:{mine}" if current else mine
    return "keep"
