"""Batch field extraction by layout (C core) against pure Python.

Reads five members of N ``_EPROCESS`` records (win10 22H2 x64 layout) from
one buffer, as psscan does for its candidates: ``extract_fields`` (one C
call) against two pure-Python ways, in the same run:

* ``struct.unpack_from`` per member per record with precomputed offsets:
  the least Python can do (the headline ratio);
* the :class:`ksinspect.windows.Struct` view, one per record (what a
  script would write with ksinspect and no batch API).

    python bench/fields.py [--count 200000] [--repeat 3]

The last line is exactly ``fields-records-per-s=N vs-unpack=R vs-struct=S``.
"""
import argparse
import os
import random
import struct
import time

from ksinspect.windows import Struct, load_layout
from ksinspect.windows.fields import extract_fields, resolve_field

FIELDS = ["UniqueProcessId", "ActiveProcessLinks.Flink", "InheritedFromUniqueProcessId",
          "Pcb.DirectoryTableBase", "Peb"]


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    layout = load_layout("win10-22h2-19045.2965-x64")
    size = layout.sizeof("_EPROCESS")
    stride = size + 64
    data = os.urandom(stride * args.count)
    # Candidates in ascending order, as a scan finds them, with irregular gaps.
    rng = random.Random(1)
    starts = sorted(i * stride + rng.randrange(0, 64, 8) for i in range(args.count))
    resolved = [resolve_field(layout, "_EPROCESS", f) for f in FIELDS]
    plan = [(r.offset, "<Q" if r.size == 8 else "<I") for r in resolved]

    def python_unpack():
        columns = [[] for _ in plan]
        for start in starts:
            for column, (offset, fmt) in zip(columns, plan):
                column.append(struct.unpack_from(fmt, data, start + offset)[0])
        return columns

    sample = starts[: max(1, args.count // 20)]

    def python_struct():
        rows = []
        for start in sample:
            s = Struct(layout, "_EPROCESS", memoryview(data)[start:start + size])
            rows.append((s["UniqueProcessId"], s["ActiveProcessLinks"]["Flink"],
                         s["InheritedFromUniqueProcessId"], s["Pcb"]["DirectoryTableBase"],
                         s["Peb"]))
        return rows

    c_result = extract_fields(layout, "_EPROCESS", FIELDS, data, starts)
    py_result = python_unpack()
    for i, name in enumerate(FIELDS):
        assert c_result[name].tolist() == py_result[i], name
    c_time = best(lambda: extract_fields(layout, "_EPROCESS", FIELDS, data, starts), args.repeat)
    unpack_time = best(python_unpack, args.repeat)
    struct_time = best(python_struct, args.repeat) * (len(starts) / len(sample))
    rate = args.count / c_time
    print("records: %d, fields: %d" % (args.count, len(FIELDS)))
    print("C extract_fields:        %8.1f ms" % (c_time * 1e3))
    print("Python struct.unpack:    %8.1f ms" % (unpack_time * 1e3))
    print("Python Struct view:      %8.1f ms (extrapolated from %d records)" % (
        struct_time * 1e3, len(sample)))
    print("fields-records-per-s=%d vs-unpack=%.1f vs-struct=%.1f" % (
        rate, unpack_time / c_time, struct_time / c_time))


if __name__ == "__main__":
    main()
