#!/usr/bin/env python3
"""Write the seed corpora of the fuzz harnesses: tests/fuzz/corpus/<harness>/.

Seeds are real structures, encoded in each harness's input layout (the
comments at the top of tests/fuzz/fuzz_*.c and fuzz_common.h):

* descriptors: the GDT and IDT of the shipped QEMU guests (x86-64 4-level,
  i386), read through their page tables; Linux's selectors;
* paging entries: the top-level table CR3 names in each shipped guest, and
  the entries quoted in README.md;
* DR6 / DR7: the values of README.md's examples;
* walker images: page tables from tests/builders/pagetable_builder.py in every mode
  (4 KiB, large and huge pages, NX, user/supervisor), plus hostile shapes:
  a self-mapping PML4 (the Windows self-map), a PDPT entry that loops back
  to the PML4, entries pointing past the end of the image, a PAE PDPT at a
  32-byte offset.

Run from the repository root with the package installed:
``python tests/fuzz/make_corpus.py``. It replaces the seeds and keeps the
``regress-*`` files: inputs that once found a bug (see tests/fuzz/README.md).
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))

from builders.pagetable_builder import NX, P, PS, RW, US, PageTableBuilder  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")
QEMU = os.path.join(ROOT, "tests", "data", "qemu")
MODE_CODE = {"32": 0, "pae": 1, "4level": 2, "5level": 3}
PAT_DEFAULT = 0x0007040600070406
HEADER = 184


def walker_input(cr3, mode, runs, vas, image, options=0b111, param=2, maxphyaddr=52 - 32,
                 callback=False):
    """One input in the layout of fuzz_common.h (runs: (start, length, offset))."""
    assert len(runs) <= 4 and len(vas) <= 8
    flags = len(runs) | (8 if callback else 0)
    head = struct.pack("<QBBBBIQ", cr3, MODE_CODE[mode], maxphyaddr, options, flags, param,
                       PAT_DEFAULT)
    for i in range(4):
        head += struct.pack("<QQQ", *(runs[i] if i < len(runs) else (0, 0, 0)))
    head += b"".join(struct.pack("<Q", v) for v in list(vas) + [0] * (8 - len(vas)))
    assert len(head) == HEADER
    return head + image


def compact(builder, limit=None):
    """(runs, image bytes): the builder's pages packed back to back."""
    runs, image = [], b""
    for pa, data in builder.runs(limit):
        runs.append((pa, len(data), len(image)))
        image += data
    return runs, image


def builder_seeds():
    seeds = {}

    b = PageTableBuilder("4level")
    b.map(0xFFFF888000000000, 0x200000, size=2 << 20, writable=False)
    b.map(0x00007F0000001000, 0x9000, nx=True)
    b.map(0xFFFFFFFF80000000, 0x40000000, size=1 << 30, user=False)
    b.map(0x00007F0000002000, 0xA000, table_rights={4: {"writable": False}})
    b.write_phys(0x9000, b"fuzz seed: a mapped data page")
    seeds["4level"] = (b, [0xFFFF888000000000, 0x00007F0000001234, 0xFFFFFFFF80000000,
                           0x00007F0000002000, 0x00007F0000000000, 0xFFFF888000200000])

    b = PageTableBuilder("5level")
    b.map(0xFF11000000000000, 0x200000, size=2 << 20)
    b.map(0x0000000000400000, 0x9000, user=True)
    b.map(0xFFFFFFFF80000000, 0x40000000, size=1 << 30, nx=True)
    seeds["5level"] = (b, [0xFF11000000000000, 0x400000, 0xFFFFFFFF80001000, 0x401000])

    b = PageTableBuilder("pae", pdpt_offset=0x20)
    b.map(0xC0000000, 0x200000, size=2 << 20)
    b.map(0x08048000, 0x9000, nx=True)
    b.map(0xBFFFF000, 0xA000)
    seeds["pae"] = (b, [0xC0000000, 0x08048123, 0xBFFFF000, 0xC0200000])

    b = PageTableBuilder("32", nxe=False)
    b.map(0xC0000000, 0x400000, size=4 << 20)
    b.map(0xC0400000, 0x1_0040_0000 & ~0x3FFFFF, size=4 << 20)   # PSE-36: above 4 GiB
    b.map(0x08048000, 0x9000)
    seeds["32"] = (b, [0xC0000000, 0xC0400000, 0x08048000, 0x08049000])
    return seeds


def hostile_seeds():
    """Shapes a walker must survive: self-map, loops, tables past the image."""
    seeds = {}
    b = PageTableBuilder("4level")
    b.map(0x1000, 0x9000)
    # PML4[0x1ed] names the PML4 itself: Windows' self-map.
    b.write_entry(b.root + 0x1ED * 8, b.root | P | RW)
    seeds["selfmap"] = (b, [0xFFFFF6FB7DBED000, 0xFFFFF68000000000, 0x1000])

    b = PageTableBuilder("4level")
    b.map(0x40000000, 0x9000)
    pdpt = b.read_entry(b.root) & 0x000FFFFFFFFFF000
    b.write_entry(pdpt + 2 * 8, b.root | P | RW | US)        # PDPT -> PML4: a loop
    b.write_entry(b.root + 8, 0x7FFFF000 | P | RW)           # a table past the image
    b.write_entry(pdpt + 3 * 8, 0xFFFFF000 | P | PS | NX)    # a huge page past the image
    seeds["loop"] = (b, [0x80000000, 0x8000000000, 0x40000000, 0xC0000000])

    b = PageTableBuilder("5level")
    b.map(0x1000, 0x9000)
    for level_index in range(0, 512, 37):                     # every PML5E names the PML5
        b.write_entry(b.root + level_index * 8, b.root | P | RW | US)
    seeds["5level-selfmap"] = (b, [0x1000, 0x0025000000000000, 0xFF00000000000000])
    return seeds


def write(harness, name, data):
    folder = os.path.join(CORPUS, harness)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as fh:
        fh.write(data)


def walker_corpora():
    all_seeds = dict(builder_seeds())
    all_seeds.update(hostile_seeds())
    for name, (b, vas) in all_seeds.items():
        runs, image = compact(b)
        if len(runs) > 4:
            raise SystemExit("seed %s has %d runs; the layout holds 4" % (name, len(runs)))
        mode = b.mode
        nxe = 2 if b.nxe and mode != "32" else 0
        for harness, param in (("fuzz_translate", 1 | 2 | (7 << 8)),
                               ("fuzz_mappings", 2 | (1 << 8)), ("fuzz_ptov", 2 | (3 << 8)),
                               ("fuzz_read_virtual", 0x10000 | 0x2100),
                               ("fuzz_phys", 0x10000 | 0x1800)):
            write(harness, name, walker_input(b.cr3, mode, runs, vas, image, 1 | nxe | 4,
                                              param))
        # The same tables read through the callback (no runs but an empty one).
        write("fuzz_translate", name + "-callback",
              walker_input(b.cr3, mode, runs, vas, image, 1 | nxe | 4, 1 | 2, callback=True))
        # Truncated: the image stops inside the tables.
        cut = image[:len(image) // 2]
        cut_runs = [(s, min(n, max(len(cut) - o, 0)), o) for s, n, o in runs if o < len(cut)]
        write("fuzz_mappings", name + "-truncated",
              walker_input(b.cr3, mode, cut_runs, vas, cut, 1 | nxe | 4, 2))


def qemu_tables():
    """(name, gdt bytes, idt bytes, mode, top table bytes, paging mode) per shipped guest."""
    from ksinspect.memory import open_image
    from ksinspect.paging import AddressSpace
    from ksinspect.table_source import read_table
    for guest in ("x86_64-4level", "i386-pae", "i386-2level"):
        with open_image(os.path.join(QEMU, guest, "core-trimmed.elf.xz")) as memory:
            gdt = read_table(memory, "GDT")
            idt = read_table(memory, "IDT")
            space = AddressSpace(memory)
            size = 32 if space.mode.value == "pae" else 4096
            top = memory.read(space.root, size)
            yield guest, gdt.data, idt.data, gdt.mode.value, top, space.mode.value


def decoder_corpora():
    for sel in (0x10, 0x18, 0x2B, 0x33, 0x40, 0x63, 0x7B):       # Linux x86-64 / i386
        write("fuzz_selector", "linux-%02x" % sel,
              struct.pack("<QH", sel, 4) + struct.pack("<4H", sel, 0x33, 0x2B, 0x10))
        write("fuzz_live", "linux-%02x" % sel, struct.pack("<H", 64) + struct.pack(
            "<5I", sel, 0x33, 0x2B, 0x10, 0x7))
    for guest, gdt, idt, mode, top, paging in qemu_tables():
        long_mode = mode == "long"
        lo, hi = struct.unpack_from("<QQ", idt, 0)
        for kind, table, data in (("gdt", 1, gdt), ("idt", 2, idt)):
            sel = (1 if long_mode else 0) | table << 2 | 16
            write("fuzz_descriptor", "%s-%s" % (guest, kind),
                  struct.pack("<QQBH", lo, hi, sel, 1024) + data)
        width = 4 if paging == "32" else 8
        first = struct.unpack_from("<Q" if width == 8 else "<I", top, 0)[0]
        levels = {"32": 2, "pae": 3, "4level": 4, "5level": 5}[paging]
        write("fuzz_pte", "%s-top-table" % guest,
              struct.pack("<QBBBQBH", first, MODE_CODE[paging], levels, 0, PAT_DEFAULT, 3,
                          len(top) // width) + top)
    for value, mode, level in ((0x80000000FEE000E3, 2, 2), (0x000403E7, 0, 2),
                               (0x00000000001E3, 1, 2), (0x8000000000000063, 2, 1)):
        write("fuzz_pte", "readme-%x" % value,
              struct.pack("<QBBBQBH", value, mode, level, 0, PAT_DEFAULT, 3, 1)
              + struct.pack("<Q", value))
    for name, options, requests in (
            ("write-global", 1, [(0 | 1 << 3 | 2 << 6, 4, 1, 0x7FFC1000)]),
            ("execute-io", 3, [(1 | 0 << 3 | 1 << 6, 1, 0, 0), (2 | 2 << 3 | 3 << 6, 2, 1, 0x60)])):
        data = struct.pack("<BB", options, len(requests))
        for b0, length, has, address in requests:
            data += struct.pack("<BBBQ", b0, length, has, address)
        data += struct.pack("<3Q", 0xD0402, 0xFFFF4FF1, 0x400)
        write("fuzz_debugreg", name, data)


def control_corpora():
    """fuzz_control: each shipped guest's CR0, CR4, EFER and RFLAGS (its info
    registers), one seed per register kind, with the values to decode after them."""
    import re
    for guest in sorted(os.listdir(QEMU)):
        path = os.path.join(QEMU, guest, "info-registers.txt")
        if not os.path.exists(path):
            continue
        with open(path, encoding="ascii") as fh:
            text = fh.read()
        regs = {k: int(v, 16) for k, v in re.findall(r"\b(CR0|CR4|EFER|[RE]FL)=([0-9a-f]+)", text)}
        flags = regs.get("RFL", regs.get("EFL"))
        cs_long = 1 if guest.startswith("x86_64") else 0
        values = (regs["CR0"], regs["CR4"], regs["EFER"], flags, 0x15, 0x7)
        for kind in range(5):
            write("fuzz_control", "%s-kind%d" % (guest, kind),
                  struct.pack("<B4QB", kind + 1, regs["CR0"], regs["CR4"], regs["EFER"], flags,
                              cs_long) + struct.pack("<6Q", *values))


def cpu_probe_corpora():
    """fuzz_cpu_probe: (instruction number, output capacity, mode byte) seeds:
    real runs of RDTSC, HLT and SMSW, unknown numbers, a capacity too small."""
    for name, which, cap, mode in (("rdtsc-run", 21, 5, 1), ("hlt-run", 1, 5, 3),
                                   ("smsw-run", 26, 3, 5), ("bad-number", 27, 4, 0),
                                   ("negative", -1, 4, 0), ("sgdt-small", 22, 2, 0)):
        write("fuzz_cpu_probe", name, struct.pack("<iBB", which, cap, mode))


def page_cache_corpora():
    """fuzz_page_cache: (u16 capacity, then operations: u8 op, the page as u8
    or, with op bit 6, u64, and for a put u64 record and offset) seeds: a small
    table filled past half (the refusal), kernel direct-map page numbers that
    share their high bits, page 2^64 - 1, a clear, a bad capacity."""
    def put(page, record=0x1000, offset=0):
        return struct.pack("<BQQQ", 0x40, page, record, offset)

    def find(page):
        return struct.pack("<BQ", 0x70, page)
    direct_map = 0xFFFF888000000000 >> 12
    write("fuzz_page_cache", "fill-past-half",
          struct.pack("<H", 8) + b"".join(put(i, i << 12) for i in range(6)) + find(3))
    write("fuzz_page_cache", "direct-map",
          struct.pack("<H", 64) + b"".join(put(direct_map + i * 512, i << 21, i << 12)
                                           for i in range(40))
          + b"".join(find(direct_map + i * 512) for i in range(0, 40, 7)))
    write("fuzz_page_cache", "top-page-clear",
          struct.pack("<H", 16) + put((1 << 64) - 1) + put(5) + struct.pack("<BB", 0x2F, 0)
          + find(5) + put(5, 7, 9))
    write("fuzz_page_cache", "bad-capacity", struct.pack("<H", 12) + put(1) + find(1))


# --- Windows structures: fuzz_fields and fuzz_scan (layouts in the harness files) ---

FIELDS_HEADER = 4 + 16 * 20 + 32 * 8
SCAN_HEADER = 36 + 12 * 32
FIELD_PATHS = ("Pcb.Header.Type", "Pcb.Header.Size", "Pcb.DirectoryTableBase",
               "UniqueProcessId", "ActiveProcessLinks.Flink", "InheritedFromUniqueProcessId",
               "Peb")


def fields_input(specs, starts, buf, small_starts=False):
    """One fuzz_fields input: specs (offset, size, flags, bit_position, bit_length)."""
    assert len(specs) <= 16 and len(starts) <= 32
    head = struct.pack("<BBBB", len(specs), len(starts), 1 if small_starts else 0, 0)
    for i in range(16):
        head += struct.pack("<5I", *(specs[i] if i < len(specs) else (0, 0, 0, 0, 0)))
    head += b"".join(struct.pack("<Q", s) for s in list(starts) + [0] * (32 - len(starts)))
    assert len(head) == FIELDS_HEADER
    return head + buf


def scan_input(spec, base, limit, buf, capacity=1, split=0):
    """One fuzz_scan input from a ksinspect ScanSpec."""
    checks = list(spec.checks)
    assert len(checks) <= 12
    head = struct.pack("<IHHIIBBHQQ", spec.size, spec.align, spec.anchor[0], spec.anchor[1],
                       spec.anchor[2], len(checks), capacity - 1, split, base, limit)
    for i in range(12):
        head += struct.pack("<4IQQ", *(checks[i] if i < len(checks) else (0, 0, 0, 0, 0, 0)))
    assert len(head) == SCAN_HEADER
    return head + buf


def windows_corpora():
    """EPROCESS records planted by tests/builders/eprocess_image_builder.py (offsets from
    the layout JSON), read with the specs pslist uses and the scan psscan uses."""
    from builders.eprocess_image_builder import standard_image
    from ksinspect.windows.fields import load_layout, resolve_field
    from ksinspect.windows.psscan import eprocess_constraints
    for layout_name in ("win7-sp1-7601.17514-x86", "win10-22h2-19045.2965-x64",
                        "win10-22h2-19045.2965-x86"):
        builder, procs = standard_image(layout_name, kernel_image=False)
        layout = load_layout(layout_name)
        size = layout.sizeof("_EPROCESS")
        specs = []
        for path in FIELD_PATHS:
            r = resolve_field(layout, "_EPROCESS", path)
            specs.append((r.offset, r.size, 1 if r.signed else 0, r.bit_position, r.bit_length))
        dtb = specs[2]
        specs.append((dtb[0], dtb[1], 0, 12, 8 * dtb[1] - 12))     # the DTB's frame number
        specs.append((specs[3][0], specs[3][1], 1, 0, 0))          # the PID read signed
        # One record, whole; the same record at starts that cut it short.
        record = builder.read_pa(procs[1].eprocess_pa, size)
        write("fuzz_fields", layout_name, fields_input(
            specs, [0, size - 8, size // 2, 1 << 63, len(record) + 1], record))
        # Several records in one window of pool memory (u16 starts).
        first = min(p.eprocess_pa for p in procs)
        window = builder.read_pa(first, min(3400, 4096 - FIELDS_HEADER))
        starts = [p.eprocess_pa - first for p in procs if p.eprocess_pa - first < len(window)]
        write("fuzz_fields", layout_name + "-window",
              fields_input(specs, starts, window, small_starts=True))

        spec, _ = eprocess_constraints(layout)
        window = builder.read_pa(first, min(8192 - SCAN_HEADER, 2 * size + 0x100))
        write("fuzz_scan", layout_name, scan_input(spec, first, 0xFFFFFFFFFFFFFFFF, window,
                                                   capacity=1, split=size // 2))
        # Pool-aligned base that is not the window's start, and a start limit.
        write("fuzz_scan", layout_name + "-limited",
              scan_input(spec, first + 8, size, window[8:], capacity=2, split=3))
    # psscan's prefilter byte everywhere: every position passes the anchor.
    spec, _ = eprocess_constraints(load_layout("win7-sp1-7601.17514-x86"))
    write("fuzz_scan", "all-0x03", scan_input(spec, 0, 0xFFFFFFFFFFFFFFFF, b"\x03" * 4096,
                                              capacity=4))


def kdump_reader_corpora():
    """fuzz_kdump_reader: real pages of the shipped x86-64 kdumps (LZO, snappy and
    zlib as makedumpfile and cramjam stored them, and one uncompressed page) in a
    small kdump of the harness's layout, plain and flattened; and real snappy pages
    for the decoder case."""
    import lzma
    from ksinspect.memory import open_image_bytes
    data = os.path.join(ROOT, "tests", "data", "kdump", "x86_64-4level")
    stored = []
    for variant in ("makedumpfile-lzo", "recompressed-snappy", "makedumpfile-zlib"):
        with lzma.open(os.path.join(data, variant + ".kdump.xz")) as f:
            memory = open_image_bytes(f.read(), name=variant)
        reader = memory._reader
        pfns = [r.start // 4096 for r in memory.runs[1:4]]
        for pfn in pfns:
            offset, size, flags, _ = reader.descriptor(pfn)
            stored.append((reader.f.read(offset, size, "page"), flags))
        if variant == "recompressed-snappy":
            for i, (page, _flags) in enumerate(stored[-3:]):
                write("fuzz_kdump_reader", "snappy-page-%d" % i, bytes([0, 64]) + page)
        raw = memory.read(pfns[0] * 4096, 4096)
        memory.close()
    stored.append((raw, 0))
    count = len(stored)                                  # pages 0..count-1 dumped
    bitmap = ((1 << count) - 1).to_bytes(8, "little")
    descs, body = b"", b""
    first = 8 + 24 * count
    for page, flags in stored:
        descs += struct.pack("<QIIQ", first + len(body), len(page), flags, 0)
        body += page
    reads = [(0, 8), (4090, 20), (4096 * 3, 4096), (4096 * 9, 3 * 4096), (100, 4096 * 2),
             (4096 * (count - 1), 4096), (4096 * count, 8), (4096 * 5 + 7, 1)]
    packed_reads = b"".join(struct.pack("<IH", pa, n) for pa, n in reads)
    for name, slots, flags in (("plain", 3, 0), ("plain-hook", 0, 2), ("flat", 7, 1),
                               ("flat-hook", 1, 3)):
        head = struct.pack("<BBBBBHH", slots, flags, 3, 5, 16, 8, 8) + packed_reads
        write("fuzz_kdump_reader", "kdump-" + name, bytes([1, 0]) + head + bitmap + descs
              + body)


def main():
    # Replace the seeds; keep the inputs that once broke something (regress-*).
    for folder, _, files in os.walk(CORPUS):
        for f in files:
            if not f.startswith("regress-"):
                os.remove(os.path.join(folder, f))
    walker_corpora()
    decoder_corpora()
    control_corpora()
    cpu_probe_corpora()
    page_cache_corpora()
    windows_corpora()
    kdump_reader_corpora()
    total = sum(len(files) for _, _, files in os.walk(CORPUS))
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(CORPUS)
               for f in files)
    print("wrote %d seeds (%d bytes) under %s" % (total, size, os.path.relpath(CORPUS, ROOT)))


if __name__ == "__main__":
    main()
