"""Hostile input, round 2 (issue 19): one generator per class of attack, each
case a separate ``ksinspect`` process (tests/hostile_probe.py) checked for

* its exit status (0, 1 bad data, 2 bad usage, never a signal),
* at most one line on stderr, naming the input when it fails, no traceback,
* a time bound and a peak-RSS bound (VmHWM, written by the probe at exit).

Every file is made here, on the fly: small, sparse, or a compressed bomb
that is small on disk. The classes (the live ones have their own files:
tests/test_break_signals.py, tests/test_peb_linux_processes.py):

* NONREG   paths that are not regular files (FIFO, /dev/zero, /dev/urandom,
           a directory) as the image, --registers, --symbols, --layout,
           --from-file;
* CAPS     text inputs over their size cap, plain and as gzip/xz bombs, and
           image bombs with --max-decompressed on every image command;
* ESCAPES  control characters from a kallsyms file, an ELF note owner and
           file names: escaped in tables and messages, exact in JSON;
* LAYOUTS  layout and ISF files built to break the loader (Infinity, null,
           wrong JSON types, 100,000-deep nesting, a structure containing
           itself, a 4 GiB _EPROCESS, ...);
* FLOODS   walks and scans that must stay bounded: max-entries 0 on a
           self-mapping PML4, 200,000 PN_XNUM program headers, every page
           MZ+PE, a 4 GiB sparse psscan, read and vtop that stream;
* VALUES   numbers with non-ASCII digits, out-of-range counts, nan, a
           breakpoint address beyond user space, a non-UTF-8 address file;
* STREAMS  stdout closed, stdout on /dev/full, stderr closed, Ctrl-C while
           the modules are imported.

`CASE_COUNTS` (printed by ``python tests/test_hostile_round2.py``) says how many
cases each class holds.
"""
import gzip
import json
import lzma
import os
import signal
import struct
import subprocess
import sys
import time

import pytest

from builders.image_builder import build_elf_core, build_note, qemu_cpu_state, qword_page
from conftest import HERE, qemu_file

PROBE = os.path.join(HERE, "hostile_probe.py")
CORE = qemu_file("x86_64-4level")
KALLSYMS = qemu_file("x86_64-4level", "kallsyms.txt.xz")
LAYOUT = "win10-1507-10240.16384-x64"
LAYOUT_FILE = os.path.join(HERE, "..", "ksinspect", "windows", "layouts", LAYOUT + ".json")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="FIFOs, /dev files and VmHWM are Linux's")
MiB = 1 << 20
SANITIZED = bool(os.environ.get("KSINSPECT_SANITIZED"))
PAGING = ("--cr3", "1000", "--mode", "4level")


def probe(argv, seconds=20, peak_mib=250, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, tmp_path=None):
    """Run one case; returns (status, stdout, stderr, seconds, peak MiB)."""
    if SANITIZED:           # tools/sanitize_test.py: slower, and RSS means nothing
        seconds, peak_mib = seconds * 4, float("inf")
    peak_file = os.path.join(str(tmp_path), "peak-%d" % time.monotonic_ns())
    env = dict(os.environ, KSI_PROBE_PEAK=peak_file)
    started = time.monotonic()
    run = subprocess.run([sys.executable, PROBE] + [str(a) for a in argv], stdin=stdin,
                         stdout=stdout, stderr=stderr, env=env, timeout=seconds + 30)
    elapsed = time.monotonic() - started
    peak = None
    if os.path.exists(peak_file):
        with open(peak_file) as fh:
            peak = int(fh.read()) / 1024
    out = run.stdout.decode("utf-8", "replace") if isinstance(run.stdout, bytes) else ""
    err = run.stderr.decode("utf-8", "replace") if isinstance(run.stderr, bytes) else ""
    assert elapsed < seconds, "%s took %.1f s (bound %d s)" % (argv, elapsed, seconds)
    if peak is not None:
        assert peak < peak_mib, "%s peaked at %.0f MiB (bound %d MiB)" % (argv, peak, peak_mib)
    return run.returncode, out, err, elapsed, peak


PROVENANCE = "ksinspect: note: read through CR3 "


def without_provenance(err):
    """stderr without the note on how the page tables were read (json, jsonl
    and csv carry it first, README "The command line"): it is not an error."""
    return "".join(line for line in err.splitlines(True) if not line.startswith(PROVENANCE))


def check_one_line(status, err, expected, *needles):
    assert status == expected, (status, err)
    assert "Traceback" not in err, err
    err = without_provenance(err)
    assert err.count("\n") == 1 and err.startswith("ksinspect: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)


# -------------------------------------------------------------------- shared files

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    made = {"root": root}
    # A raw image with 4-level tables identity-mapping its first 8 pages (SDM §4.5).
    pages = {0x1000: qword_page({0: 0x2003}), 0x2000: qword_page({0: 0x3003}),
             0x3000: qword_page({0: 0x4003}),
             0x4000: qword_page({i: i * 0x1000 | 3 for i in range(8)})}
    raw = bytearray(0x8000)
    for pa, data in pages.items():
        raw[pa:pa + len(data)] = data
    made["image"] = root / "small.raw"
    made["image"].write_bytes(bytes(raw))
    # A PML4 whose 512 entries all name itself (2^36 paths).
    made["selfmap"] = root / "selfmap.raw"
    made["selfmap"].write_bytes(bytes(0x1000) + struct.pack("<512Q", *[0x1007] * 512)
                                + bytes(0x1000))
    fifo = root / "fifo"
    os.mkfifo(fifo)
    made["fifo"] = fifo
    made["dir"] = root / "a-directory"
    made["dir"].mkdir()
    made["addresses"] = root / "vas.txt"
    made["addresses"].write_text("1000\n2000\n")
    return made


# ------------------------------------------------------------------- NONREG

NONREG_PATHS = ["fifo", "/dev/zero", "/dev/urandom", "dir"]
NONREG_OPTIONS = [
    # (option, argv builder, expected status, what the message says)
    ("image", lambda p, f: ["info", p], 1, "not a regular file"),
    ("--registers", lambda p, f: ["info", f["image"], "--registers", p], 1, "must be a regular file"),
    ("--symbols", lambda p, f: ["idt", CORE, "--symbols", p], 1, "must be a regular file"),
    ("--layout", lambda p, f: ["psscan", f["image"], "--layout", p], 2, "must be a regular file"),
    ("--from-file", lambda p, f: ["vtop", f["image"], *PAGING, "--from-file", p], 2,
     "must be a regular file"),
]
NONREG_CASES = [(o, p) for o, *_ in NONREG_OPTIONS for p in NONREG_PATHS]


@pytest.mark.parametrize("option, path", NONREG_CASES)
def test_nonreg(option, path, files, tmp_path):
    where = str(files[path]) if path in files else path
    _, build, expected, needle = next(o for o in NONREG_OPTIONS if o[0] == option)
    status, out, err, _, _ = probe(build(where, files), seconds=15, peak_mib=120,
                                   tmp_path=tmp_path)
    check_one_line(status, err, expected, where, needle)


# ---------------------------------------------------------------------- CAPS

def _sparse(path, size):
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def _bomb(path, size, opener):
    """size zero bytes, compressed in 1 MiB pieces (about 1 KiB per MiB on disk)."""
    piece = bytes(MiB)
    with opener(path, "wb") as fh:
        for _ in range(size // MiB):
            fh.write(piece)
    return path


def _gzip_bomb(path, size):
    return _bomb(path, size, lambda p, m: gzip.open(p, m, compresslevel=1))


def _xz_bomb(path, size):
    return _bomb(path, size, lambda p, m: lzma.open(p, m, preset=0))


CAPS_CASES = [
    # (id, maker(root) -> argv, expected status, needles)
    ("symbols-65MiB", lambda r, f: ["idt", CORE, "--symbols",
                                     _sparse(r / "big.map", 65 * MiB)], 1, ["64 MiB"]),
    ("layout-129MiB", lambda r, f: ["psscan", f["image"], "--layout",
                                    _sparse(r / "big.json", 129 * MiB)], 2, ["128 MiB"]),
    ("registers-5MiB", lambda r, f: ["info", f["image"], "--registers",
                                     _sparse(r / "regs.txt", 5 * MiB)], 1, ["4 MiB"]),
    ("from-file-65MiB", lambda r, f: ["vtop", f["image"], *PAGING, "--from-file",
                                      _sparse(r / "vas-big.txt", 65 * MiB)], 2, ["64 MiB"]),
    ("symbols-xz-bomb", lambda r, f: ["idt", CORE, "--symbols",
                                      _xz_bomb(r / "bomb.map.xz", 80 * MiB)], 1,
     ["64 MiB once decompressed"]),
    ("layout-gzip-bomb", lambda r, f: ["psscan", f["image"], "--layout",
                                       _gzip_bomb(r / "bomb.json.gz", 140 * MiB)], 2,
     ["128 MiB once decompressed"]),
    ("registers-gzip-bomb", lambda r, f: ["info", f["image"], "--registers",
                                          _gzip_bomb(r / "regs.txt.gz", 8 * MiB)], 1,
     ["4 MiB once decompressed"]),
]


def _image_bomb(root):
    return _gzip_bomb(root / "image.raw.gz", 40 * MiB)


BOMB = ("--max-decompressed", "16")
CAPS_CASES += [
    ("image-bomb-" + argv_of(None)[0], (lambda a: lambda r, f: a(_image_bomb(r)))(argv_of), 1,
     ["more than %d bytes" % (16 * MiB)])
    for argv_of in [
        lambda b: ["info", b, *BOMB], lambda b: ["vtop", b, "1000", *PAGING, *BOMB],
        lambda b: ["maps", b, *PAGING, *BOMB], lambda b: ["ptov", b, "1000", *PAGING, *BOMB],
        lambda b: ["read", b, "0", "10", *PAGING, *BOMB], lambda b: ["idt", b, *BOMB],
        lambda b: ["gdt", b, "--base", "0", "--limit", "7f", "--physical", *BOMB],
        lambda b: ["psscan", b, "--layout", LAYOUT, *BOMB],
        lambda b: ["pslist", b, "--layout", LAYOUT, *PAGING, *BOMB],
        lambda b: ["eprocess", b, "--address", "1000", "--layout", LAYOUT, *PAGING, *BOMB],
        lambda b: ["peb", b, "--address", "1000", "--layout", LAYOUT, *PAGING, *BOMB]]
]


@pytest.mark.parametrize("case", CAPS_CASES, ids=[c[0] for c in CAPS_CASES])
def test_caps(case, files, tmp_path):
    name, make, expected, needles = case
    argv = [str(a) for a in make(tmp_path, files)]
    status, out, err, _, _ = probe(argv, seconds=20, peak_mib=200, tmp_path=tmp_path)
    check_one_line(status, err, expected, *needles)


# ------------------------------------------------------------------- ESCAPES

HOSTILE = "\x1b]0;owned\x07\x1b[2J"


def _hostile_kallsyms(root):
    text = lzma.decompress(open(KALLSYMS, "rb").read()).decode("ascii")
    text = text.replace(" T asm_exc_divide_error\n", " T evil%sname\n" % HOSTILE)
    path = root / "kallsyms-hostile.txt"
    path.write_text(text)
    return path


def _hostile_note_core(root):
    core = build_elf_core([(0, bytes(0x8000))], qemu_state=qemu_cpu_state(),
                          notes=[build_note("OWN" + HOSTILE, 1, b"x" * 8)])
    path = root / "note.elf"
    path.write_bytes(core)
    return path


def _no_controls(text):
    assert not any(c in text for c in "\x1b\x07\r"), repr(text[:300])


def test_escapes_kallsyms_table_and_json(tmp_path):
    path = _hostile_kallsyms(tmp_path)
    status, out, err, _, _ = probe(["idt", CORE, "--symbols", path], tmp_path=tmp_path)
    assert status == 0 and err == ""
    _no_controls(out)
    assert "evil\\x1b]0;owned\\x07\\x1b[2Jname" in out
    status, out, _, _, _ = probe(["idt", CORE, "--symbols", path, "--json"], tmp_path=tmp_path)
    assert status == 0
    assert json.loads(out)[0]["symbol"] == "evil" + HOSTILE + "name"      # exact in JSON


def test_escapes_note_owner_in_info(tmp_path):
    path = _hostile_note_core(tmp_path)
    status, out, err, _, _ = probe(["info", path], tmp_path=tmp_path)
    assert status == 0, err
    _no_controls(out)
    assert "OWN\\x1b]0;owned\\x07\\x1b[2J" in out
    status, out, _, _, _ = probe(["info", path, "--json"], tmp_path=tmp_path)
    assert "OWN" + HOSTILE in json.loads(out)["description"]


ESCAPE_NAMES = ["two\nlines.raw", "esc" + HOSTILE + ".raw", "cr\rover.raw", "bidi\u202etxt.raw"]


@pytest.mark.parametrize("name", ESCAPE_NAMES, ids=["newline", "esc", "cr", "bidi"])
@pytest.mark.parametrize("where", ["image", "from-file", "symbols", "layout"])
def test_escapes_file_names_in_errors(name, where, files, tmp_path):
    missing = str(tmp_path / name)
    argv = {"image": ["info", missing],
            "from-file": ["vtop", files["image"], *PAGING, "--from-file", missing],
            "symbols": ["idt", CORE, "--symbols", missing],
            "layout": ["psscan", files["image"], "--layout", missing]}[where]
    status, out, err, _, _ = probe(argv, tmp_path=tmp_path)
    escaped = missing.encode("unicode_escape").decode("ascii").replace("\\\\", "\\")
    assert status in (1, 2) and err.count("\n") == 1 and "Traceback" not in err, err
    _no_controls(err)
    assert "\u202e" not in err
    # The name is there, escaped the way ksinspect.safe_text writes it.
    from ksinspect.safe_text import printable
    assert printable(missing) in err, (escaped, err)


# ------------------------------------------------------------------- LAYOUTS

def _good():
    with open(LAYOUT_FILE, encoding="utf-8") as fh:
        return json.load(fh)


def _isf():
    return {"metadata": {"format": "6.2.0", "producer": {"name": "t", "version": "1"},
                         "windows": {"pdb": {"machine_type": 0x8664}}},
            "base_types": {"pointer": {"kind": "int", "size": 8, "signed": False},
                           "unsigned long": {"kind": "int", "size": 4, "signed": False}},
            "user_types": {"_EPROCESS": {"kind": "struct", "size": 0x10, "fields": {
                "UniqueProcessId": {"offset": 8, "type": {"kind": "pointer",
                                                          "subtype": {"kind": "base",
                                                                      "name": "void"}}}}}},
            "enums": {}, "symbols": {}}


def _case(base, change):
    """A document made by base(), changed, as JSON (NaN and Infinity allowed)."""
    def make():
        doc = base()
        change(doc)
        return json.dumps(doc, allow_nan=True)
    return make


def _layout_case(change):
    return _case(_good, change)


def _isf_case(change):
    return _case(_isf, change)


def _set(path, value):
    def change(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


_PID = ["structs", "_EPROCESS", "fields", "UniqueProcessId"]
_LINKS = ["structs", "_EPROCESS", "fields", "ActiveProcessLinks"]
LAYOUT_CASES = [
    ("offset-infinity", _layout_case(_set(_PID + ["offset"], float("inf"))), "offset"),
    ("offset-nan", _layout_case(_set(_PID + ["offset"], float("nan"))), "NaN"),
    ("offset-float", _layout_case(_set(_PID + ["offset"], 8.5)), "not an integer"),
    ("offset-huge", _layout_case(_set(_PID + ["offset"], 10 ** 30)), "offset"),
    ("offset-negative", _layout_case(_set(_PID + ["offset"], -8)), "outside"),
    ("offset-bool", _layout_case(_set(_PID + ["offset"], True)), "not an integer"),
    ("offset-string", _layout_case(_set(_PID + ["offset"], "8")), "not an integer"),
    ("pointer-size-infinity", _layout_case(_set(["pointer_size"], float("inf"))), "pointer_size"),
    ("pointer-size-null", _layout_case(_set(["pointer_size"], None)), "pointer_size"),
    ("size-null-list", _layout_case(_set(["structs", "_EPROCESS", "size"], [1])), "size"),
    ("size-4GiB", _layout_case(_set(["structs", "_EPROCESS", "size"], 1 << 32)), "size"),
    ("size-infinity", _layout_case(_set(["structs", "_EPROCESS", "size"], float("inf"))),
     "size"),
    ("array-count-huge", _layout_case(_set(_PID + ["type"], "uint8[99999999999]")),
     "elements"),
    ("bit-position-infinity", _layout_case(lambda d: d["structs"]["_EPROCESS"]["fields"][
        "UniqueProcessId"].update(bit_position=float("inf"), bit_length=1)), "bit_position"),
    ("bit-length-null", _layout_case(lambda d: d["structs"]["_EPROCESS"]["fields"][
        "UniqueProcessId"].update(bit_position=1, bit_length=None)), "bit_length"),
    ("arch-list", _layout_case(_set(["arch"], ["x64"])), "arch"),
    ("structs-list", _layout_case(_set(["structs"], [])), "structs"),
    ("fields-string", _layout_case(_set(["structs", "_EPROCESS", "fields"], "x")), "fields"),
    ("member-list", _layout_case(_set(_PID, [1, 2])), "UniqueProcessId"),
    ("type-null", _layout_case(_set(_PID + ["type"], None)), "type"),
    ("self-embedding", _layout_case(_set(_LINKS + ["type"], "_EPROCESS")), "contains itself"),
    ("mutual-embedding", _layout_case(lambda d: (
        d["structs"]["_LIST_ENTRY"]["fields"]["Flink"].update(type="_EPROCESS"),
        d["structs"]["_EPROCESS"]["fields"]["ActiveProcessLinks"].update(type="_LIST_ENTRY"))),
     "contains itself"),
    ("nested-100000", lambda: "[" * 100000 + "]" * 100000, "nested too deeply"),
    ("not-utf8", lambda: b'{"structs": "\xff\xfe"}', "not UTF-8"),
    ("top-level-list", lambda: "[1, 2, 3]", "neither"),
    ("isf-metadata-list", _isf_case(_set(["metadata"], [1])), "metadata"),
    ("isf-metadata-string", _isf_case(_set(["metadata"], "x")), "metadata"),
    ("isf-machine-list", _isf_case(_set(["metadata", "windows", "pdb", "machine_type"], [1])),
     "machine_type"),
    ("isf-pointer-size-infinity", _isf_case(_set(["base_types", "pointer", "size"],
                                                 float("inf"))), "size"),
    ("isf-size-null-field-offset", _isf_case(_set(["user_types", "_EPROCESS", "fields",
                                                   "UniqueProcessId", "offset"], None)),
     "offset"),
    ("isf-array-count-infinity", _isf_case(_set(["user_types", "_EPROCESS", "fields",
                                                 "UniqueProcessId", "type"],
                                                {"kind": "array", "count": float("inf"),
                                                 "subtype": {"kind": "base",
                                                             "name": "unsigned long"}})),
     "count"),
    ("isf-self-embedding", _isf_case(_set(["user_types", "_EPROCESS", "fields",
                                           "UniqueProcessId", "type"],
                                          {"kind": "struct", "name": "_EPROCESS"})),
     "contains itself"),
    ("isf-4GiB", _isf_case(_set(["user_types", "_EPROCESS", "size"], 1 << 32)), "size"),
    ("isf-deep-types", _isf_case(_set(["user_types", "_EPROCESS", "fields", "UniqueProcessId",
                                       "type"], json.loads(
        '{"kind": "pointer", "subtype": ' * 200 + '{"kind": "base", "name": "void"}'
        + "}" * 200))), "nest deeper"),
]


@pytest.mark.parametrize("case", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_layouts(case, files, tmp_path):
    name, make, needle = case
    content = make()
    path = tmp_path / (name + ".json")
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    status, out, err, _, _ = probe(["psscan", files["image"], "--layout", path],
                                   seconds=15, peak_mib=200, tmp_path=tmp_path)
    check_one_line(status, err, 2, str(path), needle)
    # The library: the layout error, naming the file.
    from ksinspect.errors import UnknownLayoutError
    from ksinspect.windows.layout_files import load_layout
    with pytest.raises(UnknownLayoutError, match=str(path).replace(".", r"\.")):
        load_layout(str(path))


# -------------------------------------------------------------------- FLOODS

def _xnum_core(root, count):
    """An ELF64 core with PN_XNUM and `count` PT_LOADs of one page each (gABI
    "Extended program header numbering": e_phnum 0xffff, the count in
    section header 0's sh_info)."""
    phoff, data = 128, 128 + 56 * count
    data = (data + 4095) & ~4095
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack(
        "<HHIQQQIHHHHHH", 4, 62, 1, 0, phoff, 64, 0, 64, 56, 0xFFFF, 64, 1, 0)
    section0 = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, count, 0, 0)
    table = b"".join(struct.pack("<IIQQQQQQ", 1, 4, data, 0, i * 0x2000, 4096, 4096, 4096)
                     for i in range(count))
    path = root / "xnum.elf"
    with open(path, "wb") as fh:
        fh.write(header + section0 + table)
        fh.seek(data)
        fh.write(bytes(4096))
    return path


def _mz_flood(root, pages=256):
    """Every page a plausible PE header (MZ, PE\\0\\0, PE32+, SizeOfImage 64 MiB)
    whose upper half also holds page-table entries, so the kernel half is
    mapped with MZ pages everywhere (PE/COFF spec §3; SDM §4.5)."""
    page = bytearray(4096)
    page[0:2] = b"MZ"
    struct.pack_into("<I", page, 0x3C, 0x80)
    page[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<HH", page, 0x84, 0x8664, 1)
    struct.pack_into("<H", page, 0x80 + 20, 0xF0)
    struct.pack_into("<H", page, 0x98, 0x20B)
    struct.pack_into("<I", page, 0x98 + 56, 64 << 20)
    for i in range(256, 512):
        struct.pack_into("<Q", page, 8 * i, ((i - 255) % pages) * 0x1000 | 3)
    path = root / "mz.raw"
    path.write_bytes(bytes(page) * pages)
    return path


def _sparse_image(root, size):
    path = root / ("sparse-%d.raw" % size)
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.seek(0x1000)
        fh.write(qword_page({0: 0x2003}))
        fh.seek(0x2000)
        fh.write(qword_page({0: 0x83}))          # PDPT[0]: a 1 GiB page at 0 (PS)
    return path


FLOOD_CASES = [
    # (id, argv maker, expected status, seconds, peak MiB, needle in stderr or None)
    ("selfmap-max-entries-0", lambda r, f: ["maps", f["selfmap"], *PAGING, "--max-entries", "0",
                                            "--merge", "rights"], 2, 10, 120, "--max-entries"),
    ("selfmap-ptov-max-entries-0", lambda r, f: ["ptov", f["selfmap"], "1000", *PAGING,
                                                 "--max-entries", "0"], 2, 10, 120,
     "--max-entries"),
    ("selfmap-maps-rights-default-cap", lambda r, f: ["maps", f["selfmap"], *PAGING, "--merge",
                                                      "rights", "--format", "jsonl"],
     1, 30, 200, "max_entries"),
    ("pn-xnum-100000", lambda r, f: ["info", _xnum_core(r, 100000)], 0, 20, 200, None),
    ("pn-xnum-50000-json", lambda r, f: ["info", _xnum_core(r, 50000), "--json"], 0, 30, 250,
     None),
    ("mz-flood-pslist", lambda r, f: ["pslist", _mz_flood(r), "--layout", LAYOUT, *PAGING],
     1, 25, 250, "stopped after"),
    ("mz-flood-psscan", lambda r, f: ["psscan", _mz_flood(r), "--layout", LAYOUT, *PAGING],
     0, 25, 250, None),
    # Without MADV_DONTNEED behind the scan, the file-backed RSS reaches 512 MiB.
    ("psscan-512MiB-sparse", lambda r, f: ["psscan", _sparse_image(r, 512 * MiB), "--layout",
                                           LAYOUT], 0, 30, 150, None),
    # read and vtop stream: the whole output is never held (16 MiB as a hexdump
    # is 80 MiB of text; 100,000 translations as dicts about 150 MiB).
    ("read-16MiB-table", lambda r, f: ["read", _sparse_image(r, 128 * MiB), "0", "1000000",
                                       *PAGING], 0, 40, 100, None),
    ("read-64MiB-json", lambda r, f: ["read", _sparse_image(r, 128 * MiB), "0", "4000000",
                                      *PAGING, "--json"], 0, 30, 120, None),
    ("vtop-100000-addresses", lambda r, f: ["vtop", _sparse_image(r, 128 * MiB), *PAGING,
                                            "--from-file", _many_addresses(r, 100000),
                                            "--format", "jsonl"], 0, 40, 150, None),
]


def _many_addresses(root, count):
    path = root / "many.txt"
    path.write_text("".join("%x\n" % (i * 0x1000) for i in range(count)))
    return path


@pytest.mark.parametrize("case", FLOOD_CASES, ids=[c[0] for c in FLOOD_CASES])
def test_floods(case, files, tmp_path):
    name, make, expected, seconds, peak, needle = case
    status, out, err, elapsed, used = probe(make(tmp_path, files), seconds=seconds,
                                            peak_mib=peak, stdout=subprocess.DEVNULL,
                                            tmp_path=tmp_path)
    if expected == 0:
        assert status == 0 and "Traceback" not in err, err
        # at most a note (psscan's list cross-check) beside the provenance note
        assert without_provenance(err).count("\n") <= 1, err
    else:
        check_one_line(status, err, expected, needle)


def test_library_max_entries_zero_is_refused(files):
    from ksinspect.errors import DecodeError
    from ksinspect.memory import open_image
    from ksinspect.paging import AddressSpace
    with open_image(files["selfmap"]) as memory:
        space = AddressSpace(memory, cr3=0x1000, mode="4level")
        for call in (lambda: list(space.mappings(max_entries=0)),
                     lambda: space.mapping_table(max_entries=0),
                     lambda: space.physical_to_virtual(0x1000, max_entries=0)):
            with pytest.raises(DecodeError, match="no unlimited walk"):
                call()


# -------------------------------------------------------------------- VALUES

VALUE_CASES = [
    # (argv maker, expected status, needle)
    (lambda f: ["selector", "\u0663\u0663"], 2, "not a hex number"),          # Arabic-Indic 33
    (lambda f: ["selector", "\uff13\uff13"], 2, "not a hex number"),          # fullwidth 33
    (lambda f: ["selector", "0x\u0663\u0663"], 2, "not a hex number"),
    (lambda f: ["selector", "0n\u0663"], 2, "not a decimal number"),
    (lambda f: ["pte", "\u0661", "--mode", "4level", "--level", "1"], 2, "not a hex number"),
    (lambda f: ["maps", f["image"], *PAGING, "--max-entries", "-1"], 2, "--max-entries"),
    (lambda f: ["maps", f["image"], *PAGING, "--max-entries", str(2 ** 70)], 2, "--max-entries"),
    (lambda f: ["maps", f["image"], *PAGING, "--max-entries", "\u0661\u0660"], 2,
     "--max-entries"),
    (lambda f: ["maps", f["image"], *PAGING, "--max-entries", "1e9"], 2, "--max-entries"),
    (lambda f: ["break", "--timeout", "nan", "--sw", "1", "--", "/bin/true"], 2, "--timeout"),
    (lambda f: ["break", "--timeout", "inf", "--sw", "1", "--", "/bin/true"], 2, "--timeout"),
    (lambda f: ["break", "--timeout", "-1", "--sw", "1", "--", "/bin/true"], 2, "--timeout"),
    (lambda f: ["break", "--count", "-1", "--sw", "1", "--", "/bin/true"], 2, "--count"),
    (lambda f: ["break", "--count", str(2 ** 70), "--sw", "1", "--", "/bin/true"], 2, "--count"),
    (lambda f: ["break", "--sw", "0xffffffffffffffff", "--", "/bin/sleep", "5"], 2,
     "not a user-space address"),
    (lambda f: ["vtop", f["image"], *PAGING, "--from-file", f["not-utf8"]], 2, "not UTF-8"),
    (lambda f: ["vtop", f["image"], *PAGING, "--from-file", f["empty"]], 2, "no linear address"),
    (lambda f: ["info", f["image"], "--max-decompressed", "0"], 2, "--max-decompressed"),
]


@pytest.mark.parametrize("index", range(len(VALUE_CASES)))
def test_values(index, files, tmp_path):
    files = dict(files)
    files["not-utf8"] = tmp_path / "latin1.txt"
    files["not-utf8"].write_bytes(b"1000\n\xe9\xff2000\n")
    files["empty"] = tmp_path / "empty.txt"
    files["empty"].write_text("# nothing\n\n")
    make, expected, needle = VALUE_CASES[index]
    argv = make(files)
    status, out, err, _, _ = probe(argv, seconds=15, peak_mib=150, tmp_path=tmp_path)
    check_one_line(status, err, expected, needle)
    for path in (files["not-utf8"], files["empty"]):
        if str(path) in argv:
            assert str(path) in err


def test_library_sizes_are_checked_before_allocating(files):
    from ksinspect.errors import DecodeError
    from ksinspect.memory import open_image
    from ksinspect.paging import AddressSpace
    with open_image(files["image"]) as memory:
        space = AddressSpace(memory, cr3=0x1000, mode="4level")
        with pytest.raises(DecodeError, match="more than"):
            space.read(0, 1 << 40)
        with pytest.raises(DecodeError, match="more than"):
            space.read_available(0, 1 << 44)
        with pytest.raises(DecodeError, match="chunk"):
            list(space.mappings(chunk=10 ** 12))
        with pytest.raises(DecodeError, match="chunk"):
            space.mapping_table(chunk=10 ** 12)


def test_read_pe_header_raises_a_specific_error(files):
    from ksinspect.errors import KsinspectError
    from ksinspect.memory import open_image
    from ksinspect.paging import AddressSpace
    from ksinspect.windows import checks
    with open_image(files["image"]) as memory:
        space = AddressSpace(memory, cr3=0x1000, mode="4level")
        with pytest.raises(KsinspectError) as caught:
            checks.read_pe_header(space, 0x1000)
    assert type(caught.value) is not KsinspectError


# ------------------------------------------------------------------- SHRINKING

_SHRINK = r"""
import os, sys
from ksinspect.errors import ImageFormatError
from ksinspect.memory import open_image
from ksinspect.paging import AddressSpace
path, how = sys.argv[1], sys.argv[2]
memory = open_image(path)
with open(path, "r+b") as fh:
    fh.truncate(0x3000)              # the page tables at 0x1000-0x2fff stay
try:
    if how == "read":
        memory.read(0x100000, 16)
    elif how == "virtual":
        AddressSpace(memory, cr3=0x1000, mode="4level").read(0x100000, 16)
    elif how == "maps":
        list(AddressSpace(memory, cr3=0x1000, mode="4level").mappings())
    else:
        from ksinspect.windows.layout_files import load_layout
        from ksinspect.windows.psscan import psscan
        psscan(memory, load_layout("win10-1507-10240.16384-x64"))
except ImageFormatError as exc:
    print("ImageFormatError", exc)
"""


@pytest.mark.parametrize("how", ["read", "virtual", "maps", "psscan"])
def test_shrinking_image_is_an_image_error(how, tmp_path):
    path = _sparse_image(tmp_path, 4 * MiB)
    run = subprocess.run([sys.executable, "-c", _SHRINK, str(path), how], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, (run.returncode, run.stderr[-500:])   # -7 would be SIGBUS
    assert run.stdout.startswith("ImageFormatError %s: the image file shrank from %d to %d "
                                 "bytes" % (path, 4 * MiB, 0x3000)), run.stdout


# ------------------------------------------------------------------- STREAMS

STREAM_COMMANDS = [
    lambda f: ["selector", "0x33"], lambda f: ["layouts"],
    lambda f: ["maps", f["image"], *PAGING], lambda f: ["info", f["image"], "--json"],
    lambda f: ["vtop", f["image"], "1000", "2000", *PAGING],
]


@pytest.mark.parametrize("index", range(len(STREAM_COMMANDS)))
@pytest.mark.parametrize("sink", ["closed", "/dev/full"])
def test_stdout_that_cannot_be_written(index, sink, files, tmp_path):
    argv = STREAM_COMMANDS[index](files)
    if sink == "closed":
        script = ("import os, subprocess, sys; os.close(1); "
                  "sys.exit(subprocess.call([sys.executable] + sys.argv[1:], close_fds=False))")
        run = subprocess.run([sys.executable, "-c", script, PROBE] + [str(a) for a in argv],
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                             timeout=60)
        status, err = run.returncode, run.stderr
        needle = "it is closed"
    else:
        with open(sink, "w") as full:
            status, _, err, _, _ = probe(argv, stdout=full, tmp_path=tmp_path)
        needle = "No space left on device"
    check_one_line(status, err, 1, "cannot write to standard output", needle)


@pytest.mark.parametrize("argv, expected", [(["selector", "zz"], 2), (["selector", "0x33"], 0),
                                            (["info", "/nonexistent.raw"], 1)])
def test_stderr_closed_keeps_the_exit_status(argv, expected, tmp_path):
    script = ("import os, subprocess, sys; os.close(2); "
              "sys.exit(subprocess.call([sys.executable] + sys.argv[1:], close_fds=False))")
    run = subprocess.run([sys.executable, "-c", script, PROBE] + argv, capture_output=False,
                         stdout=subprocess.DEVNULL, timeout=60)
    assert run.returncode == expected


@pytest.mark.parametrize("delay", [0.005, 0.03, 0.1, 0.2])
def test_ctrl_c_while_importing(delay, tmp_path):
    """Ctrl-C while `ksinspect layouts` imports its modules (the first few
    tenths of a second): one line, exit 130. The probe says when the
    interpreter's own start-up is over (a signal before that is the
    interpreter's business, not ksinspect's)."""
    ready_r, ready_w = os.pipe()
    proc = subprocess.Popen([sys.executable, PROBE, "layouts"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, pass_fds=(ready_w,),
                            env=dict(os.environ, KSI_PROBE_READY=str(ready_w)))
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"r"
    finally:
        os.close(ready_r)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    if proc.returncode == -signal.SIGINT:
        # The signal came after the command had finished, while the interpreter
        # was shutting down (it restores the default action then): only then
        # may it kill the process, and the whole output must be there.
        whole = subprocess.run([sys.executable, PROBE, "layouts"], capture_output=True,
                               text=True, timeout=60)
        assert (err, out) == ("", whole.stdout), (err, len(out), len(whole.stdout))
    elif proc.returncode != 0:                # it may have finished before the signal
        assert proc.returncode == 130 and err == "ksinspect: interrupted\n", (proc.returncode,
                                                                              err)


CASE_COUNTS = {
    "NONREG": len(NONREG_CASES),
    "CAPS": len(CAPS_CASES),
    "ESCAPES": 2 + len(ESCAPE_NAMES) * 4,
    "LAYOUTS": len(LAYOUT_CASES),
    "FLOODS": len(FLOOD_CASES) + 1,
    "VALUES": len(VALUE_CASES) + 2,
    "SHRINKING": 4,
    "STREAMS": 2 * len(STREAM_COMMANDS) + 3 + 4,
}

if __name__ == "__main__":
    print(json.dumps(CASE_COUNTS, indent=2), sum(CASE_COUNTS.values()))
