"""Batch and single-decode speed of the C core against pure Python.

Decodes N descriptors and N paging entries from one buffer through the
batch path (one C call each, into a fresh output array), and the same
bytes with two pure-Python decoders:

* the reference model of tests/reference_model.py: straightforward Python
  written from the SDM that computes the same facts as the C core (the
  test suite proves they agree; this script re-checks a sample). This is
  the like-for-like baseline and gives the headline ratio.
* a minimal decoder that computes only ten fields (kind, base, limit...):
  a lower bound, to show what the C core costs against the least work.

Then it times one single decode called from Python. Ratios are measured in
the same run. Times are this thread's CPU time (the machine may be shared:
wall time then counts the other processes' turns too).

    python bench/decode.py [--count 1000000] [--repeat 3]

The last line is exactly ``batch-vs-python=R single-decode-us=U``: R is the
smaller of the two batch ratios against the reference model, U the slower
of the two single decodes.
"""
import argparse
import os
import random
import struct
import sys
import time
import timeit

from ksinspect.x86 import (PagingEntry, SegmentDescriptor, decode_descriptor_table,
                           decode_paging_entries)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from reference_model import ref_descriptor, ref_paging  # noqa: E402


# --- the pure-Python baseline: what one would write without ksinspect -------------

_LEGACY_SYSTEM_KIND = ("reserved", "tss-available", "ldt", "tss-busy", "call-gate", "task-gate",
                       "interrupt-gate", "trap-gate", "reserved", "tss-available", "reserved",
                       "tss-busy", "call-gate", "reserved", "interrupt-gate", "trap-gate")


def python_descriptor(v):
    """(kind, type, dpl, present, base, effective limit, G, D/B, L, AVL) of a legacy descriptor."""
    typ = (v >> 40) & 0xF
    system = not (v >> 44) & 1
    if v == 0:
        kind = "null"
    elif system:
        kind = _LEGACY_SYSTEM_KIND[typ]
    else:
        kind = "code" if typ & 8 else "data"
    g = (v >> 55) & 1
    raw_limit = (v & 0xFFFF) | ((v >> 32) & 0xF0000)
    limit = (raw_limit << 12) | 0xFFF if g else raw_limit
    base = ((v >> 16) & 0xFFFFFF) | ((v >> 32) & 0xFF000000)
    return (kind, typ, (v >> 45) & 3, (v >> 47) & 1, base, limit, g, (v >> 54) & 1,
            (v >> 53) & 1, (v >> 52) & 1)


_PAT = 0x0007040600070406


def python_pde(v):
    """(present, rw, us, nx, large, frame, page size, memory type) of a 4-level PDE."""
    if not v & 1:
        return (0, 0, 0, 0, 0, 0, 0, None)
    large = (v >> 7) & 1
    if large:
        frame, size, pat = v & 0x000FFFFFFFE00000, 1 << 21, (v >> 12) & 1
    else:
        frame, size, pat = v & 0x000FFFFFFFFFF000, 0, 0
    index = (pat << 2) | (((v >> 4) & 1) << 1) | ((v >> 3) & 1)
    return (1, (v >> 1) & 1, (v >> 2) & 1, v >> 63, large, frame, size, (_PAT >> (8 * index)) & 0xFF)


def python_batch(buf, decode):
    return [decode(v) for (v,) in struct.iter_unpack("<Q", buf)]


def reference_descriptors(buf):
    return [ref_descriptor(v, None, "legacy") for (v,) in struct.iter_unpack("<Q", buf)]


def reference_pdes(buf):
    return [ref_paging(v, "4level", 2) for (v,) in struct.iter_unpack("<Q", buf)]


def check_same_facts(c_batch, reference_rows):
    """Every fact of a sample of rows must be equal, or the race is unfair."""
    step = max(1, len(reference_rows) // 2000)
    for i in range(0, len(reference_rows), step):
        ours, theirs = c_batch[i].to_dict(), reference_rows[i]
        for key, value in theirs.items():
            if ours.get(key) != value:
                raise SystemExit("disagreement at row %d, %s: C %r, reference %r"
                                 % (i, key, ours.get(key), value))


# --- measurement -----------------------------------------------------------------

clock = time.thread_time


def best_of(repeat, fn):
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = clock()
        result = fn()
        best = min(best, clock() - start)
    return best, result


def check_agreement(c_batch, py_rows, columns, applies=lambda row: True):
    """The two decoders must agree, or the ratio compares different work."""
    sample = range(0, len(py_rows), max(1, len(py_rows) // 2000))
    c_columns = {name: c_batch.column(name) for name, _ in columns}
    for i in sample:
        if not applies(py_rows[i]):
            continue
        for name, j in columns:
            if c_columns[name][i] != py_rows[i][j]:
                raise SystemExit("disagreement at row %d, field %s: C %r, Python %r"
                                 % (i, name, c_columns[name][i], py_rows[i][j]))


def single_decode_us(stmt, number=200000):
    return min(timeit.repeat(stmt, number=number, repeat=5, timer=clock)) / number * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rng = random.Random(2026)
    desc_buf = rng.randbytes(8 * args.count)
    pte_buf = rng.randbytes(8 * args.count)

    c_desc_s, c_desc = best_of(args.repeat, lambda: decode_descriptor_table(desc_buf, "legacy", "flat"))
    ref_desc_s, ref_desc = best_of(1, lambda: reference_descriptors(desc_buf))
    check_same_facts(c_desc, ref_desc)
    del ref_desc
    min_desc_s, min_desc = best_of(1, lambda: python_batch(desc_buf, python_descriptor))
    check_agreement(c_desc, min_desc, [("type", 1), ("dpl", 2)])
    # Gates have no base or limit: compare those on code and data segments.
    check_agreement(c_desc, min_desc, [("base", 4), ("limit", 5)],
                    lambda row: row[0] in ("code", "data"))
    del min_desc

    c_pte_s, c_pte = best_of(args.repeat, lambda: decode_paging_entries(pte_buf, "4level", 2))
    ref_pte_s, ref_pte = best_of(1, lambda: reference_pdes(pte_buf))
    check_same_facts(c_pte, ref_pte)
    del ref_pte
    min_pte_s, min_pte = best_of(1, lambda: python_batch(pte_buf, python_pde))
    check_agreement(c_pte, min_pte, [("frame", 5), ("page_size", 6)])
    del min_pte

    desc_us = single_decode_us(lambda: SegmentDescriptor.decode(0x00CF9B000000FFFF, None, "legacy"))
    pte_us = single_decode_us(lambda: PagingEntry.decode(0x80000000FEE000E3, "4level", 2))

    n = args.count
    for what, c_s, ref_s, min_s in (("descriptors", c_desc_s, ref_desc_s, min_desc_s),
                                    ("paging entries", c_pte_s, ref_pte_s, min_pte_s)):
        print("%s: %d in %.1f ms batch (%.1f ns each); reference model %.0f ms (%.0fx); "
              "minimal 10-field decoder %.0f ms (%.0fx)"
              % (what, n, c_s * 1e3, c_s / n * 1e9, ref_s * 1e3, ref_s / c_s, min_s * 1e3,
                 min_s / c_s))
    print("single decode from Python: SegmentDescriptor.decode %.2f us, PagingEntry.decode %.2f us"
          % (desc_us, pte_us))
    print("batch-vs-python=%.0f single-decode-us=%.2f" % (min(ref_desc_s / c_desc_s,
                                                              ref_pte_s / c_pte_s),
                                                          max(desc_us, pte_us)))


if __name__ == "__main__":
    main()
