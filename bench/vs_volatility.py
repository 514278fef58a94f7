"""ksinspect's page walker against Volatility 3's Intel layers, on one image.

Both read the same physical memory (ksinspect's mmapped image: Volatility
gets a data layer that reads through it) through the same CR3:

* translation: N random mapped linear addresses, drawn (weighted by size)
  from ksinspect's own mapping list; ksinspect's batch path
  (``AddressSpace.translate_many``, one C call) against Volatility's
  ``layer.translate(va)`` for each;
* enumeration: every mapping of the address space, ksinspect's
  ``AddressSpace.mapping_table()`` (the C walk in resumable chunks into one
  table of records; Mapping objects built on access) against Volatility's
  ``layer.mapping(0, size, ignore_errors=True)`` consumed to the end; the
  streaming ``list(AddressSpace.mappings())``, which builds a Python object
  per range, is reported too;
* memory: the peak RSS while ksinspect enumerates (``--synthetic-gib N``
  also builds an N GiB sparse image mapped page by page and measures it).

Then it reports where the two disagree, and why when it can tell.

    pip install volatility3          # not a test dependency
    python bench/vs_volatility.py IMAGE [--cr3 X] [--mode M] [--registers F]
                                        [--count 1000000] [--synthetic-gib 1]

Volatility 3 has no 5-level (LA57) layer: for 5-level images this script
uses Intel32e with one more level (``Intel32eLA57`` below).

The last line is exactly ``translate-vs-volatility=R1 mapping-vs-volatility=R2``.
"""
import collections
import os
import re
import resource
import struct
import sys
import tempfile
import time
from array import array

from ksinspect.memory import open_image
from ksinspect.paging import AddressSpace

from _peers import (VOLATILITY_LAYERS, draw_addresses, image_parser, open_memory,
                    vol_exceptions, volatility_layer)

if volatility_layer is None:  # pragma: no cover - depends on the machine
    sys.exit("this benchmark needs Volatility 3: pip install volatility3")
exceptions = vol_exceptions


# --- measurements -----------------------------------------------------------------------------

def peak_rss_reset():
    """Reset the peak RSS (Linux: write 5 to clear_refs); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mib(n):
    return "%.1f MiB" % (n / (1 << 20))


def time_ksinspect_translate(space, vas, repeat):
    best, batch = None, None
    for _ in range(repeat):
        start = time.perf_counter()
        batch = space.translate_many(vas)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best, batch


def time_volatility_translate(layer, vas):
    results = [None] * len(vas)
    errors = {}
    texts = {}
    translate = layer.translate
    start = time.perf_counter()
    for i, va in enumerate(vas):
        try:
            results[i] = translate(va)[0]
        except exceptions.InvalidAddressException as exc:
            errors[i] = exc
    elapsed = time.perf_counter() - start
    # Keep the messages, not the exceptions (and their tracebacks).
    for i, exc in errors.items():
        text = refusal_text(exc)
        errors[i] = texts.setdefault(text, text)
    return elapsed, results, errors


def refusal_text(exc):
    """A Volatility exception's message with its numbers blanked, to group by."""
    return re.sub(r"0x[0-9a-fA-F]+", "X", str(exc) or type(exc).__name__)


def volatility_refusal(layer, va):
    try:
        layer.translate(va)
    except exceptions.InvalidAddressException as exc:
        text = refusal_text(exc)
        if "Page Fault at entry" in text:
            text += (" (its table could not be read whole, or all 512 entries are identical: "
                     "Volatility refuses such tables, e.g. the espfix aliases)")
        return text
    return "translates it, but mapping() left it out"


def region(va):
    return "%#x" % (va & ~((1 << 39) - 1))


def compare_translations(vas, ours, theirs, errors, memory):
    counts = collections.Counter()
    examples = {}
    for i, va in enumerate(vas):
        a, b = ours[i], theirs[i]
        if a == b:
            counts["agree" if a is not None else "both unmapped"] += 1
            continue
        if a is not None and b is None:
            exc = errors.get(i)
            why = ("physical memory not in the image" if not memory.contains(a, 1) else
                   "Volatility refused: %s" % exc)
            key = ("ksinspect only", why, region(va))
        elif a is None:
            key = ("Volatility only", "", region(va))
        else:
            key = ("different physical address", "", region(va))
        counts[key] += 1
        examples.setdefault(key, (va, a, b))
    return counts, examples


def interval_diff(ours, theirs):
    """Bytes by class over two sorted lists of (start, end, pa): only ours,
    only theirs, both with the same pa, both with different pa; plus
    example segments of each kind."""
    points = sorted({p for s, e, _ in ours for p in (s, e)} | {p for s, e, _ in theirs
                                                               for p in (s, e)})
    result = collections.Counter()
    examples = collections.defaultdict(list)
    i = j = 0
    for lo, hi in zip(points, points[1:]):
        while i < len(ours) and ours[i][1] <= lo:
            i += 1
        while j < len(theirs) and theirs[j][1] <= lo:
            j += 1
        a = ours[i] if i < len(ours) and ours[i][0] <= lo < ours[i][1] else None
        b = theirs[j] if j < len(theirs) and theirs[j][0] <= lo < theirs[j][1] else None
        if a is None and b is None:
            continue
        if a is not None and b is not None:
            kind = "same" if a[2] + (lo - a[0]) == b[2] + (lo - b[0]) else "different pa"
        else:
            kind = "ksinspect only" if b is None else "Volatility only"
        result[kind] += hi - lo
        if kind != "same" and len(examples[kind]) < 200:
            pa = (a or b)[2] + (lo - (a or b)[0])
            examples[kind].append((lo, hi, pa))
    return result, examples


def volatility_ranges(layer):
    out = []
    for offset, size, mapped, _msize, _name in layer.mapping(0, layer.maximum_address + 1,
                                                             ignore_errors=True):
        start = layer.canonicalize(offset) if hasattr(layer, "canonicalize") else offset
        out.append((start, start + size, mapped))
    out.sort()
    return out


def synthetic_image(gib, directory):
    """An N GiB sparse raw image: 4-level tables at the start map all of it with
    4 KiB pages at 0xffff888000000000 (every 16th page read-only)."""
    size = gib << 30
    pages = size >> 12
    pts = (pages + 511) // 512
    pds = (pts + 511) // 512
    pml4, pdpt, first_pd = 0x1000, 0x2000, 0x3000
    first_pt = first_pd + pds * 0x1000
    path = os.path.join(directory, "synthetic-%dgib.raw" % gib)
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.seek(pml4 + 8 * 0x111)
        fh.write(struct.pack("<Q", pdpt | 0x63))
        fh.seek(pdpt)
        fh.write(b"".join(struct.pack("<Q", first_pd + i * 0x1000 | 0x63) for i in range(pds)))
        for d in range(pds):
            fh.seek(first_pd + d * 0x1000)
            fh.write(b"".join(struct.pack("<Q", first_pt + (d * 512 + i) * 0x1000 | 0x63)
                              for i in range(min(512, pts - d * 512))))
        for t in range(pts):
            fh.seek(first_pt + t * 0x1000)
            base = t * 512
            fh.write(b"".join(struct.pack("<Q", ((base + i) << 12) | (0x61 if (base + i) % 16 == 0
                                                                      else 0x63) | 1 << 63)
                              for i in range(min(512, pages - base))))
    return path, pml4


def measure_memory(memory, space, label):
    baseline = rss()
    reset = peak_rss_reset()
    start = time.perf_counter()
    count = sum(1 for _ in space.mappings())
    elapsed = time.perf_counter() - start
    peak = peak_rss()
    print("  %s: %d ranges in %.3f s; peak RSS %s (%s before; %s)" % (
        label, count, elapsed, mib(peak), mib(baseline),
        "peak reset before the walk" if reset else "process-lifetime peak"))
    print("  image %s (file %s): the image is mmapped, only the page tables are touched"
          % (mib(memory.size), mib(memory.file_size)))
    return peak


def main(argv=None):
    parser = image_parser(__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--synthetic-gib", type=int, default=0,
                        help="also measure peak RSS on an N GiB synthetic image")
    args = parser.parse_args(argv)

    memory = open_memory(args)
    space = AddressSpace(memory, cr3=args.cr3, mode=args.mode)
    print("image %s: %s, %s in %d runs; %s paging, CR3 %#x" % (
        args.image, memory.format, mib(memory.size), len(memory.runs), space.mode.value,
        space.cr3))
    print("volatility layer: %s%s" % (VOLATILITY_LAYERS[space.mode.value].__name__,
                                      " (Intel32e plus a fifth level: Volatility has no LA57 "
                                      "layer)" if space.mode.value == "5level" else ""))

    print("\n[memory]")
    measure_memory(memory, space, "ksinspect mappings()")

    if args.synthetic_gib:
        # Before Volatility runs: its caches would dominate the process's RSS.
        print("\n[memory on a %d GiB synthetic image]" % args.synthetic_gib)
        with tempfile.TemporaryDirectory(prefix="ksinspect-bench-") as directory:
            path, cr3 = synthetic_image(args.synthetic_gib, directory)
            with open_image(path) as big:
                big_space = AddressSpace(big, cr3=cr3, mode="4level")
                measure_memory(big, big_space, "ksinspect mappings()")
                start = time.perf_counter()
                n = len(big_space.mapping_table())
                ks_big = time.perf_counter() - start
                big_layer = volatility_layer(big, big_space)
                start = time.perf_counter()
                m = len(volatility_ranges(big_layer))
                vol_big = time.perf_counter() - start
                print("  mapping_table(): %d ranges in %.3f s; Volatility mapping(): %d ranges "
                      "(it merges on physical contiguity alone) in %.3f s: %.0fx" % (
                          n, ks_big, m, vol_big, vol_big / ks_big))
                del big_layer

    # -- enumeration -------------------------------------------------------------------
    print("\n[enumerate every mapping]")
    table_times, stream_times = [], []
    for _ in range(max(args.repeat, 1)):
        start = time.perf_counter()
        table = space.mapping_table()
        table_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        maps = list(space.mappings())
        stream_times.append(time.perf_counter() - start)
    ks_map_time = min(table_times)
    assert len(table) == len(maps)
    layer = volatility_layer(memory, space)
    start = time.perf_counter()
    vol_ranges = volatility_ranges(layer)
    vol_map_time = time.perf_counter() - start
    print("  ksinspect : %8.3f s  %d ranges (%s mapped): mapping_table(), the C walk into "
          "one table of records" % (ks_map_time, len(maps), mib(sum(m.size for m in maps))))
    print("  ksinspect : %8.3f s  the same as list(mappings()): a Mapping object per range "
          "(%.1fx Volatility)" % (min(stream_times), vol_map_time / min(stream_times)
                                  if min(stream_times) else 0))
    print("  volatility: %8.3f s  %d ranges (%s mapped)" % (
        vol_map_time, len(vol_ranges), mib(sum(e - s for s, e, _ in vol_ranges))))
    ours = [(m.start, m.end, m.pa) for m in maps]
    diff, examples = interval_diff(ours, vol_ranges)
    print("  agreement: %s the same; %s only in ksinspect; %s only in Volatility; %s with "
          "different physical addresses" % (mib(diff["same"]), mib(diff["ksinspect only"]),
                                            mib(diff["Volatility only"]),
                                            mib(diff["different pa"])))
    for kind in ("ksinspect only", "Volatility only", "different pa"):
        segs = examples.get(kind, [])
        if not segs:
            continue
        why = collections.OrderedDict()
        for lo, hi, pa in segs:
            if kind == "ksinspect only" and not memory.contains(pa, 1):
                reason = "physical memory not in the image (Volatility drops such pages)"
            elif kind == "ksinspect only":
                reason = "Volatility: %s" % volatility_refusal(layer, lo)
            else:
                reason = "unexplained"
            why.setdefault(reason, []).append((lo, hi, pa))
        for reason, group in why.items():
            print("  %s: %d of the first %d segments: %s; e.g. %s" % (
                kind, len(group), len(segs), reason,
                ", ".join("%#x-%#x->%#x" % seg for seg in group[:2])))

    # -- translation ---------------------------------------------------------------------
    print("\n[translate %d random mapped addresses]" % args.count)
    vas = array("Q", draw_addresses(maps, args.count, args.seed))
    ks_time, batch = time_ksinspect_translate(space, vas, args.repeat)
    vol_time, vol_pas, vol_errors = time_volatility_translate(layer, vas)
    ours_pas = batch.pas()
    print("  ksinspect : %8.3f s  (%.0f ns per address, batch of %d)" % (
        ks_time, ks_time / len(vas) * 1e9, len(vas)))
    print("  volatility: %8.3f s  (%.2f us per address)" % (vol_time, vol_time / len(vas) * 1e6))
    counts, examples = compare_translations(vas, ours_pas, vol_pas, vol_errors, memory)
    print("  agree: %d; both unmapped: %d" % (counts["agree"], counts["both unmapped"]))
    grouped = collections.Counter()
    for key, n in counts.items():
        if isinstance(key, tuple):
            grouped[key[:2]] += n
    for (kind, why), n in grouped.most_common():
        regions = sorted({key[2] for key in counts if isinstance(key, tuple)
                          and key[:2] == (kind, why)})
        example = next(examples[key] for key in examples if key[:2] == (kind, why))
        print("  %s: %d addresses (%s) in 512 GiB regions %s; e.g. va %#x -> ksinspect %s, "
              "Volatility %s" % (kind, n, why or "-", ", ".join(regions[:4]), example[0],
                                 "%#x" % example[1] if example[1] is not None else "unmapped",
                                 "%#x" % example[2] if example[2] is not None else "refused"))

    r1 = vol_time / ks_time
    r2 = vol_map_time / ks_map_time
    print("translate-vs-volatility=%.0f mapping-vs-volatility=%.1f" % (r1, r2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
