"""psscan throughput: the C scan over a 1 GiB image against a pure-Python scan.

Builds (or takes) a raw image with EPROCESS structures planted from a layout,
then:

* times ``ksinspect.windows.psscan.scan_memory`` (the C scan over the
  mmapped file in 64 MiB chunks) over the whole image, best of --repeat runs
  with the file in the page cache;
* times a pure-Python scan of the same constraints (``bytes.find`` for the
  anchor byte, then the field checks with ``int.from_bytes``) over the first
  --python-mb MiB only, and extrapolates it to MB/s (it would take minutes
  over the whole image);
* checks that both find the same candidates in that slice, and that the C
  scan finds exactly the planted structures in the whole image.

The background is random bytes with zero pages mixed in, plus decoys: words
that pass the anchor test but not the field checks.

    python bench/psscan.py [IMAGE] [--size-mb 1024] [--layout win10-22h2-x64]

The image is written to /tmp (not kept in the repository) and removed
unless --keep. The last line is exactly ``psscan-mb-per-s=N vs-python=R``.
"""
import argparse
import mmap
import os
import random
import struct
import sys
import time

from ksinspect._native.scan import ALIGNED, CSTRING, MASKED_EQUAL, RANGE, ZERO_OK
from ksinspect.memory import open_image
from ksinspect.windows import load_layout
from ksinspect.windows.psscan import eprocess_constraints, scan_memory

MB = 1 << 20


def template(layout, pid):
    """One EPROCESS that passes every constraint, from the layout's offsets."""
    spec, _ = eprocess_constraints(layout)
    data = bytearray(layout.sizeof("_EPROCESS"))
    anchor_at, mask, value = spec.anchor
    old = struct.unpack_from("<I", data, anchor_at)[0]
    struct.pack_into("<I", data, anchor_at, (old & ~mask) | value)
    kernel = 0xFFFFFA8000000000 if layout.pointer_size == 8 else 0x85000000
    for offset, length, kind, flags, a, b in spec.checks:
        if kind == RANGE:
            v = kernel + 0x1000 + offset
        elif kind == ALIGNED:
            v = pid if flags & ZERO_OK else 0x1AA000
        elif kind == MASKED_EQUAL:
            v = a
        else:
            name = b"bench%d.exe" % (pid % 1000)
            data[offset:offset + length] = name[:length - 1].ljust(length, b"\0")
            continue
        data[offset:offset + length] = v.to_bytes(length, "little")
    return bytes(data)


def build(path, size, layout, count, seed=1):
    """A raw image: random background, zero pages, decoys, planted EPROCESSes."""
    rng = random.Random(seed)
    spec, _ = eprocess_constraints(layout)
    noise = os.urandom(16 * MB)
    with open(path, "wb") as fh:
        fh.truncate(size)
    with open(path, "r+b") as fh:
        view = mmap.mmap(fh.fileno(), size)
        try:
            for at in range(0, size, 16 * MB):
                if (at // (16 * MB)) % 4 == 3:
                    continue                               # a quarter of the image stays zero
                n = min(16 * MB, size - at)
                view[at:at + n] = noise[:n]
            anchor_at, mask, value = spec.anchor
            for _ in range(count * 20):                    # decoys: the anchor word alone
                at = rng.randrange(0, size - 4096) & ~(spec.align - 1)
                old = struct.unpack_from("<I", view, at + anchor_at)[0]
                struct.pack_into("<I", view, at + anchor_at, (old & ~mask) | value)
            planted = set()
            slot = max(size // count, 8192)
            for i in range(count):
                at = (i * slot + rng.randrange(0, slot - 4096)) & ~(spec.align - 1)
                if at + 4096 >= size:
                    break
                data = template(layout, 4 * (i + 1))
                view[at:at + len(data)] = data
                planted.add(at)
            view.flush()
        finally:
            view.close()
    return planted


def python_scan(data, base, spec):
    """The same constraints in plain Python: find the anchor byte, then check."""
    anchor_at, mask, value = spec.anchor
    first = value & 0xFF
    size, align = spec.size, spec.align
    end = len(data) - size + 1
    hits = []
    needle = bytes([first])
    pos = data.find(needle, anchor_at)
    while pos != -1:
        at = pos - anchor_at
        if at >= end:
            break
        if (base + at) % align == 0:
            word = int.from_bytes(data[at + anchor_at:at + anchor_at + 4], "little")
            if word & mask == value and _fields(data, at, spec.checks):
                hits.append(base + at)
        pos = data.find(needle, pos + 1)
    return hits


def _fields(data, at, checks):
    for offset, length, kind, flags, a, b in checks:
        field = data[at + offset:at + offset + length]
        if kind == CSTRING:
            nul = field.find(b"\0")
            if nul < a or any(c < 0x20 or c > 0x7E for c in field[:nul]):
                return False
            continue
        v = int.from_bytes(field, "little")
        if kind == MASKED_EQUAL:
            ok = v & b == a
        elif kind == RANGE:
            ok = a <= v <= b
        else:
            ok = not v & a and v <= b and (v or flags & ZERO_OK)
        if not ok:
            return False
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image", nargs="?", help="an existing raw image (default: build one)")
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--layout", default="win10-22h2-19045.2965-x64")
    parser.add_argument("--count", type=int, default=2000, help="EPROCESSes to plant")
    parser.add_argument("--python-mb", type=int, default=32,
                        help="MiB the pure-Python scan covers (extrapolated)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the built image")
    args = parser.parse_args(argv)

    layout = load_layout(args.layout)
    spec, constraints = eprocess_constraints(layout)
    planted = None
    path = args.image
    if path is None:
        path = "/tmp/ksinspect-psscan-bench-%d.raw" % os.getpid()
        t0 = time.perf_counter()
        planted = build(path, args.size_mb * MB, layout, args.count)
        print("built %s: %d MiB, %d EPROCESS planted (%s), in %.1f s" % (
            path, args.size_mb, len(planted), layout.name, time.perf_counter() - t0))
    try:
        with open_image(path) as memory:
            size = memory.size
            print("image: %d MiB in %d runs; layout %s; %d constraints" % (
                size // MB, len(memory.runs), layout.name, len(constraints)))
            times, hits = [], None
            for _ in range(max(args.repeat, 1)):
                t0 = time.perf_counter()
                found, anchors = scan_memory(memory, spec)
                times.append(time.perf_counter() - t0)
                hits = found
            best = min(times)
            c_rate = size / MB / best
            print("C scan: %d candidates (%d anchor words) in %.3f s: %.0f MB/s (best of %d; "
                  "first run, mapping the pages in: %.0f MB/s)" % (
                      len(hits), anchors, best, c_rate, len(times), size / MB / times[0]))
            if planted is not None:
                if set(hits) != planted:
                    print("MISMATCH: the C scan found %d, %d planted" % (len(hits), len(planted)))
                    return 1
                print("the C scan found exactly the %d planted structures" % len(planted))

            run0 = memory.runs[0]
            n = min(args.python_mb * MB, run0.length)
            data = bytes(memory.buffer[run0.offset:run0.offset + n])
            t0 = time.perf_counter()
            py_hits = python_scan(data, run0.start, spec)
            py_time = time.perf_counter() - t0
            py_rate = n / MB / py_time
            c_slice = sorted(h for h in hits if run0.start <= h <= run0.start + n - spec.size)
            agree = py_hits == c_slice
            print("pure-Python scan over the first %d MiB: %d candidates in %.2f s: %.1f MB/s "
                  "(extrapolated to the image: %.0f s); same candidates as C: %s" % (
                      n // MB, len(py_hits), py_time, py_rate, size / MB / py_rate,
                      "yes" if agree else "NO"))
            if not agree:
                return 1
    finally:
        if args.image is None and not args.keep:
            os.unlink(path)
    print("psscan-mb-per-s=%d vs-python=%.0f" % (c_rate, c_rate / py_rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
