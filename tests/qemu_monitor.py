"""QEMU monitor text of the shipped guests (tests/data/qemu), parsed
independently of ksinspect: ``info tlb`` and ``info mem`` as QEMU 7.2 prints
them (target/i386/monitor.c; the formats are described in
tests/test_paging_conformance.py), and any guest file, plain or xz.
"""
import lzma
import os

from conftest import QEMU


def read_text(profile, name):
    path = os.path.join(QEMU, profile, name)
    if os.path.exists(path):
        with open(path, encoding="ascii") as fh:
            return fh.read()
    if os.path.exists(path + ".xz"):
        with lzma.open(path + ".xz", "rt", encoding="ascii") as fh:
            return fh.read()
    return None


def parse_info_tlb(text):
    """[(va, pa column, flags)] from `info tlb` lines 'VA: PA FLAGS'."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        va, rest = line.split(":")
        pa, flags = rest.split()
        assert len(flags) == 9, line
        rows.append((int(va, 16), int(pa, 16), flags))
    return rows


def parse_info_mem(text):
    """[(start, size, 'urw')] from `info mem` lines 'START-END SIZE PERM'."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        span, size, perm = line.split()
        start, _end = span.split("-")
        rows.append((int(start, 16), int(size, 16), perm))
    return rows
