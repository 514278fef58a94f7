#!/usr/bin/env python3
"""Make the compressed-kdump fixtures of tests/data/kdump/ from one QEMU snapshot.

    python3 tools/make_qemu_fixture.py --kdump --cache C --out Q -p x86_64-4level
    python3 tools/make_kdump_fixture.py --cache C --qemu-out Q -p x86_64-4level

The first command (the QEMU fixture tool with ``--kdump``) boots the guest,
stops it and writes, of that one stopped state, QEMU's ELF core
(``C/work/<profile>/core.elf.xz``), QEMU's own compressed kdump
(``dump-guest-memory`` format kdump-zlib: makedumpfile's flattened format,
``core.kdump-zlib``) and ``info registers``/``info tlb``/``info mem`` with the
trimmed ELF core (in Q). This tool then:

1. rewrites the ELF core with its program headers right after the ELF header
   (QEMU 7.2 puts them after the notes; Debian's makedumpfile 1.7.2 reads
   them at offset 64 and fails with "Can't get the number of PT_LOAD"
   otherwise) and runs ``makedumpfile -c -d 1`` (zlib) and ``-l -d 1`` (LZO)
   on it; Debian's makedumpfile has no snappy or zstd;
2. trims every dump to the pages the tests need -- the pages the trimmed ELF
   core keeps (every page-table page reachable from CR3, GDT, IDT, TSS) plus
   the first 8 pages of the kernel image at 16 MiB -- keeping each page's
   stored bytes and descriptor flags exactly as the writer (QEMU or
   makedumpfile) made them, and the header, sub-header and notes blocks byte
   for byte; only the dumped-pages bitmap and the descriptor offsets are
   rewritten (tools/kdump_writer.py);
3. makes snappy and zstd dumps by recompressing those pages with cramjam
   (no available makedumpfile writes them), and a flattened form of the
   trimmed QEMU dump (records in shuffled order, as makedumpfile writes).

Everything is compressed with xz into --out/<profile>/, with meta.json (what
each file is, the untrimmed sizes, the makedumpfile version, and the sha256
of every kept page as QEMU's ELF core of the same state holds it).
"""
import argparse
import hashlib
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

from kdump_writer import flatten, keep, read_pieces, write_kdump   # noqa: E402
from ksinspect.memory import open_image                           # noqa: E402

KERNEL_PAGES = range(0x1000000 // 4096, 0x1000000 // 4096 + 8)


def phdrs_first(src: str, dst: str) -> None:
    """Copy an ELF64 core with its program header table moved to offset 64."""
    with open(src, "rb") as f:
        data = f.read()
    phoff = struct.unpack_from("<Q", data, 32)[0]
    entsize, num = struct.unpack_from("<HH", data, 54)
    shift = entsize * num
    table = bytearray(data[phoff:phoff + shift])
    for i in range(num):
        off = struct.unpack_from("<Q", table, i * entsize + 8)[0]
        struct.pack_into("<Q", table, i * entsize + 8, off + shift)
    head = bytearray(data[:64])
    struct.pack_into("<Q", head, 32, 64)
    with open(dst, "wb") as f:
        f.write(bytes(head) + bytes(table) + data[64:])


def recompress(pages, block: int, flag: int, compress):
    """zlib-compressed (or stored) pages compressed again with ``compress``, flagged
    ``flag``; a page that does not shrink is stored raw (flags 0), as makedumpfile does."""
    import zlib
    out = {}
    for pfn, (stored, flags, page_flags) in pages.items():
        page = zlib.decompress(stored) if flags & 1 else stored
        packed = bytes(compress(page))
        out[pfn] = (packed, flag, page_flags) if len(packed) < block else (page, 0, page_flags)
    return out


def xz(data: bytes, path: str) -> int:
    with lzma.open(path, "wb", preset=9) as f:
        f.write(data)
    return os.path.getsize(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-p", "--profile", default="x86_64-4level")
    ap.add_argument("--cache", required=True, help="make_qemu_fixture.py's --cache")
    ap.add_argument("--qemu-out", required=True, help="make_qemu_fixture.py's --out")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "kdump"))
    args = ap.parse_args(argv)
    work = os.path.join(args.cache, "work", args.profile)
    qemu_dir = os.path.join(args.qemu_out, args.profile)
    out = os.path.join(args.out, args.profile)
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="ksinspect-kdump-")
    meta = {"profile": args.profile, "generator": "tools/make_kdump_fixture.py", "files": {}}
    try:
        core = os.path.join(tmp, "core.elf")
        with lzma.open(os.path.join(work, "core.elf.xz")) as f, open(core, "wb") as g:
            shutil.copyfileobj(f, g)
        fixed = os.path.join(tmp, "core-phdrs-first.elf")
        phdrs_first(core, fixed)
        version = subprocess.run(["makedumpfile", "-v"], capture_output=True,
                                 text=True).stdout.splitlines()[0]
        meta["makedumpfile"] = version
        sources = {"qemu-zlib": os.path.join(work, "core.kdump-zlib")}
        for name, flag in (("makedumpfile-zlib", "-c"), ("makedumpfile-lzo", "-l")):
            path = os.path.join(tmp, name + ".kdump")
            subprocess.run(["makedumpfile", flag, "-d", "1", fixed, path], check=True,
                           capture_output=True)
            sources[name] = path
        with lzma.open(os.path.join(qemu_dir, "core-trimmed.elf.xz")) as f:
            trimmed = f.read()
        trimmed_path = os.path.join(tmp, "core-trimmed.elf")
        with open(trimmed_path, "wb") as f:
            f.write(trimmed)
        elf = open_image(trimmed_path)
        wanted = sorted({pa // 4096 for r in elf.runs for pa in range(r.start, r.end, 4096)}
                        | set(KERNEL_PAGES))
        elf.close()
        # What QEMU's ELF core (of the same stopped state) holds in each kept page.
        full = open_image(core)
        meta["elf_page_sha256"] = {"%#x" % pfn: hashlib.sha256(full.read(pfn * 4096, 4096))
                                   .hexdigest() for pfn in wanted if full.contains(pfn * 4096, 4096)}
        full.close()
        plain_pieces = None
        for name, path in sources.items():
            memory = open_image(path)
            head, block, bitmap_blocks, valid, pages = read_pieces(memory)
            word = memory.container.header.word_size
            desc = memory.description
            memory.close()
            kept = keep(pages, wanted)
            data = write_kdump(head, block, bitmap_blocks, valid, kept, word_size=word)
            size = xz(data, os.path.join(out, name + ".kdump.xz"))
            meta["files"][name + ".kdump.xz"] = {
                "from": desc, "untrimmed_bytes": os.path.getsize(path),
                "pages_kept": len(kept), "xz_bytes": size}
            if name == "qemu-zlib":
                size = xz(flatten(data), os.path.join(out, name + ".flat.kdump.xz"))
                meta["files"][name + ".flat.kdump.xz"] = {
                    "from": "the trimmed qemu-zlib.kdump, flattened (records shuffled)",
                    "xz_bytes": size}
            if name == "makedumpfile-zlib":
                plain_pieces = (head, block, bitmap_blocks, valid, kept, word)
        import cramjam
        head, block, bitmap_blocks, valid, kept, word = plain_pieces
        for name, flag, compress in (("recompressed-snappy", 0x4, cramjam.snappy.compress_raw),
                                     ("recompressed-zstd", 0x20, cramjam.zstd.compress)):
            pages = recompress(kept, block, flag, compress)
            data = write_kdump(head, block, bitmap_blocks, valid, pages, status=flag,
                               word_size=word)
            size = xz(data, os.path.join(out, name + ".kdump.xz"))
            meta["files"][name + ".kdump.xz"] = {
                "from": "makedumpfile-zlib's kept pages, decompressed and compressed again "
                        "with cramjam %s" % cramjam.__version__, "xz_bytes": size}
        for name in ("core-trimmed.elf.xz", "info-registers.txt", "info-tlb.txt",
                     "info-tlb.txt.xz", "info-mem.txt", "info-mem.txt.xz", "meta.json"):
            src = os.path.join(qemu_dir, name)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(out, "qemu-" + name if name == "meta.json"
                                              else name))
        with open(os.path.join(out, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        for name, m in sorted(meta["files"].items()):
            print("%-32s %s" % (name, m))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
