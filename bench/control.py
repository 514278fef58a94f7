"""Batch decoding of control registers: the C core against pure Python.

Decodes N random RFLAGS values (and N CR0 values) in one C call
(``decode_control_batch`` over an ``array('Q')``, zero copy in, one
struct per value out) and the same values with two pure-Python decoders:

* tests/reference_control.py, the reference model written from the SDM
  that the differential tests compare with (same facts: every flag, IOPL,
  reserved bits, anomalies); this script re-checks a sample first;
* a minimal decoder: the set flags' names only (a lower bound).

No peer tool decodes CR0/CR4/EFER/RFLAGS values in bulk (Volatility and
drgn print registers raw; capstone and friends decode instructions), so
the baselines are Python. Ratios are measured in the same run.

    python bench/control.py [--count 1000000] [--repeat 3]

The last line is ``control-batch-vs-reference=R control-batch-ns=N``.
"""
import argparse
import os
import random
import sys
import time
from array import array

from ksinspect._native import control as _native_control
from ksinspect.x86.control import RFLAGS, decode_control_batch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from reference_control import NAMES, ref_control  # noqa: E402

_RFLAGS = sorted(NAMES["rflags"].items())


def minimal_rflags(v):
    return [name for bit, name in _RFLAGS if v >> bit & 1]


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    rng = random.Random(17)
    values = array("Q", (rng.getrandbits(22) | 2 for _ in range(args.count)))
    kind = _native_control.REGISTERS["rflags"]

    sample = decode_control_batch("rflags", list(values[:2000]))
    assert [v.to_dict() for v in sample] == [ref_control("rflags", v) for v in values[:2000]]

    c = best(lambda: _native_control.decode_batch(kind, values, "RFLAGS"), args.repeat)
    ref_n = max(args.count // 20, 1)        # the reference is slow: time a slice, scale
    ref = best(lambda: [ref_control("rflags", v) for v in values[:ref_n]], 1) * args.count / ref_n
    mini = best(lambda: [minimal_rflags(v) for v in values], 1)
    one = best(lambda: [RFLAGS.decode(v) for v in values[:100000]], 1) / 100000
    cr0 = best(lambda: _native_control.decode_batch(_native_control.REGISTERS["cr0"], values,
                                                    "CR0"), args.repeat)
    print("values: %d random RFLAGS (bit 1 set), best of %d" % (args.count, args.repeat))
    print("C batch (RFLAGS)        %8.1f ms  %6.1f ns/value" % (c * 1e3, c / args.count * 1e9))
    print("C batch (CR0)           %8.1f ms" % (cr0 * 1e3))
    print("reference model         %8.1f ms  (%d values timed, scaled)  ratio %.0fx" % (
        ref * 1e3, ref_n, ref / c))
    print("minimal Python decoder  %8.1f ms  ratio %.1fx" % (mini * 1e3, mini / c))
    print("RFLAGS.decode (one call from Python) %.2f us" % (one * 1e6))
    print("control-batch-vs-reference=%.0f control-batch-ns=%.1f" % (ref / c,
                                                                      c / args.count * 1e9))


if __name__ == "__main__":
    main()
