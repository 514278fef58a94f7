"""A corpus of broken Windows input, through the library and the Windows commands.

Every case is built from the layout JSON files by the test builders
(tests/builders/windows_image_builder.py for process memory, tests/builders/eprocess_image_builder.py
for kernel memory with a process list; both read the layouts with ``json``,
independently of ksinspect.windows), then broken in one way:

* UNICODE_STRING: odd Length, Length of 0xFFFE into a short buffer,
  Length > MaximumLength, Buffer into unmapped memory, lone UTF-16 surrogates;
* loader lists (PEB.Ldr): a self-loop, a 2-cycle, a loop back into the
  middle, a Flink into unmapped memory, a NULL Flink; a PEB address that
  is not mapped;
* the EPROCESS list (ActiveProcessLinks): the same loops, unmapped memory,
  memory outside the image, a NULL Flink;
* layout files: not JSON, keys missing, negative / huge offsets, a member
  past the end of its structure, a broken Volatility 3 ISF;
* images that hold no Windows at all: empty, truncated, random bytes
  (hypothesis, a bounded number of examples), and a file of 0x03 bytes
  (psscan's prefilter byte: every position passes the anchor word).

Each case ends one of two ways (issue 8): the library raises a specific
KsinspectError subclass whose message names the input, and the CLI prints
that one line on stderr and exits 1 (bad data) or 2 (bad usage); or the
result carries a finding saying what is wrong, and the CLI exits 0. Never a
traceback, never a hang (every case runs under a deadline).
"""
import io
import json
import os
import time
import tracemalloc
from contextlib import redirect_stderr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders.eprocess_image_builder import standard_image
from hang_guard import deadline
from ksinspect.cli import main
from ksinspect.errors import InvalidAddressError, UnknownLayoutError
from ksinspect.memory import open_image
from ksinspect.windows import load_layout
from ksinspect.windows.layout import layout_from_dict
from ksinspect.windows.peb import read_peb
from ksinspect.windows.pslist import pslist
from ksinspect.windows.psscan import psscan
from builders.windows_image_builder import (build_process, counted, layout_json, offset, put,
                                   write_pointer)
from conftest import run_cli  # noqa: E402  (tests/conftest.py)

PEB_LAYOUT = "win10-22h2-19045.2965-x64"
KERNEL_LAYOUT = "win7-sp1-7601.17514-x64"
UNMAPPED = 0x00007FF0DEAD0000


def run(*argv):
    """(status, stdout, stderr) of the CLI; notes written to sys.stderr included."""
    return run_cli(*argv, guarded=True)


def assert_one_line(err, status, expected_status, *needles):
    assert status == expected_status, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("ksinspect: "), err
    for needle in needles:
        assert needle in err, (needle, err)


# -- process memory: UNICODE_STRING and loader lists ------------------------------------------

def planted_process():
    return build_process(PEB_LAYOUT)


def image_path_header(planted):
    """Address of ProcessParameters.ImagePathName (a _UNICODE_STRING)."""
    return planted.params + offset(layout_json(PEB_LAYOUT), "_RTL_USER_PROCESS_PARAMETERS",
                                   "ImagePathName")


def set_image_path(planted, length, maximum, buffer, data=None):
    if data is not None:
        planted.memory.write(buffer, data)
    put(planted.memory, layout_json(PEB_LAYOUT), "_UNICODE_STRING", image_path_header(planted),
        counted(buffer, length, maximum))


def cli_peb(tmp_path, planted, address=None, fmt="table"):
    """Run `peb` over the process memory placed behind 4-level page tables."""
    _, cr3, builder = planted.memory.to_image("4level")
    path = tmp_path / "process.raw"
    path.write_bytes(builder.flat())
    return run("peb", path, "--cr3", "%x" % cr3, "--mode", "4level", "--address",
               "%x" % (planted.peb if address is None else address), "--layout", PEB_LAYOUT,
               "--format", fmt)


def broken_string(kind, planted):
    """Break ImagePathName one way; returns the words the finding must hold."""
    buf = planted.memory.read(image_path_header(planted) + 8, 8)
    buffer = int.from_bytes(buf, "little")
    if kind == "odd-length":
        set_image_path(planted, 7, 8, buffer)
        return ("odd Length 0x7",)
    if kind == "huge-length":
        # 0xFFFE bytes claimed; the heap page ends long before that.
        heap_end = (buffer | 0xFFF) + 1
        while heap_end in planted.memory.pages:
            heap_end += 0x1000
        set_image_path(planted, 0xFFFE, 0xFFFE, heap_end - 0x10)
        return ("0xfffe", "not readable")
    if kind == "length-above-maximum":
        set_image_path(planted, 0x20, 0x10, buffer)
        return ("Length 0x20 exceeds MaximumLength 0x10",)
    if kind == "unmapped-buffer":
        set_image_path(planted, 0x10, 0x12, UNMAPPED)
        return ("Buffer %#x" % UNMAPPED, "not readable")
    if kind == "lone-surrogates":
        # "ab", a lone high surrogate D800, "A"
        set_image_path(planted, 8, 10, buffer, "ab".encode("utf-16-le") + b"\x00\xd8A\x00")
        return ("unpaired surrogate",)
    raise AssertionError(kind)


STRING_CASES = ["odd-length", "huge-length", "length-above-maximum", "unmapped-buffer",
                "lone-surrogates"]


@pytest.mark.parametrize("kind", STRING_CASES)
def test_broken_unicode_string_is_a_finding(kind, tmp_path):
    planted = planted_process()
    needles = broken_string(kind, planted)
    with deadline():
        peb = read_peb(planted.memory, planted.peb, load_layout(PEB_LAYOUT))
    finding = [f for f in peb.findings if f.startswith("ImagePathName")]
    assert len(finding) == 1, peb.findings
    for needle in needles:
        assert needle in finding[0], (needle, finding)
    # The rest of the PEB still decodes.
    assert peb.command_line == planted.command_line
    assert [m.name for m in peb.modules] == [m.name for m in planted.modules]
    status, out, err = cli_peb(tmp_path, planted)
    assert status == 0 and err == "", err
    assert "Finding: ImagePathName" in out and needles[0] in out


def test_lone_surrogates_decode_to_replacement_characters():
    planted = planted_process()
    header = image_path_header(planted)
    buffer = int.from_bytes(planted.memory.read(header + 8, 8), "little")
    # "a", a lone high surrogate D800, "b", a lone low surrogate DC00.
    set_image_path(planted, 8, 10, buffer, b"a\x00\x00\xd8b\x00\x00\xdc")
    peb = read_peb(planted.memory, planted.peb, load_layout(PEB_LAYOUT))
    assert peb.image_path == "a\ufffdb\ufffd"


def loader_links(planted, short="load"):
    """(layout json, head, [link addresses of the entries in list order])."""
    layout = layout_json(PEB_LAYOUT)
    link = planted.link_offsets[short]
    members = [m.entry + link for m in planted.modules]
    if short == "init":
        members = members[1:]
    return layout, planted.heads[short], members


def break_loader_list(kind, planted):
    layout, head, links = loader_links(planted)
    if kind == "self-loop":
        write_pointer(planted.memory, links[1], links[1], 8)
    elif kind == "two-cycle":
        write_pointer(planted.memory, links[2], links[1], 8)
    elif kind == "loop-into-the-middle":
        write_pointer(planted.memory, links[3], links[1], 8)
    elif kind == "unmapped":
        write_pointer(planted.memory, links[1], UNMAPPED, 8)
    elif kind == "null-flink":
        write_pointer(planted.memory, links[1], 0, 8)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind,entries,needle", [
    ("self-loop", 2, "loops"), ("two-cycle", 3, "loops"), ("loop-into-the-middle", 4, "loops"),
    ("unmapped", 2, "Flink %#x" % UNMAPPED), ("null-flink", 2, "is NULL")])
def test_broken_loader_list_ends_with_a_finding(kind, entries, needle, tmp_path):
    planted = planted_process()
    break_loader_list(kind, planted)
    with deadline():
        peb = read_peb(planted.memory, planted.peb, load_layout(PEB_LAYOUT))
    walk = peb.lists[0]
    assert list(walk.entries) == [m.entry for m in planted.modules[:entries]]
    assert len(walk.findings) == 1 and needle in walk.findings[0], walk.findings
    assert walk.findings[0] in peb.findings
    # The other two lists are intact and still walked whole.
    assert len(peb.lists[1].entries) == len(planted.modules)
    assert peb.lists[1].findings == ()
    status, out, err = cli_peb(tmp_path, planted)
    assert status == 0 and err == "", err
    assert "Finding: " + walk.findings[0] in out


def test_loader_list_cap_is_a_finding():
    planted = planted_process()
    peb = read_peb(planted.memory, planted.peb, load_layout(PEB_LAYOUT), max_modules=2)
    assert all(len(w.entries) == 2 for w in peb.lists)
    capped = [f for f in peb.findings if "cap of 2 entries hit; walk stopped" in f]
    assert len(capped) == 3, peb.findings


def test_unmapped_peb_raises_naming_the_address(tmp_path):
    planted = planted_process()
    with pytest.raises(InvalidAddressError) as caught:
        read_peb(planted.memory, UNMAPPED, load_layout(PEB_LAYOUT))
    assert "%#x" % UNMAPPED in str(caught.value)
    status, out, err = cli_peb(tmp_path, planted, address=UNMAPPED)
    assert_one_line(err, status, 1, "%#x" % UNMAPPED)
    assert out == ""


# -- kernel memory: the EPROCESS list ---------------------------------------------------------

def kernel_image():
    return standard_image(KERNEL_LAYOUT, None)


def links_va(builder, process):
    return process.eprocess + load_layout(KERNEL_LAYOUT).offset("_EPROCESS",
                                                               "ActiveProcessLinks")


def break_process_list(kind, builder, planted):
    if kind == "self-loop":
        builder.set_flink(planted[1], links_va(builder, planted[1]))
    elif kind == "two-cycle":
        builder.set_flink(planted[2], links_va(builder, planted[1]))
    elif kind == "loop-into-the-middle":
        builder.set_flink(planted[4], links_va(builder, planted[2]))
    elif kind == "unmapped":
        builder.set_flink(planted[1], 0xFFFFFA80DEAD0000)
    elif kind == "outside-the-image":
        builder.kernel.map(0xFFFFFA8100000000, 0x40000000, writable=True, user=False)
        builder.set_flink(planted[1], 0xFFFFFA8100000188)
    elif kind == "null-flink":
        builder.set_flink(planted[1], 0)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind,processes,needle", [
    ("self-loop", 2, "loops"), ("two-cycle", 3, "loops"), ("loop-into-the-middle", 5, "loops"),
    ("unmapped", 2, "0xfffffa80dead0000"), ("outside-the-image", 2, "not in the image"),
    ("null-flink", 2, "null")])
def test_broken_process_list_ends_with_a_finding(kind, processes, needle, tmp_path):
    builder, planted = kernel_image()
    break_process_list(kind, builder, planted)
    with deadline():
        result = pslist(builder.memory(), load_layout(KERNEL_LAYOUT), cr3=builder.cr3)
    assert [e.process.pid for e in result] == [p.pid for p in planted[:processes]]
    assert result.findings and needle in result.findings[-1], result.findings
    path = tmp_path / "kernel.raw"
    path.write_bytes(builder.flat())
    status, out, err = run("pslist", path, "--layout", KERNEL_LAYOUT, "--cr3",
                           "%x" % builder.cr3, "--json", "--no-peb")
    assert status == 0 and "Traceback" not in err
    assert [d["pid"] for d in json.loads(out)] == [p.pid for p in planted[:processes]]
    assert err.startswith("ksinspect: note: ") and needle in err
    # psscan still finds every process by its bytes, and says which ones the
    # (broken) list does not reach.
    status, out, err = run("psscan", path, "--layout", KERNEL_LAYOUT, "--cr3",
                           "%x" % builder.cr3, "--json")
    assert status == 0 and "Traceback" not in err
    found = sorted(d["pid"] for d in json.loads(out))
    if kind == "null-flink":
        # A NULL Flink breaks psscan's own constraint (list links are kernel
        # addresses; the constraint is printed with every scan): that one
        # process is not a candidate. Windows unlinks by pointing the links
        # at the entry itself, which the scan does accept (self-loop case).
        assert found == sorted(p.pid for p in planted if p is not planted[1])
    else:
        assert found == sorted(p.pid for p in planted)


def test_eprocess_at_an_unmapped_address_is_one_line(tmp_path):
    builder, planted = kernel_image()
    path = tmp_path / "kernel.raw"
    path.write_bytes(builder.flat())
    status, out, err = run("eprocess", path, "--layout", KERNEL_LAYOUT, "--cr3",
                           "%x" % builder.cr3, "--address", "fffffa80dead0000")
    assert_one_line(err, status, 1, "0xfffffa80dead0000")
    status, out, err = run("eprocess", path, "--layout", KERNEL_LAYOUT, "--cr3",
                           "%x" % builder.cr3, "--address", "nowhere")
    assert_one_line(err, status, 2, "--address")


def test_process_list_cap_is_a_finding(tmp_path):
    builder, planted = kernel_image()
    path = tmp_path / "kernel.raw"
    path.write_bytes(builder.flat())
    status, out, err = run("pslist", path, "--layout", KERNEL_LAYOUT, "--cr3",
                           "%x" % builder.cr3, "--json", "--no-peb", "--max-processes", "3")
    assert status == 0 and len(json.loads(out)) == 3
    assert err.count("\n") == 1 and "stopped after 3 processes" in err, err


# -- layout files ---------------------------------------------------------------------------------

def good_layout_document():
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "ksinspect", "windows", "layouts", KERNEL_LAYOUT + ".json"),
              encoding="utf-8") as fh:
        return json.load(fh)


def broken_layout(kind):
    doc = good_layout_document()
    eprocess = doc["structs"]["_EPROCESS"]
    if kind == "not-json":
        return "{\"structs\": {", "not valid JSON"
    if kind == "missing-structs":
        del doc["structs"]
        return json.dumps(doc), "neither a ksinspect layout file nor"
    if kind == "missing-pointer-size":
        del doc["pointer_size"]
        return json.dumps(doc), "pointer_size"
    if kind == "missing-offset":
        del eprocess["fields"]["UniqueProcessId"]["offset"]
        return json.dumps(doc), "offset"
    if kind == "negative-offset":
        eprocess["fields"]["UniqueProcessId"]["offset"] = -8
        return json.dumps(doc), "UniqueProcessId"
    if kind == "huge-offset":
        eprocess["fields"]["UniqueProcessId"]["offset"] = 1 << 70
        return json.dumps(doc), "UniqueProcessId"
    if kind == "past-the-struct":
        eprocess["fields"]["UniqueProcessId"]["offset"] = eprocess["size"] - 4
        return json.dumps(doc), "UniqueProcessId"
    if kind == "negative-size":
        eprocess["size"] = -1
        return json.dumps(doc), "_EPROCESS"
    if kind == "not-an-object":
        return "[1, 2, 3]", "neither a ksinspect layout file nor"
    raise AssertionError(kind)


LAYOUT_CASES = ["not-json", "missing-structs", "missing-pointer-size", "missing-offset",
                "negative-offset", "huge-offset", "past-the-struct", "negative-size",
                "not-an-object"]


@pytest.fixture(scope="module")
def kernel_file(tmp_path_factory):
    builder, planted = kernel_image()
    path = tmp_path_factory.mktemp("kernel") / "kernel.raw"
    path.write_bytes(builder.flat())
    return path, builder, planted


@pytest.mark.parametrize("kind", LAYOUT_CASES)
def test_malformed_layout_file(kind, tmp_path, kernel_file):
    text, needle = broken_layout(kind)
    path = tmp_path / ("broken-%s.json" % kind)
    path.write_text(text)
    with pytest.raises(UnknownLayoutError) as caught:
        load_layout(str(path))
    assert str(path) in str(caught.value) and needle in str(caught.value), str(caught.value)
    image, builder, _ = kernel_file
    for command in (("pslist", image), ("psscan", image),
                    ("eprocess", image, "--address", "fffffa8000c00000")):
        status, out, err = run(*command, "--layout", path, "--cr3", "%x" % builder.cr3)
        assert_one_line(err, status, 2, str(path))


ISF_BASE = {"metadata": {"format": "6.2.0"},
            "base_types": {"pointer": {"kind": "int", "size": 8, "signed": False,
                                       "endian": "little"},
                           "unsigned long": {"kind": "int", "size": 4, "signed": False,
                                             "endian": "little"}},
            "user_types": {"_LIST_ENTRY": {"kind": "struct", "size": 16, "fields": {
                "Flink": {"offset": 0, "type": {"kind": "pointer",
                                                "subtype": {"kind": "struct",
                                                            "name": "_LIST_ENTRY"}}},
                "Blink": {"offset": 8, "type": {"kind": "pointer",
                                                "subtype": {"kind": "struct",
                                                            "name": "_LIST_ENTRY"}}}}}},
            "enums": {}, "symbols": {}}


@pytest.mark.parametrize("kind,needle", [
    ("good", None), ("no-pointer", "pointer"), ("bad-kind", "kind"),
    ("negative-offset", "Flink"), ("past-the-struct", "Blink"), ("truncated", "JSON")])
def test_malformed_isf_file(kind, needle, tmp_path):
    doc = json.loads(json.dumps(ISF_BASE))
    fields = doc["user_types"]["_LIST_ENTRY"]["fields"]
    text = None
    if kind == "no-pointer":
        del doc["base_types"]["pointer"]
    elif kind == "bad-kind":
        fields["Flink"]["type"]["kind"] = "quantum"
    elif kind == "negative-offset":
        fields["Flink"]["offset"] = -16
    elif kind == "past-the-struct":
        fields["Blink"]["offset"] = 12
    elif kind == "truncated":
        text = json.dumps(doc)[:40]
    path = tmp_path / ("isf-%s.json" % kind)
    path.write_text(text if text is not None else json.dumps(doc))
    if kind == "good":
        layout = load_layout(str(path))
        assert layout.offset("_LIST_ENTRY", "Blink") == 8
        return
    with pytest.raises(UnknownLayoutError) as caught:
        load_layout(str(path))
    assert str(path) in str(caught.value) and needle in str(caught.value), str(caught.value)


@pytest.mark.parametrize("argv,needle", [
    (("layouts", "--arch", "arm64"), "--arch"),
    (("layouts", "--format", "yaml"), "--format"),
    (("layouts", "extra"), "extra"),
])
def test_layouts_bad_arguments(argv, needle, capsys):
    status, out, err = run(*argv)
    captured = capsys.readouterr()
    err = err + captured.err
    assert status == 2 and "Traceback" not in err and needle in err, err


# -- images that hold no Windows ------------------------------------------------------------------

def image_commands(path):
    """Every image-reading Windows command, with the options it needs."""
    return [
        ("peb", path, "--address", "7ffe0000", "--layout", PEB_LAYOUT, "--cr3", "1000",
         "--mode", "4level"),
        ("eprocess", path, "--address", "fffffa8000c00000", "--layout", KERNEL_LAYOUT,
         "--cr3", "1000", "--mode", "4level"),
        ("pslist", path, "--layout", KERNEL_LAYOUT, "--cr3", "1000", "--mode", "4level"),
        ("pslist", path, "--layout", KERNEL_LAYOUT),
        ("psscan", path, "--layout", KERNEL_LAYOUT),
    ]


def assert_clean_end(argv):
    status, out, err = run(*argv)
    assert "Traceback" not in err
    if status == 0:
        return status, out, err
    # One line naming the input: the image, or the address that cannot be read.
    # One line naming the input (the image, or the address that cannot be
    # read), or saying what is missing from the image and which option gives it.
    assert_one_line(err, status, 1)
    address = argv[argv.index("--address") + 1] if "--address" in argv else None
    assert str(argv[1]) in err or (address and "0x" + address in err) or "; give --" in err, err
    return status, out, err


@pytest.mark.parametrize("content", ["empty", "one-byte", "half-page", "truncated-kernel"])
def test_images_without_windows(content, tmp_path, kernel_file):
    path = tmp_path / ("%s.raw" % content)
    if content == "empty":
        path.write_bytes(b"")
    elif content == "one-byte":
        path.write_bytes(b"\x03")
    elif content == "half-page":
        path.write_bytes(b"\x03" * 2048)
    else:
        path.write_bytes(kernel_file[0].read_bytes()[:0x5000])   # page tables cut short
    for argv in image_commands(path):
        status, out, err = assert_clean_end(argv)
        if argv[0] == "psscan" and status == 0:
            assert "0 candidates" in out or out.strip().splitlines()[-1].startswith("0 ")\
                or "no " in out.lower(), out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=3 * 4096))
def test_random_bytes_images(data, tmp_path):
    path = tmp_path / "random.raw"
    path.write_bytes(data)
    for argv in image_commands(path):
        assert_clean_end(argv)


def test_psscan_over_prefilter_bytes_is_bounded(tmp_path):
    """Files where the scan's prefilter passes as often as it can: 0x03 bytes
    (Type == ProcessObject at every position) and the whole anchor word
    (Type and Size, read from the layout file here) repeated, so that every
    16-byte aligned position goes on to the field checks. The scan must find
    nothing, count each position once, and stay fast and in bounded memory."""
    size = 32 << 20
    raw = layout_json(KERNEL_LAYOUT)
    kprocess = raw["structs"]["_KPROCESS"]["size"]
    header = offset(raw, "_KPROCESS", "Header")
    assert header == 0 and offset(raw, "_DISPATCHER_HEADER", "Size") == 2
    word = bytes([3, 0, kprocess // 4, 0])                # Type, Absolute, Size, Inserted
    # The bytes a candidate spans: up to the farthest member psscan checks
    # (the EPROCESS list links, PIDs, ImageFileName; the KPROCESS header,
    # DirectoryTableBase and thread list at offset 0).
    pointer = raw["pointer_size"]
    span = max([offset(raw, "_EPROCESS", m) + 2 * pointer
                for m in ("ActiveProcessLinks", "ThreadListHead")]
               + [offset(raw, "_EPROCESS", m) + pointer
                  for m in ("UniqueProcessId", "InheritedFromUniqueProcessId")]
               + [offset(raw, "_EPROCESS", "ImageFileName") + 15,
                  offset(raw, "_KPROCESS", "ThreadListHead") + 2 * pointer,
                  offset(raw, "_KPROCESS", "DirectoryTableBase") + pointer])
    files = {"zeros.raw": None, "threes.raw": b"\x03" * 4096, "anchors.raw": word * 1024}
    layout = load_layout(KERNEL_LAYOUT)
    timings = {}
    for name, page in files.items():
        path = tmp_path / name
        with open(path, "wb") as fh:
            if page is None:
                fh.truncate(size)
            else:
                for _ in range(size // len(page)):
                    fh.write(page)
        with open_image(str(path)) as memory:
            tracemalloc.start()
            started = time.perf_counter()
            with deadline(60):
                result = psscan(memory, layout)
            timings[name] = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert len(result) == 0, name
        expected = (size - span) // 16 + 1 if name == "anchors.raw" else 0
        assert result.anchors == expected, (name, result.anchors, expected)
        # Python-side memory stays at most about one scan chunk, whatever the bytes.
        assert peak < 80 << 20, (name, peak)
        status, out, err = run("psscan", path, "--layout", KERNEL_LAYOUT, "--json")
        assert status == 0 and json.loads(out) == [] and "Traceback" not in err
    # Every position through the field checks costs more than none, but stays
    # a C loop: far under the deadline (figures in the report).
    assert timings["anchors.raw"] < 10, timings
    print("psscan over 32 MiB: %s" % ", ".join("%s %.3f s" % kv for kv in timings.items()))


@pytest.mark.parametrize("struct,member,wrong", [
    ("_UNICODE_STRING", "Length", "char[2]"), ("_EPROCESS", "Pcb", "uint64"),
    ("_EPROCESS", "UniqueProcessId", "char[8]"), ("_KPROCESS", "Header", "_LIST_ENTRY"),
    ("_EPROCESS", "ImageFileName", "uint64")])
def test_layout_that_mistypes_members(struct, member, wrong, tmp_path, kernel_file):
    """A layout file that types a member the decoders read otherwise than
    Windows declares it (found by mutating layout files: TypeError and
    ValueError from the decoders). Refused when loaded, naming the member."""
    doc = json.loads(json.dumps(layout_json(KERNEL_LAYOUT)))
    doc["structs"][struct]["fields"][member]["type"] = wrong
    path = tmp_path / "mistyped.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UnknownLayoutError) as caught:
        load_layout(str(path))
    assert "%s: %s.%s is %s" % (path, struct, member, wrong) in str(caught.value)
    image, builder, planted = kernel_file
    for command in ("pslist", "psscan"):
        status, out, err = run(command, image, "--layout", path, "--cr3", "%x" % builder.cr3)
        assert_one_line(err, status, 2, "%s.%s is %s" % (struct, member, wrong))


def test_string_decoder_refuses_a_layout_object_that_mistypes_length(kernel_file):
    """Layouts built in code (layout_from_dict) skip the file checks: the
    string decoder itself says which member is wrong instead of a TypeError."""
    doc = json.loads(json.dumps(layout_json(KERNEL_LAYOUT)))
    doc["structs"]["_UNICODE_STRING"]["fields"]["Length"]["type"] = "char[2]"
    layout = layout_from_dict(doc, "mistyped")
    image, builder, planted = kernel_file
    why = "layout mistyped: _UNICODE_STRING.Length is char[2], not an integer or pointer"
    result = pslist(builder.memory(), layout, cr3=builder.cr3)
    assert [e.process.pid for e in result] == [p.pid for p in planted]
    assert [list(e.errors) for e in result if e.process.peb] == [
        ["PEB at %#x: %s" % (p.peb, why)] for p in planted if p.peb]
