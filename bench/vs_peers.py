"""Per-call speed: ksinspect against MemProcFS and Volatility 3 on one image.

A forensic script calls one address at a time: ``space.translate(va)``,
``space.read(va, 8)``, and iterates ``space.mappings()``. This script races
those calls, on the same image and the same random mapped linear addresses
(drawn weighted by size from ksinspect's mapping list), against

* MemProcFS (PyPI ``memprocfs``, a C library): given a flat raw copy of the
  image's physical memory (written to a temporary sparse file) and the same
  CR3: ``vmm.process(1).memory.virt2phys(va)``, ``.memory.read(va, n)`` and
  ``.maps.pte()``. It does not handle 5-level paging, and on the shipped
  32-bit and PAE guests its ``virt2phys`` fails for every address: the
  script says so and races Volatility alone there;
* Volatility 3 (PyPI ``volatility3``): its Intel layer over the same
  physical memory (``layer.translate(va)``, ``layer.mapping()``).

It checks that the tools agree on every address both translate (and on the
bytes both read), reports where they differ and why, then prints one line
per figure and, last, exactly::

    translate-us=T read-us=R vs-memprocfs-translate=A vs-memprocfs-read=B mappings-vs-volatility=C mappings-vs-memprocfs=D

T and R are ksinspect's microseconds per call on a page already walked
(the second pass over the addresses; the first pass, where every page is
walked for the first time, is printed too, for every tool); A and B are
MemProcFS's time over ksinspect's on the same pass (above 1: ksinspect is
faster); C and D are Volatility's and MemProcFS's time to list every
mapping as Python objects over ksinspect's ``list(space.mappings())``.
A peer that is not installed or cannot run on the image gives ``n/a``.

    pip install memprocfs volatility3 numpy     # not test dependencies
    python bench/vs_peers.py IMAGE [--cr3 X] [--mode M] [--count 200000]

Times are this thread's CPU time (the machine may be shared); the
``ksinspect maps`` figures, subprocesses, are wall time, best of 3, with
ksinspect's bytecode cached as an installed package has it (when
PYTHONDONTWRITEBYTECODE is set, the script compiles the package once first:
it writes ``__pycache__`` beside the sources).
"""
import collections
import os
import random
import subprocess
import sys
import tempfile
import time
from array import array

from ksinspect.errors import InvalidAddressError
from ksinspect.paging import UNMAPPED, AddressSpace
from ksinspect.x86 import PagingEntry, SegmentDescriptor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _peers import (clock, draw_addresses, image_parser, open_memory, timed,  # noqa: E402
                    vol_exceptions, volatility_layer)

try:
    import memprocfs
except ImportError:  # pragma: no cover - depends on the machine
    memprocfs = None


def per_call(fn, items, catch=()):
    """(seconds per call, results) of fn over items, one call each; the loop is
    the same for every tool (fn is the tool's own callable, not a wrapper)."""
    out = []
    append = out.append
    start = clock()
    for item in items:
        try:
            append(fn(item))
        except catch:
            append(None)
    return (clock() - start) / len(items), out


def per_call_attr(fn, items, catch=()):
    """per_call for a function whose result's ``pa`` is the answer (translate)."""
    out = []
    append = out.append
    start = clock()
    for item in items:
        try:
            append(fn(item).pa)
        except catch:
            append(None)
    return (clock() - start) / len(items), out


def per_call_read(fn, items, n, catch=()):
    out = []
    append = out.append
    start = clock()
    for item in items:
        try:
            append(fn(item, n))
        except catch:
            append(None)
    return (clock() - start) / len(items), out


def raw_copy(memory, directory):
    """A sparse flat file holding the image's physical memory at its addresses."""
    path = os.path.join(directory, "physical.raw")
    with open(path, "wb") as fh:
        for run in memory.runs:
            fh.seek(run.start)
            for at in range(0, run.length, 1 << 24):
                n = min(1 << 24, run.length - at)
                fh.write(memory.read(run.start + at, n))
    return path


def open_memprocfs(memory, space, directory):
    """(process, vmm, why-not): MemProcFS over a raw copy, or the reason it cannot run."""
    if memprocfs is None:
        return None, None, "not installed (pip install memprocfs)"
    if space.mode.value == "5level":
        return None, None, "does not handle 5-level paging"
    raw = raw_copy(memory, directory)
    vmm = memprocfs.Vmm(["-device", "file://" + raw, "-cr3", "%#x" % space.cr3,
                         "-waitinitialize", "-norefresh"])
    process = vmm.process(1)
    return process, vmm, None


def compare(vas, ours, theirs, memory, who):
    """Agreement counts; differences grouped with the reason when it is known."""
    counts = collections.Counter()
    examples = {}
    for va, a, b in zip(vas, ours, theirs):
        if a == b:
            counts["agree"] += 1
            continue
        if a is not None and b is None:
            why = ("%s refused it; its physical memory is not in the image" % who
                   if not memory.contains(a, 1) else "%s refused it" % who)
        elif a is None:
            why = "only %s translates it" % who
        else:
            why = "different physical addresses"
        counts[why] += 1
        examples.setdefault(why, (va, a, b))
    return counts, examples


def report_agreement(label, counts, examples):
    text = ", ".join("%s: %d" % (k, n) for k, n in counts.most_common())
    print("  agreement with %s: %s" % (label, text))
    for why, (va, a, b) in examples.items():
        print("    e.g. %s: va %#x -> ksinspect %s, %s %s" % (
            why, va, "%#x" % a if a is not None else "unmapped", label,
            "%#x" % b if b is not None else "refused"))


def timed_process(cmd, env=None):
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def process_cpu(pid):
    """CPU seconds (user + system) a running process has used, from
    /proc/PID/stat (clock ticks); None where there is no /proc."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def maps_cli(image, args_extra, fmt, env=None, cwd=None):
    """(seconds to the first data row, total seconds, the child's CPU seconds
    when the first row arrived) of `ksinspect maps` as a subprocess."""
    cmd = [sys.executable, "-m", "ksinspect", "maps", image, "--format", fmt] + args_extra
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            cwd=cwd)
    first = first_cpu = None
    skip = 2 if fmt == "table" else 0          # the header and its rule
    for line in proc.stdout:
        if skip:
            skip -= 1
            continue
        if first is None:
            first = time.perf_counter() - start
            first_cpu = process_cpu(proc.pid)
    proc.wait()
    return first, time.perf_counter() - start, first_cpu


def bytecode_env():
    """The environment for the `ksinspect maps` runs, with ksinspect's bytecode
    cached as an installed package has it (pip compiles it at install): one
    warm-up run writes it when PYTHONDONTWRITEBYTECODE kept it from being
    written. Returns (env, what was done, in words)."""
    env = dict(os.environ)
    if not env.pop("PYTHONDONTWRITEBYTECODE", None):
        return None, "bytecode as the environment leaves it"
    package = os.path.dirname(os.path.abspath(sys.modules["ksinspect"].__file__))
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return env, ("bytecode cached (PYTHONDONTWRITEBYTECODE was set: each run would "
                 "compile every module it imports first)")


def first_mapping(args):
    """Seconds (this thread's CPU) from opening the image to the first Mapping of
    space.mappings(), and from the AddressSpace to it."""
    start = clock()
    memory = open_memory(args)
    space = AddressSpace(memory, cr3=args.cr3, mode=args.mode)
    built = clock()
    next(iter(space.mappings()))
    end = clock()
    memory.close()
    return end - start, end - built


def fmt_ratio(x):
    return "n/a" if x is None else "%.1f" % x


def main(argv=None):
    parser = image_parser(__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000,
                        help="addresses for the per-call races (default 200000)")
    parser.add_argument("--volatility-count", type=int, default=20_000,
                        help="addresses Volatility translates one by one (default 20000)")
    parser.add_argument("--batch", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-cli", action="store_true", help="skip the `ksinspect maps` timing")
    args = parser.parse_args(argv)

    lib_first = min(first_mapping(args) for _ in range(3))
    memory = open_memory(args)
    space = AddressSpace(memory, cr3=args.cr3, mode=args.mode)
    maps = list(space.mappings())
    vas = draw_addresses(maps, args.count, args.seed)
    print("image %s: %s, %d ranges mapped; %s paging, CR3 %#x; %d random mapped addresses"
          % (args.image, memory.format, len(maps), space.mode.value, space.cr3, len(vas)))

    with tempfile.TemporaryDirectory(prefix="ksinspect-peers-") as directory:
        process, vmm, why_not = open_memprocfs(memory, space, directory)
        if process is not None:
            try:
                process.memory.virt2phys(vas[0])
            except RuntimeError as exc:
                why_not = "its virt2phys fails on this image (%s)" % exc
                vmm.close()
                process = vmm = None
        print("memprocfs: %s" % ("memprocfs %s over a raw copy of the physical memory"
                                 % getattr(memprocfs, "__version__", "")
                                 if process is not None else why_not))
        layer = None
        if volatility_layer is not None:
            layer = volatility_layer(memory, space)
        print("volatility: %s" % ("Intel layer %s" % type(layer).__name__ if layer is not None
                                  else "not installed (pip install volatility3)"))

        # -- translate one address ----------------------------------------------------
        print("\n[translate one address: space.translate(va).pa]")
        fresh = AddressSpace(memory, cr3=args.cr3, mode=args.mode)
        tr = fresh.translate
        ks_cold, ours = per_call_attr(tr, vas)
        ks_warm = min(per_call_attr(tr, vas)[0] for _ in range(3))
        print("  ksinspect : %6.3f us first pass (every page walked), %6.3f us second pass"
              % (ks_cold * 1e6, ks_warm * 1e6))
        mp_warm = mp_read = None
        if process is not None:
            v2p = process.memory.virt2phys
            mp_cold, theirs = per_call(v2p, vas, RuntimeError)
            mp_warm = min(per_call(v2p, vas, RuntimeError)[0] for _ in range(3))
            print("  memprocfs : %6.3f us first pass, %6.3f us second pass: ksinspect %.1fx "
                  "and %.1fx faster" % (mp_cold * 1e6, mp_warm * 1e6, mp_cold / ks_cold,
                                        mp_warm / ks_warm))
            report_agreement("MemProcFS", *compare(vas, ours, theirs, memory, "MemProcFS"))
        hot = vas[:1000] * max(1, len(vas) // 1000)
        ks_hot = min(per_call_attr(tr, hot)[0] for _ in range(3))
        if process is not None:
            mp_hot = min(per_call(v2p, hot, RuntimeError)[0] for _ in range(3))
            print("  on a working set of 1,000 pages (a script walking structures): ksinspect "
                  "%.3f us, memprocfs %.3f us (%.1fx)" % (ks_hot * 1e6, mp_hot * 1e6,
                                                        mp_hot / ks_hot))
        else:
            print("  on a working set of 1,000 pages: ksinspect %.3f us" % (ks_hot * 1e6))
        if layer is not None:
            sub = vas[:args.volatility_count]
            vol_time, pairs = per_call(layer.translate, sub,
                                       vol_exceptions.InvalidAddressException)
            theirs = [None if p is None else p[0] for p in pairs]
            print("  volatility: %6.3f us (%d addresses): ksinspect %.0fx faster (second pass)"
                  % (vol_time * 1e6, len(sub), vol_time / ks_warm))
            report_agreement("Volatility", *compare(sub, ours[:len(sub)], theirs, memory,
                                                    "Volatility"))

        # -- read 8 bytes ------------------------------------------------------------------
        print("\n[read 8 bytes at a linear address: space.read(va, 8)]")
        fresh = AddressSpace(memory, cr3=args.cr3, mode=args.mode)
        rd = fresh.read
        ks_read_cold, our_bytes = per_call_read(rd, vas, 8, InvalidAddressError)
        ks_read = min(per_call_read(rd, vas, 8, InvalidAddressError)[0] for _ in range(3))
        refused = sum(1 for b in our_bytes if b is None)
        print("  ksinspect : %6.3f us first pass, %6.3f us second pass (%d addresses refused "
              "with InvalidAddressError: their physical memory is not in the image)"
              % (ks_read_cold * 1e6, ks_read * 1e6, refused))
        if process is not None:
            mread = process.memory.read
            mp_read_cold, their_bytes = per_call_read(mread, vas, 8, RuntimeError)
            mp_read = min(per_call_read(mread, vas, 8, RuntimeError)[0] for _ in range(3))
            same = sum(1 for a, b in zip(our_bytes, their_bytes) if a is not None and a == b)
            zero_filled = sum(1 for a, b in zip(our_bytes, their_bytes)
                              if a is None and b == b"\0" * 8)
            print("  memprocfs : %6.3f us first pass, %6.3f us second pass: ksinspect %.1fx "
                  "and %.1fx faster; same bytes at %d of the %d addresses both read; it "
                  "zero-fills %d that ksinspect refuses" % (
                      mp_read_cold * 1e6, mp_read * 1e6, mp_read_cold / ks_read_cold,
                      mp_read / ks_read, same, len(vas) - refused, zero_filled))

        # -- every mapping as Python objects ------------------------------------------------
        print("\n[every mapping as Python objects]")
        ks_maps = min(timed(lambda: list(space.mappings())) for _ in range(3))
        ks_table = min(timed(lambda: list(space.mapping_table())) for _ in range(3))
        print("  ksinspect : %6.3f s  list(space.mappings()), %d Mapping objects; %.3f s "
              "list(space.mapping_table()); the first Mapping %.4f s after open_image() "
              "(%.4f s after AddressSpace())" % (ks_maps, len(maps), ks_table, lib_first[0],
                                                 lib_first[1]))
        vs_vol = vs_mp = None
        if process is not None:
            mp_maps = timed(lambda: process.maps.pte())
            n = len(process.maps.pte())
            vs_mp = mp_maps / ks_maps
            print("  memprocfs : %6.3f s  maps.pte(), %d dicts: ksinspect %.1fx faster"
                  % (mp_maps, n, vs_mp))
        if layer is not None:
            vol_maps = timed(lambda: list(layer.mapping(0, layer.maximum_address + 1,
                                                        ignore_errors=True)))
            n = len(list(layer.mapping(0, layer.maximum_address + 1, ignore_errors=True)))
            vs_vol = vol_maps / ks_maps
            print("  volatility: %6.3f s  mapping(), %d tuples%s: ksinspect %.1fx faster" % (
                vol_maps, n, " (it leaves out tables it refuses: the espfix aliases)"
                if space.mode.value in ("4level", "5level") else "", vs_vol))
        if vmm is not None:
            vmm.close()

    # -- decodes and batches (ksinspect alone) --------------------------------------------
    print("\n[one decode from Python, distinct values]")
    rng = random.Random(args.seed)
    ptes = [rng.getrandbits(52) & ~0xFFF | 0x63 for _ in range(100_000)]
    descs = [rng.getrandbits(64) | 1 << 47 for _ in range(100_000)]
    def decode_each(decode, values, *args):
        # One value at a time, each dropped before the next (as a loop in a
        # script): a list of 100,000 values would time the garbage collector.
        for value in values:
            decode(value, *args)
    pte_us = min(timed(lambda: decode_each(PagingEntry.decode, ptes, "4level", 1))
                 for _ in range(3)) / len(ptes) * 1e6
    desc_us = min(timed(lambda: decode_each(SegmentDescriptor.decode, descs, None, "long"))
                  for _ in range(3)) / len(descs) * 1e6
    print("  PagingEntry.decode %.3f us, SegmentDescriptor.decode %.3f us" % (pte_us, desc_us))

    print("\n[translate_many: %d addresses in one call]" % args.batch)
    batch = array("Q", (vas[i % len(vas)] for i in range(args.batch)))
    many = min(timed(lambda: space.translate_many(batch)) for _ in range(3))
    out = array("Q", bytes(8 * len(batch)))
    bare = min(timed(lambda: space.physical_addresses(batch, out)) for _ in range(3))
    check = space.translate_many(batch[:10000]).pas()
    assert [None if p == UNMAPPED else p for p in out[:10000]] == check
    print("  translate_many %.1f ns an address; physical_addresses(vas, out) into an "
          "array('Q') %.1f ns an address (zero copy in and out)"
          % (many / len(batch) * 1e9, bare / len(batch) * 1e9))
    try:
        import numpy
        npv = numpy.frombuffer(batch, dtype=numpy.uint64)
        npo = numpy.empty_like(npv)
        np_time = min(timed(lambda: space.physical_addresses(npv, npo)) for _ in range(3))
        print("  physical_addresses on numpy uint64 arrays %.1f ns an address"
              % (np_time / len(batch) * 1e9))
    except ImportError:
        pass

    if not args.no_cli:
        print("\n[ksinspect maps IMAGE]")
        extra = [] if args.cr3 is None else ["--cr3", "%x" % args.cr3]
        extra += [] if args.mode is None else ["--mode", args.mode]
        env, how = bytecode_env()
        baseline = min(timed_process([sys.executable, "-c", "pass"], env) for _ in range(3))
        runs = [maps_cli(args.image, extra, "table", env) for _ in range(3)]
        first = min(r[0] or 0 for r in runs)
        total = min(r[1] for r in runs)
        cpus = [r[2] for r in runs if r[2] is not None]
        jsonl = min(maps_cli(args.image, extra, "jsonl", env)[1] for _ in range(3))
        print("  table: first row after %.2f s (best of 3; `python -c pass` takes %.2f s)%s, "
              "whole table %.2f s; jsonl %.2f s (table/jsonl %.2f); %s"
              % (first, baseline, ", the process had used %.2f s of CPU by then" % min(cpus)
                 if cpus else "", total, jsonl, total / jsonl, how))

    print("translate-us=%.2f read-us=%.2f vs-memprocfs-translate=%s vs-memprocfs-read=%s "
          "mappings-vs-volatility=%s mappings-vs-memprocfs=%s" % (
              ks_warm * 1e6, ks_read * 1e6,
              fmt_ratio(mp_warm / ks_warm if mp_warm else None),
              fmt_ratio(mp_read / ks_read if mp_read else None),
              fmt_ratio(vs_vol), fmt_ratio(vs_mp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
