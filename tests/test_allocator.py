"""The allocator setting of the entry points: big blocks stay in the heap, children inherit it, a switch turns
it off."""

import json
import os
import subprocess
import sys

import pytest

from versemi import allocator

pytestmark = pytest.mark.skipif(not allocator.is_glibc(), reason="glibc only")

# allocate and free a 64 MiB block, then report glibc's mmapped bytes during the allocation and the heap
# kept afterwards (mallinfo2: hblkhd = bytes in mmapped blocks, arena = bytes of the heap)
PROBE = r"""
import ctypes, json, sys
class MI(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6"); libc.mallinfo2.restype = MI
if sys.argv[1] == "configure":
    from versemi import allocator
    allocator.configure()
libc.malloc.restype = ctypes.c_void_p
p = libc.malloc(64 << 20); ctypes.memset(p, 1, 64 << 20)
during = libc.mallinfo2()
libc.free(ctypes.c_void_p(p))
after = libc.mallinfo2()
print(json.dumps({"mmapped": during.hblkhd, "heap_after": after.arena}))
"""


def probe(how: str, **env) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", allocator.ENV)}
    e.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE, how], env=e, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_glibc_default_maps_big_blocks_and_returns_them():
    r = probe("plain")
    assert r["mmapped"] >= 64 << 20 and r["heap_after"] < 64 << 20


def test_configure_keeps_big_blocks_in_the_heap_after_free():
    r = probe("configure")
    assert r["mmapped"] < 64 << 20 and r["heap_after"] >= 64 << 20


def test_children_inherit_the_setting_through_glibc_tunables():
    r = probe("plain", GLIBC_TUNABLES=allocator.tunables())
    assert r["mmapped"] < 64 << 20 and r["heap_after"] >= 64 << 20


def test_the_switch_turns_it_off():
    r = probe("configure", **{allocator.ENV: "system"})
    assert r["mmapped"] >= 64 << 20


def test_unknown_mode_is_an_error(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "tcmalloc")
    with pytest.raises(ValueError, match="VERSEMI_ALLOCATOR"):
        allocator.mode()
