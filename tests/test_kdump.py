"""Compressed kdump (ksinspect.memory.kdump, csrc/ksi_kdump.c).

The fixtures (tests/data/kdump/<profile>/, made by tools/make_kdump_fixture.py)
come from one stopped QEMU guest: QEMU's own `dump-guest-memory -z` (flattened,
zlib), Debian makedumpfile 1.7.2's -c (zlib) and -l (LZO) of QEMU's ELF core of
the same state, trimmed to the pages the tests need with each page's stored
bytes kept; snappy and zstd are those pages recompressed. The expected values
are QEMU's: the sha256 of each page in QEMU's ELF core (meta.json), and
QEMU's `info tlb` / `info mem` of that state.
"""
import ctypes
import ctypes.util
import hashlib
import io
import json
import lzma
import os
import random
import struct
import sys
import zlib
from array import array

import pytest

from ksinspect._native import kdump as native
from ksinspect.cli import main
from ksinspect.errors import ImageFormatError, KdumpFormatError, MissingDecompressorError
from ksinspect.memory import open_image, open_image_bytes
from ksinspect.paging import AddressSpace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
from kdump_writer import flatten, read_pieces, write_kdump     # noqa: E402
from test_paging_conformance import (check_maps_against_info_mem,     # noqa: E402
                                     check_mappings_against_info_tlb,
                                     check_vtop_against_info_tlb, parse_info_mem, parse_info_tlb)

DATA = os.path.join(os.path.dirname(__file__), "data", "kdump")
PROFILES = ["x86_64-4level", "i386-pae"]
VARIANTS = {"qemu-zlib": "zlib", "qemu-zlib.flat": "zlib", "makedumpfile-zlib": "zlib",
            "makedumpfile-lzo": "lzo", "recompressed-snappy": "snappy",
            "recompressed-zstd": "zstd"}


def _meta(profile):
    with open(os.path.join(DATA, profile, "meta.json")) as f:
        return json.load(f)


def _path(profile, variant):
    return os.path.join(DATA, profile, variant + ".kdump.xz")


def _text(profile, name):
    path = os.path.join(DATA, profile, name)
    if os.path.exists(path):
        with open(path, encoding="ascii") as f:
            return f.read()
    with lzma.open(path + ".xz", "rt", encoding="ascii") as f:
        return f.read()


@pytest.fixture(scope="module", params=[(p, v) for p in PROFILES for v in VARIANTS],
                ids=lambda pv: "%s-%s" % pv)
def dump(request):
    profile, variant = request.param
    with open_image(_path(profile, variant)) as memory:
        yield profile, variant, memory


def test_every_page_equals_the_elf_core(dump):
    profile, variant, memory = dump
    assert memory.format == "kdump" and memory.buffer is None
    info = memory.container
    assert info.header.compression == VARIANTS[variant]
    assert info.flattened == variant.endswith(".flat")
    expected = _meta(profile)["elf_page_sha256"]
    pages = {pa // 4096 for r in memory.runs for pa in range(r.start, r.end, 4096)}
    assert {"%#x" % p for p in pages} == set(expected)
    for pfn in sorted(pages):
        assert hashlib.sha256(memory.read(pfn * 4096, 4096)).hexdigest() == \
            expected["%#x" % pfn], hex(pfn)


def test_cpu_state_from_the_notes(dump):
    profile, _variant, memory = dump
    registers = open(os.path.join(DATA, profile, "info-registers.txt")).read()
    assert memory.cpu is not None
    assert ("CR3=%08x" % memory.cpu.cr3) in registers or \
        ("CR3=%016x" % memory.cpu.cr3) in registers


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("variant", ["qemu-zlib.flat", "makedumpfile-lzo"])
def test_vtop_and_maps_agree_with_qemu(profile, variant):
    """As tests/test_paging_conformance.py does on the ELF cores. The other variants
    hold the same pages (checked above), so one walk per writer is enough."""
    with open_image(_path(profile, variant)) as memory:
        space = AddressSpace(memory)
        rows = parse_info_tlb(_text(profile, "info-tlb.txt"))
        assert len(rows) > 3000
        check_vtop_against_info_tlb(space, rows)
        check_mappings_against_info_tlb(space, rows)
        check_maps_against_info_mem(space, parse_info_mem(_text(profile, "info-mem.txt")))


def test_flattened_equals_plain():
    with open_image(_path("x86_64-4level", "qemu-zlib")) as plain, \
            open_image(_path("x86_64-4level", "qemu-zlib.flat")) as flat:
        assert plain.runs == flat.runs
        assert flat.container.records > 10
        for r in plain.runs:
            assert plain.read(r.start, r.length) == flat.read(r.start, r.length)


def test_cache_is_bounded():
    with open_image(_path("x86_64-4level", "makedumpfile-lzo")) as memory:
        memory._reader.set_cache_pages(4)
        for r in memory.runs:
            for pa in range(r.start, r.end, 2048):          # half pages: through the cache
                memory.read(pa, 2048)
        stats = memory._reader.stats()
        assert stats["slots"] == 4 and stats["used"] == 4
        assert stats["loaded"] >= 124 and stats["hits"] >= 124
        with pytest.raises(KdumpFormatError, match="1 to 1048576 pages"):
            memory._reader.set_cache_pages(0)


def test_cache_size_from_the_environment(monkeypatch):
    monkeypatch.setenv("KSINSPECT_KDUMP_CACHE_PAGES", "16")
    with open_image(_path("x86_64-4level", "makedumpfile-lzo")) as memory:
        assert memory._reader.stats()["slots"] == 16
    for bad, match in (("lots", "not a number of pages"), ("0", "1 to 1048576 pages"),
                       ("2000000", "1 to 1048576 pages")):
        monkeypatch.setenv("KSINSPECT_KDUMP_CACHE_PAGES", bad)
        with pytest.raises(KdumpFormatError, match=match):
            open_image(_path("x86_64-4level", "makedumpfile-lzo"))


def _elf_pages(profile):
    """pfn -> the page in QEMU's (trimmed) ELF core of the same snapshot."""
    with open_image(os.path.join(DATA, profile, "core-trimmed.elf.xz")) as elf:
        return {pa // 4096: elf.read(pa, 4096) for r in elf.runs
                for pa in range(r.start, r.end, 4096)}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_random_reads_through_a_small_cache_equal_the_elf_core(profile, variant):
    """Random reads of 1 byte to 3 pages (within the pages the ELF core holds too),
    through a cache of 8 pages: pages are evicted and read again, partial reads go
    through the cache and whole pages straight into the output; every byte is the
    ELF core's."""
    pages = _elf_pages(profile)
    rng = random.Random(zlib.crc32((profile + variant).encode()))
    with open_image(_path(profile, variant)) as memory:
        memory._reader.set_cache_pages(8)
        held = sorted(p for p in pages if memory.contains(p * 4096, 4096))
        assert len(held) > 30
        for _ in range(3000):
            first = rng.choice(held)
            count = 1
            while count < 3 and first + count in pages and memory.contains((first + count) * 4096):
                count += 1
            start = first * 4096 + rng.randrange(4096)
            end = min((first + count) * 4096, start + rng.choice((1, 8, 100, 4096, 9000)))
            want = b"".join(pages[p] for p in range(first, first + count))
            got = memory.read(start, end - start)
            assert got == want[start - first * 4096:end - first * 4096], (hex(start), end - start)
        stats = memory._reader.stats()
        assert stats["used"] == 8 and stats["hits"] > 0
        assert stats["loaded"] > len(held)             # evicted pages were loaded again


def test_reads_from_several_threads_share_one_cache():
    """cffi drops the GIL around C calls: the reader's lock keeps the cache whole."""
    import threading
    pages = _elf_pages("x86_64-4level")
    with open_image(_path("x86_64-4level", "makedumpfile-zlib")) as memory:
        memory._reader.set_cache_pages(4)
        held = sorted(p for p in pages if memory.contains(p * 4096, 4096))
        bad = []

        def worker(seed):
            rng = random.Random(seed)
            for _ in range(1500):
                pfn = rng.choice(held)
                at = rng.randrange(4096 - 16)
                if memory.read(pfn * 4096 + at, 16) != pages[pfn][at:at + 16]:
                    bad.append((seed, pfn, at))
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not bad and memory._reader.stats()["used"] == 4


def test_the_walker_reads_a_kdump_through_the_c_reader_not_python():
    """The speed path: the C walker's read function is the C page reader's, so a
    walk makes no Python call per physical read (a Python callback would count)."""
    with open_image(_path("x86_64-4level", "makedumpfile-zlib")) as memory:
        space = AddressSpace(memory)
        phys = space._walker._phys
        assert phys.read == native.ffi.addressof(native.lib, "ksi_kdump_read_fn")
        before = memory._reader.stats()
        calls = []
        memory_read = memory.read
        memory.read = lambda pa, n: calls.append(pa) or memory_read(pa, n)
        space.translate(0xFFFFFFFF81000000)
        after = memory._reader.stats()
        assert not calls and after["hits"] + after["misses"] > before["hits"] + before["misses"]


def test_python_decoders_when_the_system_has_no_libz_or_libzstd(monkeypatch):
    """Without the system's libz and libzstd (Windows), zlib and zstd pages are
    decoded by Python's zlib and cramjam through the C reader's callback: the same
    bytes."""
    monkeypatch.setattr(native, "system_decompressors", lambda: {})
    for variant in ("makedumpfile-zlib", "recompressed-zstd"):
        with open_image(_path("x86_64-4level", variant)) as memory, \
                open_image(_path("x86_64-4level", "makedumpfile-lzo")) as lzo:
            assert not memory._reader.native._system
            for r in memory.runs:
                assert memory.read(r.start, r.length) == lzo.read(r.start, r.length)
                assert memory.read(r.start + 5, 8) == lzo.read(r.start + 5, 8)


def test_system_decompressors_are_used_here():
    """This Linux machine has libz and libzstd: C decodes zlib and zstd itself."""
    found = native.system_decompressors()
    if not sys.platform.startswith("linux"):
        pytest.skip("the sonames looked up are Linux ones here")
    assert "zlib_uncompress" in found
    if ctypes.util.find_library("zstd"):
        assert "zstd_decompress" in found
        with open_image(_path("x86_64-4level", "recompressed-zstd")) as memory:
            assert memory._reader.native._r.zstd_dctx != native.ffi.NULL


def test_info_command():
    out, err = io.StringIO(), io.StringIO()
    assert main(["info", _path("x86_64-4level", "qemu-zlib.flat"), "--json"], out, err) == 0
    doc = json.loads(out.getvalue())
    assert doc["format"] == "kdump" and doc["kdump"]["flattened"]
    assert doc["kdump"]["phys_base_source"].startswith("the sub-header")
    out = io.StringIO()
    assert main(["info", _path("x86_64-4level", "makedumpfile-lzo")], out, err) == 0
    assert "lzo" in out.getvalue() and "phys_base" in out.getvalue()


# -- the page index (C) against a plain Python rank ---------------------------------

def test_index_against_python():
    rng = random.Random(7)
    bitmap = bytes(rng.choice((0, 0, 0xFF, rng.randrange(256))) for _ in range(5000))
    index = native.PageIndex(bitmap)
    bits = [bitmap[p // 8] >> (p % 8) & 1 for p in range(len(bitmap) * 8)]
    assert index.dumped == sum(bits)
    pfns = list(range(0, len(bits), 7)) + [len(bits), len(bits) + 100, (1 << 64) - 1]
    rank, expected = 0, {}
    for p, bit in enumerate(bits):
        if bit:
            expected[p] = rank
            rank += 1
    assert index.index_many(pfns) == [expected.get(p) for p in pfns]
    runs, start = [], None
    for p, bit in enumerate(bits + [0]):
        if bit and start is None:
            start = p
        elif not bit and start is not None:
            runs.append((start, p - start))
            start = None
    assert index.runs(chunk=3) == runs


# -- LZO1X: our C decoder against liblzo2 when the system has it ------------------------

def _liblzo():
    name = ctypes.util.find_library("lzo2")
    if not name:
        return None
    lib = ctypes.CDLL(name)
    return lib if hasattr(lib, "lzo1x_1_compress") else None


@pytest.mark.skipif(_liblzo() is None, reason="liblzo2 not installed (Debian: liblzo2-2); "
                    "the makedumpfile -l fixture checks the decoder without it")
def test_lzo_against_liblzo2():
    lib = _liblzo()
    rng = random.Random(3)
    work = ctypes.create_string_buffer(1 << 17)     # LZO1X_1_MEM_COMPRESS (16-bit pointers x 2^14)
    for trial in range(300):
        size = rng.choice((1, 3, 17, 4096, 4096, 20000))
        kind = trial % 4
        if kind == 0:
            data = bytes(rng.randrange(256) for _ in range(size))
        elif kind == 1:
            data = bytes(size)
        else:
            alphabet = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
            data = bytes(rng.choice(alphabet) for _ in range(size))
        out = ctypes.create_string_buffer(size + size // 16 + 64 + 3)
        n = ctypes.c_size_t()
        assert lib.lzo1x_1_compress(data, ctypes.c_size_t(size), out, ctypes.byref(n), work) == 0
        packed = out.raw[:n.value]
        got, why = native.lzo1x_decompress(packed, size)
        assert got == data, (trial, why)
        short, _why = native.lzo1x_decompress(packed, size - 1) if size > 1 else (None, "")
        assert short is None


def test_lzo_rejects_broken_streams():
    packed = None                     # a real LZO page of makedumpfile -l
    with open_image(_path("x86_64-4level", "makedumpfile-lzo")) as memory:
        reader = memory._reader
        for r in memory.runs:
            for pa in range(r.start, r.end, 4096):
                offset, size, flags, _ = reader.descriptor(pa // 4096)
                if flags & 2:
                    packed = reader.f.read(offset, size, "page")
                    break
            else:
                continue
            break
    assert native.lzo1x_decompress(packed, 4096)[0] is not None
    assert "ends" in native.lzo1x_decompress(packed[:-3], 4096)[1]
    assert "more than" in native.lzo1x_decompress(packed, 100)[1]
    assert "follow" in native.lzo1x_decompress(packed + b"\0", 4096)[1]
    # 18: one literal; then 0x40 with H = 1: a 3-byte copy from distance 9, past the start
    assert "before the start" in native.lzo1x_decompress(b"\x12A\x40\x01", 4096)[1]
    assert native.lzo1x_decompress(b"", 4096)[0] is None


# -- snappy: our C decoder against cramjam -----------------------------------------------

def test_snappy_against_cramjam():
    cramjam = pytest.importorskip("cramjam")
    rng = random.Random(5)
    for trial in range(300):
        size = rng.choice((0, 1, 3, 17, 60, 61, 300, 4096, 4096, 70000))
        kind = trial % 3
        if kind == 0:
            data = bytes(rng.randrange(256) for _ in range(size))
        elif kind == 1:
            data = bytes(size)
        else:
            alphabet = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
            data = bytes(rng.choice(alphabet) for _ in range(size))
        packed = bytes(cramjam.snappy.compress_raw(data))
        got, why = native.snappy_decompress(packed, size)
        assert got == data, (trial, why)
        if size:
            assert native.snappy_decompress(packed, size - 1)[0] is None
            assert native.snappy_decompress(packed[:-1], size)[0] is None
    assert "before the start" in native.snappy_decompress(b"\x08\x01\x05", 8)[1]
    assert "preamble" in native.snappy_decompress(b"\x05\x00A", 8)[1]


# -- bad input: one line each, never a crash, a hang or unbounded memory ---------------

def _pieces(variant="makedumpfile-zlib"):
    with open_image(_path("x86_64-4level", variant)) as memory:
        return read_pieces(memory)


def _with(pages, pfn, stored):
    """The pages with one page's stored bytes, flags and page_flags replaced."""
    changed = dict(pages)
    changed[pfn] = stored
    return changed


def _broken():
    head, block, bitmap_blocks, valid, pages = _pieces()
    good = write_kdump(head, block, bitmap_blocks, valid, pages)
    pfn = sorted(pages)[3]
    cases = {"truncated header": good[:300], "only the signature": b"KDUMP   "}
    cases["bitmaps past the end"] = good[:block * 2 + 100]
    desc = block * 2 + bitmap_blocks * block + 24 * 3      # pfn's descriptor: rank 3
    d = bytearray(good)
    struct.pack_into("<Q", d, desc, len(good) + 4096)
    cases["descriptor offset outside the file"] = bytes(d)
    d = bytearray(good)
    struct.pack_into("<I", d, desc + 8, 0xFFFFFFF0)
    cases["descriptor size outside the file"] = bytes(d)
    short = _with(pages, pfn, (zlib.compress(bytes(100)), 1, 0))
    cases["a page that decompresses to less than a block"] = write_kdump(
        head, block, bitmap_blocks, valid, short)
    bomb = _with(pages, pfn, (zlib.compress(bytes(64 << 20)), 1, 0))
    cases["a zlib decompression bomb"] = write_kdump(head, block, bitmap_blocks, valid, bomb)
    import cramjam
    for name, flag, fn in (("zstd", 0x20, cramjam.zstd.compress),
                           ("snappy", 0x4, cramjam.snappy.compress_raw)):
        bomb = _with(pages, pfn, (bytes(fn(bytes(16 << 20)))[:4000], flag, 0))
        cases["a %s decompression bomb" % name] = write_kdump(head, block, bitmap_blocks,
                                                              valid, bomb, status=flag)
    lzo_bomb = b"\x00" * 3000 + b"\x01"              # a literal run of 3 + 255 * 3000 + 1 bytes
    cases["an lzo bomb"] = write_kdump(head, block, bitmap_blocks, valid,
                                       _with(pages, pfn, (lzo_bomb, 2, 0)), status=2)
    cases["garbage zlib data"] = write_kdump(head, block, bitmap_blocks, valid,
                                             _with(pages, pfn, (b"\x78\x9c" + bytes(50), 1, 0)))
    cases["unknown compression flags"] = write_kdump(head, block, bitmap_blocks, valid,
                                                     _with(pages, pfn, (b"x" * 50, 0x41, 0)))
    flat = flatten(good)
    cases["flattened without its end record"] = flat[:-16]
    f = bytearray(flat)
    struct.pack_into(">q", f, 4096 + 8, -5)
    cases["flattened record with a negative size"] = bytes(f)
    second = 4096 + 16 + struct.unpack_from(">q", flat, 4096 + 8)[0]
    f = bytearray(flat)
    struct.pack_into(">q", f, second, 100)         # the second record lands inside the first
    cases["flattened records that overlap"] = bytes(f)
    f = bytearray(flat)
    struct.pack_into(">q", f, 16, 2)
    cases["makedumpfile header of another type"] = bytes(f)
    return cases, pfn


BROKEN, BROKEN_PFN = _broken()


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_kdumps_are_one_line(case, tmp_path):
    data = BROKEN[case]
    try:
        memory = open_image_bytes(data, name="bad.kdump")
    except KdumpFormatError as exc:
        message = str(exc)
    else:
        with pytest.raises(KdumpFormatError) as info:
            memory.read(BROKEN_PFN * 4096, 8)
        message = str(info.value)
        memory.close()
    assert message.startswith("bad.kdump: ") and "\n" not in message
    path = tmp_path / "bad.kdump"
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    status = main(["info", str(path)], out, err)
    assert status in (0, 1) and "Traceback" not in err.getvalue()
    assert err.getvalue().count("\n") == (1 if status else 0)


def test_flattened_descriptors_in_a_gap_between_records():
    """A flattened file whose records leave out the page descriptors: they read as
    zeros (as makedumpfile -R would leave them), so every page is a one-line error.
    fuzz_kdump_reader found the C reader reading past the record before such a gap
    (tests/fuzz/corpus/fuzz_kdump_reader/regress-flat-gap-offset)."""
    head, block, bitmap_blocks, valid, pages = _pieces("makedumpfile-lzo")
    plain = write_kdump(head, block, bitmap_blocks, valid, pages)
    desc_at = block * 2 + bitmap_blocks * block
    out = bytearray(b"makedumpfile\0\0\0\0" + struct.pack(">qq", 1, 1))
    out += bytes(4096 - len(out))
    for at in range(0, len(plain), 4096):
        if desc_at <= at < desc_at + 24 * len(pages):      # the descriptors
            continue
        piece = plain[at:at + 4096]
        out += struct.pack(">qq", at, len(piece)) + piece
    out += struct.pack(">qq", -1, -1)
    with open_image_bytes(bytes(out), name="gap.kdump") as memory:
        first = sorted(pages)[0]
        with pytest.raises(KdumpFormatError, match="gap.kdump: pfn %#x .*decompresses to 0 "
                                                   "bytes" % first):
            memory.read(first * 4096 + 8, 8)


def test_known_signature_never_falls_back_to_raw():
    for data in (b"KDUMP   " + bytes(100), b"DISKDUMP" + bytes(5000),
                 b"makedumpfile\0\0\0\0" + bytes(100)):
        with pytest.raises(KdumpFormatError):
            open_image_bytes(data, name="x")


def test_missing_decompressor_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cramjam", None)      # import cramjam fails
    monkeypatch.setattr(native, "system_decompressors", lambda: {})     # and no libzstd
    with open_image(_path("x86_64-4level", "recompressed-zstd")) as memory:
        r = memory.runs[0]
        with pytest.raises(MissingDecompressorError, match="pip install cramjam"):
            memory.read(r.start, 8)
        out, err = io.StringIO(), io.StringIO()
        status = main(["vtop", _path("x86_64-4level", "recompressed-zstd"), "ffffffff81000000"],
                      out, err)
        assert status == 1 and "pip install cramjam" in err.getvalue()
        assert err.getvalue().count("\n") == 1


# -- the real untrimmed dumps, when a fixture cache holds them -------------------------

CACHE = os.environ.get("KSINSPECT_KDUMP_CACHE", "")


@pytest.mark.skipif(not os.path.exists(os.path.join(CACHE, "work", "x86_64-4level",
                                                    "core.kdump-zlib")),
                    reason="set KSINSPECT_KDUMP_CACHE to make_qemu_fixture.py --kdump's --cache "
                           "to compare QEMU's untrimmed kdump with its ELF core")
def test_untrimmed_qemu_kdump_equals_its_elf(tmp_path):
    work = os.path.join(CACHE, "work", "x86_64-4level")
    with open_image(os.path.join(work, "core.kdump-zlib")) as k, \
            open_image(os.path.join(work, "core.elf.xz")) as e:
        assert [(r.start, r.length) for r in k.runs] == [(r.start, r.length) for r in e.runs]
        for r in k.runs:
            for pa in range(r.start, r.end, 1 << 20):
                n = min(1 << 20, r.end - pa)
                assert k.read(pa, n) == e.read(pa, n), hex(pa)


# -- the other commands on a kdump: as on the ELF core / raw image -----------------------

@pytest.mark.parametrize("command", ["gdt", "idt"])
@pytest.mark.parametrize("profile", PROFILES)
def test_tables_as_on_the_elf_core(command, profile):
    def run(path):
        out = io.StringIO()
        assert main([command, path, "--json"], out, io.StringIO()) == 0
        return json.loads(out.getvalue())
    elf = run(os.path.join(DATA, profile, "core-trimmed.elf.xz"))
    for variant in ("qemu-zlib.flat", "makedumpfile-lzo"):
        assert run(_path(profile, variant)) == elf


def test_psscan_and_pslist_as_on_the_raw_image():
    """Windows processes planted in a raw image (tests/builders/eprocess_image_builder.py), then
    the same pages written as a zlib kdump: pslist and psscan find the same."""
    sys.path.insert(0, os.path.dirname(__file__))
    from builders.eprocess_image_builder import standard_image
    from ksinspect.windows import load_layout
    from ksinspect.windows.pslist import pslist
    from ksinspect.windows.psscan import psscan
    builder, planted = standard_image("win10-22h2-19045.2965-x64", "4level")
    builder.unlink(planted[2])
    raw = builder.memory()
    head, block, bitmap_blocks, valid, _pages = _pieces()
    pages = {}
    for r in raw.runs:
        for pa in range(r.start, r.end, block):
            page = raw.read(pa, block)
            if any(page):
                pages[pa // block] = (zlib.compress(page), 1, 0)
    memory = open_image_bytes(write_kdump(head, block, bitmap_blocks, valid, pages),
                              name="planted.kdump")
    layout = load_layout("win10-22h2-19045.2965-x64")
    results = []
    for image in (raw, memory):
        space = AddressSpace(image, cr3=builder.cr3, mode="4level")
        listed = pslist(image, layout, space=space, read_pebs=False)
        scan = psscan(image, layout, space=space, listed=listed.processes, chunk=1 << 16)
        results.append(([e.process.pid for e in listed],
                         [(h.process.physical, h.process.pid, h.status) for h in scan]))
    assert results[0] == results[1]
    assert [pid for _pa, pid, status in results[1][1] if status == "UNLINKED"] == [356]


from hypothesis import HealthCheck, given, settings, strategies as st   # noqa: E402

from ksinspect.errors import InvalidAddressError   # noqa: E402

_PLAIN = lzma.open(_path("x86_64-4level", "makedumpfile-lzo")).read()
_REGIONS = (0, 4096, 8192, 8192 + 64 * 4096)     # header, sub-header, bitmaps, descriptors


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_REGIONS), st.integers(0, 4095), st.integers(0, 255)),
                min_size=1, max_size=6), st.booleans())
def test_random_corruption_never_crashes(edits, flattened):
    data = bytearray(_PLAIN)
    for region, at, value in edits:
        if region + at < len(data):
            data[region + at] = value
    blob = flatten(bytes(data)) if flattened else bytes(data)
    try:
        memory = open_image_bytes(blob, name="fuzz.kdump")
    except KdumpFormatError:
        return
    with memory:
        for r in memory.runs[:40]:
            try:
                page = memory.read(r.start, 4096)
            except (KdumpFormatError, InvalidAddressError):
                continue
            assert len(page) == 4096


def test_a_file_that_shrinks_while_open_is_an_error_not_sigbus(tmp_path):
    path = tmp_path / "shrinks.kdump"
    path.write_bytes(lzma.open(_path("x86_64-4level", "makedumpfile-zlib")).read())
    with open_image(str(path)) as memory:
        last = memory.runs[-1]
        os.truncate(str(path), 20000)
        with pytest.raises(ImageFormatError) as info:
            memory.read(last.end - 4096, 8)
        assert "shrank" in str(info.value)


def test_a_32_bit_writers_headers():
    """makedumpfile built for i386 writes a disk_dump_header whose timestamp is 8 bytes
    (status at +412, not +424) and a kdump_sub_header of 32-bit longs (diskdump_mod.h;
    QEMU's KdumpSubHeader32): the same dump rewritten so reads the same pages."""
    head, block, bitmap_blocks, valid, pages = _pieces()
    h = bytearray(head)
    fields64 = struct.unpack_from("<IiiIIIIIIi", head, 424)
    h[412:464] = bytes(52)
    struct.pack_into("<IiiIIIIIIi", h, 412, *fields64)
    sub = struct.unpack_from("<QIIQQQQQQQQQQQ", head, block)
    h[block:block + 104] = bytes(104)
    struct.pack_into("<IIIIIQIQIQIQQQ", h, block, *sub)
    data = write_kdump(bytes(h), block, bitmap_blocks, valid, pages, word_size=4)
    with open_image_bytes(data, name="i386.kdump") as m32, \
            open_image(_path("x86_64-4level", "makedumpfile-zlib")) as m64:
        assert m32.container.header.word_size == 4 and m64.container.header.word_size == 8
        assert m32.container.sub == m64.container.sub
        assert m32.runs == m64.runs and m32.cpu is not None
        for r in m64.runs:
            assert m32.read(r.start, r.length) == m64.read(r.start, r.length)


def test_phys_base_from_vmcoreinfo_over_the_sub_header():
    """QEMU writes a meaningless phys_base in the sub-header; VMCOREINFO's
    NUMBER(phys_base) (decimal, may be negative: crash_core.c prints it with %ld)
    is the one used, and the disagreement is a warning."""
    head, block, bitmap_blocks, valid, pages = _pieces()
    h = bytearray(head)
    struct.pack_into("<Q", h, block, 0x1234000)                  # sub-header phys_base
    data = bytearray(write_kdump(bytes(h), block, bitmap_blocks, valid, pages))
    text = b"OSRELEASE=6.1.0\nPAGESIZE=4096\nNUMBER(phys_base)=-16777216\n"
    struct.pack_into("<QQ", data, block + 32, len(data), len(text))   # offset/size_vmcoreinfo
    data += text
    with open_image_bytes(bytes(data), name="vmci.kdump") as memory:
        info = memory.container
        assert info.phys_base == -16777216 and info.phys_base_source.startswith("VMCOREINFO")
        assert any("0x1234000" in w for w in memory.warnings)
        assert memory.vmcoreinfo.startswith("OSRELEASE=6.1.0")


def test_a_broken_page_table_page_is_an_error_on_every_walk_path():
    """A page-table page that does not decompress stops the walk with the kdump's
    error, never with "not mapped" or "not in the image" (the C walker reads a kdump
    through a Python callback, which must not swallow it)."""
    from array import array as _array
    va = 0xFFFFFFFF81000000
    with open_image(os.path.join(DATA, "x86_64-4level", "core-trimmed.elf.xz")) as elf:
        step = AddressSpace(elf).translate(va).path[1]      # the PDPT entry's table
    head, block, bitmap_blocks, valid, pages = _pieces()
    broken = _with(pages, step.address // block, (b"\x78\x9c" + bytes(40), 1, 0))
    memory = open_image_bytes(write_kdump(head, block, bitmap_blocks, valid, broken),
                              name="pt.kdump")
    space = AddressSpace(memory)
    for attempt in (lambda: space.translate(va), lambda: space.read(va, 8),
                    lambda: space.translate_many(_array("Q", [va, va + 4096])),
                    lambda: list(space.mappings(va, va + (1 << 30)))):
        with pytest.raises(KdumpFormatError, match="pt.kdump: pfn"):
            attempt()
    import gc                       # the raise dropped the C output buffers cleanly: a
    gc.collect()                    # traceback holding an exported one crashed the collector
