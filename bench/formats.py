"""Compressed kdump and minidump reading, against the ELF core and the peers.

    python bench/formats.py --cache DIR [--minidump FULL.dmp] [--reads 20000] [--repeat 3]

DIR is ``tools/make_qemu_fixture.py --kdump --cache DIR``'s cache: its
``work/x86_64-4level/core.elf.xz`` is QEMU's ELF core of the stopped guest and
``core.kdump-zlib`` QEMU's own ``dump-guest-memory -z`` of the same state
(makedumpfile's flattened format). The bench writes to /tmp: the ELF core,
and from it (program headers moved first, as tools/make_kdump_fixture.py
does) ``makedumpfile -c`` (zlib) and ``-l`` (LZO) compressed kdumps, and
snappy and zstd kdumps of the same pages recompressed with cramjam
(Debian's makedumpfile writes neither). drgn's libkdumpfile refuses a kdump
without VMCOREINFO and this guest (like QEMU's own ``-z`` output) has none,
so the bench adds one (OSRELEASE, PAGESIZE, phys_base 0, and swapper_pg_dir,
_stext, page_offset_base... from the guest's own /proc/kallsyms, which the
cache holds) to the plain kdumps, as a note and through their sub-header.
QEMU's flattened file cannot take one in place: ksinspect reads it as QEMU
wrote it, drgn reads ``makedumpfile -R``'s reassembly of it (what drgn's own
error message asks for) with the VMCOREINFO added.

Measured, each in the same run, the best of --repeat rounds (ours and
drgn's alternate, each round on a freshly opened dump):

* random 8-byte reads per second at addresses drawn from the guest's direct
  map: ksinspect's virtual reads through the guest's page tables
  (``AddressSpace.read``: a C walk whose physical reads go through the C
  page cache), ksinspect's physical reads (``PhysicalMemory.read``) and drgn
  (PyPI, libkdumpfile) reading the same physical addresses (drgn's own
  page-table walk needs kernel symbols this guest lacks);
* a sequential pass over all memory in 1 MiB physical reads, ours and drgn's,
  in MB/s of uncompressed memory; and a full psscan-style pass
  (``scan_memory`` with the Windows 10 EPROCESS constraints);
* the peak RSS of a child process making the psscan pass (bounded by the
  page cache and the 4 MiB read chunk, not by the dump's size) against the
  same pass over the ELF core;
* with --minidump (a full-memory MiniDumpWriteDump dump, e.g. the untrimmed
  output of tools/make_minidump_fixture.py --keep): opening it and reading
  the PEB (TEB of the first thread -> ProcessEnvironmentBlock -> 0x380
  bytes), against the PyPI ``minidump`` package doing the same, ksinspect's
  whole ``dump_peb`` (loader lists and checks) besides, and random 8-byte
  reads per second in the dump's memory ranges, ours against the package's
  reader. The ``minidump`` package refuses Wine's private stream 0xFFF0
  (ValueError: not a valid MINIDUMP_STREAM_TYPE), so it reads a copy with that
  one directory entry's type set to 0 (UnusedStream).

The last line is ``formats: key=value ...``.
"""
import argparse
import lzma
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from array import array

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

from ksinspect.memory import open_image                              # noqa: E402
from ksinspect.paging import AddressSpace                             # noqa: E402
from ksinspect.windows import load_layout                             # noqa: E402
from ksinspect.windows.psscan import eprocess_constraints, scan_memory  # noqa: E402
from kdump_writer import read_pieces, write_kdump                     # noqa: E402
from make_kdump_fixture import phdrs_first, recompress               # noqa: E402

MB = 1 << 20
SYMBOLS = {"swapper_pg_dir": "init_top_pgt", "_stext": "_stext",
           "page_offset_base": "page_offset_base", "vmemmap_base": "vmemmap_base",
           "vmalloc_base": "vmalloc_base"}


def vmcoreinfo_of(kallsyms_path):
    """The VMCOREINFO lines drgn needs, from the guest's own /proc/kallsyms (nokaslr)."""
    found = {}
    with open(kallsyms_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] in SYMBOLS.values():
                found.setdefault(parts[2], parts[0])
    lines = ["OSRELEASE=6.1.0", "PAGESIZE=4096", "KERNELOFFSET=0", "NUMBER(phys_base)=0",
             "NUMBER(pgtable_l5_enabled)=0"]
    lines += ["SYMBOL(%s)=%s" % (key, found[sym]) for key, sym in SYMBOLS.items()
              if sym in found]
    return ("\n".join(lines) + "\n").encode()


def add_vmcoreinfo(path, VMCOREINFO):
    """Append a VMCOREINFO blob and point the kdump_sub_header (64-bit) at it, and add
    it as a VMCOREINFO ELF note after the dump's notes (libkdumpfile reads the notes)."""
    with open(path, "r+b") as f:
        head = f.read(1 << 16)
        block = struct.unpack_from("<i", head, 428)[0]
        sub_blocks = struct.unpack_from("<i", head, 432)[0]
        note_at, note_size = struct.unpack_from("<QQ", head, block + 48)
        note = struct.pack("<III", 11, len(VMCOREINFO), 0) + b"VMCOREINFO\0\0" + VMCOREINFO
        note += bytes(-len(note) % 4)
        if note_at + note_size + len(note) <= block * (1 + sub_blocks):
            f.seek(note_at + note_size)
            f.write(note)
            f.seek(block + 56)
            f.write(struct.pack("<Q", note_size + len(note)))
        f.seek(0, 2)
        at = f.tell()
        f.write(VMCOREINFO)
        f.seek(block + 32)
        f.write(struct.pack("<QQ", at, len(VMCOREINFO)))


def sample_vas(space, memory, count, rng):
    """Addresses in the direct map whose page the image holds."""
    pages = []
    for m in space.mappings(start=0xFFFF888000000000, end=0xFFFF888010000000):
        pages.extend(va for va in range(m.start, m.start + m.size, 4096)
                     if memory.contains(m.pa + va - m.start, 4096))
    return [rng.choice(pages) + rng.randrange(0, 4088) for _ in range(count)]


def time_reads(read, addresses):
    t = time.perf_counter()
    for at in addresses:
        read(at, 8)
    return len(addresses) / (time.perf_counter() - t)


def drgn_program(path):
    import drgn
    prog = drgn.Program(drgn.host_platform)
    prog.set_core_dump(path)
    return prog


def drgn_reads(path, pas):
    prog = drgn_program(path)
    return time_reads(lambda pa, n: prog.read(pa, n, True), pas)


def sequential(read, runs, total):
    """MB/s of reading every run in 1 MiB physical reads."""
    t = time.perf_counter()
    for start, end in runs:
        for pa in range(start, end, MB):
            read(pa, min(MB, end - pa))
    return total / MB / (time.perf_counter() - t)


def scan_pass(path):
    spec, _ = eprocess_constraints(load_layout("win10-22h2-x64"))
    with open_image(path) as memory:
        t = time.perf_counter()
        scan_memory(memory, spec)
        seconds = time.perf_counter() - t
        return memory.size / MB / seconds


def kdump_rounds(ours_path, drgn_path, vas, pas, repeat):
    """Best-of-repeat rates of one kdump: ours (virtual, physical, sequential) and
    drgn's (physical, sequential) on the same pages."""
    best = {}

    def keep(key, value):
        best[key] = max(best.get(key, 0.0), value)
    for _ in range(repeat):
        with open_image(ours_path) as memory:
            space = AddressSpace(memory)
            keep("virtual", time_reads(space.read, vas))
        with open_image(ours_path) as memory:
            keep("physical", time_reads(memory.read, pas))
            runs = [(r.start, r.end) for r in memory.runs]
            size = memory.size
            keep("pass", sequential(memory.read, runs, size))
        try:
            keep("drgn", drgn_reads(drgn_path, pas))
            prog = drgn_program(drgn_path)
            keep("drgn_pass", sequential(lambda pa, n: prog.read(pa, n, True), runs, size))
        except Exception as exc:           # a compression this drgn build cannot read
            best["drgn_error"] = "%s" % exc
    return best


def child_rss(path):
    # VmHWM of the child's own address space (ru_maxrss would include what the fork
    # inherited from this process before exec).
    code = ("import sys; sys.path.insert(0, %r); sys.path.insert(0, %r); "
            "from formats import scan_pass; scan_pass(%r); "
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
            % (ROOT, os.path.join(ROOT, "bench"), path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-2]) / 1024


def minidump_bench(path, repeat, reads):
    from ksinspect.memory.minidump import StreamType
    from ksinspect.windows.dump import dump_of, dump_peb
    peer_copy = os.path.join(tempfile.gettempdir(), "ksinspect-bench-peer.dmp")
    shutil.copyfile(path, peer_copy)
    with open(peer_copy, "r+b") as f:
        count, rva = struct.unpack_from("<II", f.read(16), 8)
        for i in range(count):
            f.seek(rva + 12 * i)
            if struct.unpack("<I", f.read(4))[0] == 0xFFF0:
                f.seek(rva + 12 * i)
                f.write(struct.pack("<I", StreamType.UNUSED))

    def ours_bytes():
        with open_image(path) as memory:
            teb = dump_of(memory).threads[0].teb
            peb = int.from_bytes(memory.read(teb + 0x60, 8), "little")
            return memory.read(peb, 0x380)

    def ours_full():
        with open_image(path) as memory:
            return dump_peb(memory)

    def peer_bytes():
        from minidump.minidumpfile import MinidumpFile
        mf = MinidumpFile.parse(peer_copy)
        reader = mf.get_reader()
        teb = mf.threads.threads[0].Teb
        peb = int.from_bytes(reader.read(teb + 0x60, 8), "little")
        data = reader.read(peb, 0x380)
        mf.file_handle.close()
        return data

    assert ours_bytes() == peer_bytes()
    results = {}
    for name, fn in (("ours", ours_bytes), ("ours_full_peb", ours_full), ("peer", peer_bytes)):
        best = min(_timed(fn) for _ in range(repeat))
        results[name] = best * 1000
    # Random 8-byte reads in the dump's memory ranges: the same addresses for both.
    from minidump.minidumpfile import MinidumpFile
    rng = random.Random(17)
    with open_image(path) as memory:
        runs = [r for r in memory.runs if r.length >= 16]
        weights = [r.length for r in runs]
        vas = []
        for r in rng.choices(runs, weights, k=reads):
            vas.append(r.start + rng.randrange(r.length - 8))
        for va in vas[:200]:
            memory.read(va, 8)
        results["reads"] = max(time_reads(memory.read, vas) for _ in range(repeat))
        mf = MinidumpFile.parse(peer_copy)
        reader = mf.get_reader()
        assert all(reader.read(va, 8) == memory.read(va, 8) for va in vas[:200])
        results["peer_reads"] = max(time_reads(reader.read, vas) for _ in range(repeat))
        mf.file_handle.close()
    os.unlink(peer_copy)
    return results


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def recompressed(source, path, flag, compress):
    """The pages of the kdump ``source`` compressed again (snappy, zstd) into ``path``."""
    with open_image(source) as memory:
        head, block, bitmap_blocks, valid, pages = read_pieces(memory)
        word = memory.container.header.word_size
    with open(path, "wb") as f:
        f.write(write_kdump(head, block, bitmap_blocks, valid,
                            recompress(pages, block, flag, compress), status=flag,
                            word_size=word))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--minidump")
    ap.add_argument("--reads", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    import cramjam
    tmp = tempfile.mkdtemp(prefix="ksinspect-bench-")
    out = {}
    notes = []
    work = os.path.join(args.cache, "work", "x86_64-4level")
    info = vmcoreinfo_of(os.path.join(work, "kallsyms.raw"))
    try:
        elf = os.path.join(tmp, "core.elf")
        with lzma.open(os.path.join(work, "core.elf.xz")) as f, open(elf, "wb") as g:
            shutil.copyfileobj(f, g)
        fixed = os.path.join(tmp, "core-phdrs-first.elf")
        phdrs_first(elf, fixed)
        kdumps = {}                     # name -> (the file we read, the file drgn reads)
        for name, flag in (("zlib", "-c"), ("lzo", "-l")):
            path = os.path.join(tmp, "core.kdump-" + name)
            subprocess.run(["makedumpfile", flag, "-d", "0", fixed, path], check=True,
                           capture_output=True)
            kdumps[name] = (path, path)
        for name, flag, fn in (("snappy", 0x4, cramjam.snappy.compress_raw),
                               ("zstd", 0x20, cramjam.zstd.compress)):
            path = os.path.join(tmp, "core.kdump-" + name)
            recompressed(kdumps["zlib"][0], path, flag, fn)
            kdumps[name] = (path, path)
        for path, _same in kdumps.values():
            add_vmcoreinfo(path, info)
        qemu = os.path.join(work, "core.kdump-zlib")
        if os.path.exists(qemu):
            plain = os.path.join(tmp, "qemu-reassembled.kdump")
            with open(qemu, "rb") as f:
                subprocess.run(["makedumpfile", "-R", plain], stdin=f, check=True,
                               capture_output=True)
            add_vmcoreinfo(plain, info)
            kdumps["qemu_flat_zlib"] = (qemu, plain)
        else:
            notes.append("no %s: QEMU's -z output not measured" % qemu)
        rng = random.Random(16)
        with open_image(elf) as memory:
            space = AddressSpace(memory)
            vas = sample_vas(space, memory, args.reads, rng)
            pas = [space.vtop(va) for va in vas]
            out["elf_reads_per_s"] = max(time_reads(space.read, vas) for _ in range(args.repeat))
            out["elf_phys_reads_per_s"] = max(time_reads(memory.read, pas)
                                              for _ in range(args.repeat))
        for name, (ours, theirs) in kdumps.items():
            best = kdump_rounds(ours, theirs, vas, pas, args.repeat)
            out["kdump_%s_reads_per_s" % name] = best["virtual"]
            out["kdump_%s_phys_reads_per_s" % name] = best["physical"]
            out["kdump_%s_pass_mb_per_s" % name] = best["pass"]
            if "drgn" in best:
                out["drgn_%s_reads_per_s" % name] = best["drgn"]
                out["drgn_%s_pass_mb_per_s" % name] = best["drgn_pass"]
            else:
                notes.append("drgn cannot read the %s kdump: %s" % (name, best["drgn_error"]))
            out["kdump_%s_size_mb" % name] = os.path.getsize(ours) / MB
        for name in ("zlib", "lzo"):
            out["kdump_%s_psscan_mb_per_s" % name] = scan_pass(kdumps[name][0])
            out["kdump_%s_psscan_rss_mb" % name] = child_rss(kdumps[name][0])
        out["elf_psscan_mb_per_s"] = scan_pass(elf)
        out["elf_psscan_rss_mb"] = child_rss(elf)
        if args.minidump:
            m = minidump_bench(args.minidump, args.repeat, args.reads)
            out["minidump_open_peb_ms"] = m["ours"]
            out["minidump_dump_peb_ms"] = m["ours_full_peb"]
            out["peer_minidump_open_peb_ms"] = m["peer"]
            out["minidump_reads_per_s"] = m["reads"]
            out["peer_minidump_reads_per_s"] = m["peer_reads"]
            out["minidump_size_mb"] = os.path.getsize(args.minidump) / MB
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for note in notes:
        print("note: " + note)
    for key, value in out.items():
        print("%-34s %10.1f" % (key, value))
    print("formats: " + " ".join("%s=%.1f" % kv for kv in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
