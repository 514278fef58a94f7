"""ksinspect.live.wine, proc_memory and thread_registers without Wine.

Command-line splitting is checked against the table in Microsoft's "Parsing
C command-line arguments" (C runtime docs, the examples for ``argv``);
``/proc`` readers against this very process and children it starts.
"""
import ctypes
import os
import platform
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from ksinspect.errors import InvalidAddressError, LiveOSError
from ksinspect.live import wine
from ksinspect.live.proc_memory import MAX_READ, Mapping, ProcessMemory, read_maps

LINUX = sys.platform.startswith("linux")
LINUX_X86_64 = LINUX and platform.machine() in ("x86_64", "AMD64")
needs_linux = pytest.mark.skipif(not LINUX, reason="reads /proc (Linux only)")


# Microsoft, "Parsing C command-line arguments": command-line input -> argv[1], argv[2], argv[3]
# (the table's rows; argv[0] "prog" is put in front, since the program name has its own rule).
@pytest.mark.parametrize("line, expected", [
    (r'"a b c" d e', ["a b c", "d", "e"]),
    (r'"ab\"c" "\\" d', ['ab"c', "\\", "d"]),
    (r'a\\\b d"e f"g h', [r"a\\\b", "de fg", "h"]),
    (r'a\\\"b c d', [r'a\"b', "c", "d"]),
    (r'a\\\\"b c" d e', [r"a\\b c", "d", "e"]),
    (r'a"b"" c d', ['ab" c d']),
])
def test_split_windows_command_line_msdn_table(line, expected):
    assert wine.split_windows_command_line("prog " + line) == ["prog"] + expected


def test_split_program_name_rule():
    # The program name ends at the closing quote; backslashes in it are literal.
    assert wine.split_windows_command_line(r'"C:\dir\" x') == ["C:\\dir\\", "x"]
    assert wine.split_windows_command_line(r'"C:\Program Files\a.exe" x') == \
        [r"C:\Program Files\a.exe", "x"]
    assert wine.split_windows_command_line(r'C:\a\b.exe   x  ""') == [r"C:\a\b.exe", "x", ""]
    assert wine.split_windows_command_line("   ") == []


def test_command_line_check_rule():
    peb_line = '"Z:\\tmp\\peb_self.exe" plain "with space" "with \\"quote\\""'
    proc = ["peb_self.exe", "plain", "with space", 'with "quote"', "", "", ""]
    check = wine.command_line_check(1, peb_line, proc)
    assert check.agree and check.ours == peb_line
    assert "with space" in check.theirs
    # The program name compares by file name, ignoring case.
    assert wine.command_line_check(1, peb_line, ["PEB_SELF.EXE"] + proc[1:]).agree
    # A spoofed command line, a missing or an extra argument: disagree.
    assert not wine.command_line_check(1, "C:\\Windows\\System32\\svchost.exe -k netsvcs",
                                       proc).agree
    assert not wine.command_line_check(1, peb_line, proc[:3]).agree
    assert not wine.command_line_check(1, peb_line, proc[:4] + ["extra"]).agree
    assert not wine.command_line_check(1, peb_line, ["other.exe"] + proc[1:]).agree
    assert not wine.command_line_check(1, None, proc).agree


def _prefix(tmp_path):
    prefix = tmp_path / "prefix"
    (prefix / "drive_c" / "Windows" / "System32").mkdir(parents=True)
    (prefix / "drive_c" / "Windows" / "System32" / "notepad.exe").write_bytes(b"MZ")
    (prefix / "dosdevices").mkdir()
    os.symlink("../drive_c", str(prefix / "dosdevices" / "c:"))
    os.symlink(str(tmp_path), str(prefix / "dosdevices" / "z:"))
    return prefix


@needs_linux
def test_dos_to_unix(tmp_path):
    prefix = _prefix(tmp_path)
    (tmp_path / "Data").mkdir()
    (tmp_path / "Data" / "prog.exe").write_bytes(b"MZ")
    notepad = prefix / "drive_c" / "Windows" / "System32" / "notepad.exe"
    # Wine looks names up ignoring case.
    found = wine.dos_to_unix("C:\\WINDOWS\\system32\\NOTEPAD.EXE", str(prefix))
    assert os.path.samefile(found, str(notepad))
    assert os.path.samefile(wine.dos_to_unix("\\??\\z:\\data\\PROG.exe", str(prefix)),
                            str(tmp_path / "Data" / "prog.exe"))
    assert wine.dos_to_unix("C:\\Windows\\System32\\absent.exe", str(prefix)) is None
    assert wine.dos_to_unix("Q:\\x.exe", str(prefix)) is None            # no such drive
    assert wine.dos_to_unix("\\\\server\\share\\x.exe", str(prefix)) is None
    assert wine.dos_to_unix("C:\\x.exe", None) is None


def _mapping_of(path, start, offset=0, perms="r--p"):
    info = os.stat(path)
    return Mapping(start, start + 0x1000, perms, offset,
                   "%02x:%02x" % (os.major(info.st_dev), os.minor(info.st_dev)),
                   info.st_ino, str(path))


@needs_linux
def test_image_path_check(tmp_path, monkeypatch):
    prefix = _prefix(tmp_path)
    notepad = prefix / "drive_c" / "Windows" / "System32" / "notepad.exe"
    other = tmp_path / "notepad.exe"
    other.write_bytes(b"MZ")
    monkeypatch.setattr(wine, "wine_prefix", lambda pid: str(prefix))
    maps = [_mapping_of(notepad, 0x140000000)]
    good = wine.image_path_check(1, maps, 0x140000000, "C:\\windows\\system32\\notepad.exe")
    assert good.agree and good.theirs == str(notepad)
    # Same file name, another file: the prefix resolves it, so this is caught.
    assert not wine.image_path_check(1, [_mapping_of(other, 0x140000000)], 0x140000000,
                                     "C:\\windows\\system32\\notepad.exe").agree
    assert not wine.image_path_check(1, maps, 0x140000000,
                                     "C:\\Windows\\System32\\svchost.exe").agree
    assert not wine.image_path_check(1, maps, 0x150000000,
                                     "C:\\windows\\system32\\notepad.exe").agree
    # Without a prefix to resolve drives, the file names are compared.
    monkeypatch.setattr(wine, "wine_prefix", lambda pid: None)
    fallback = wine.image_path_check(1, maps, 0x140000000, "X:\\any\\NOTEPAD.EXE")
    assert fallback.agree and "file names are compared" in fallback.rule


class _Bytes:
    """Fake process memory: {address: bytes}."""

    def __init__(self, blocks):
        self.blocks = blocks

    def read(self, address, size):
        for start, data in self.blocks.items():
            if start <= address and address + size <= start + len(data):
                return data[address - start:address - start + size]
        raise InvalidAddressError("unmapped %#x" % address, address)


def test_module_and_mapped_image_checks():
    lib = "/usr/lib/x86_64-linux-gnu/wine/x86_64-windows/"
    maps = [Mapping(0x140000000, 0x140001000, "r--p", 0, "fe:00", 11, "/tmp/prog.exe"),
            Mapping(0x170000000, 0x170001000, "r--p", 0, "fe:00", 12, lib + "ntdll.dll"),
            Mapping(0x170001000, 0x170069000, "r-xp", 0x1000, "fe:00", 12, lib + "ntdll.dll"),
            Mapping(0x180000000, 0x180001000, "r--p", 0, "fe:00", 13, lib + "version.dll"),
            Mapping(0x320000, 0x331000, "r--s", 0, "fe:00", 14, lib + "apisetschema.dll"),
            Mapping(0x190000000, 0x190001000, "r--p", 0, "fe:00", 15, "/tmp/data.dll")]
    memory = _Bytes({0x140000000: b"MZ", 0x170000000: b"MZ", 0x180000000: b"MZ",
                     0x320000: b"MZ", 0x190000000: b"\0\0"})
    module = lambda base, name, lists: SimpleNamespace(  # noqa: E731
        base=base, name=name, path="C:\\windows\\system32\\" + name, lists=lists)
    modules = [module(0x140000000, "prog.exe", ("load", "memory")),
               module(0x170000000, "NTDLL.DLL", ("load", "memory", "init"))]
    checks = wine.module_map_checks(7, maps, modules)
    assert [c.agree for c in checks] == [True, True]
    wrong = wine.module_map_checks(7, maps, [module(0x170001000, "ntdll.dll", ("load",)),
                                             module(0x180000000, "kernel32.dll", ("load",))])
    assert [c.agree for c in wrong] == [False, False]
    # version.dll is mapped but on no list: caught. The shared apisetschema
    # mapping and the data file without MZ are not images.
    images = wine.mapped_image_checks(7, memory, maps, modules, 0x140000000)
    assert [c.agree for c in images] == [False, False]
    assert (images[0].ours, images[0].theirs) == (2, 3)
    assert "version.dll at 0x180000000" in images[1].name and images[1].ours.startswith(
        "on no list")
    # On the memory- and init-order lists only: unlinked from the load-order list.
    partial = modules + [module(0x180000000, "version.dll", ("memory", "init"))]
    images = wine.mapped_image_checks(7, memory, maps, partial, 0x140000000)
    assert not images[0].agree and "not on InLoadOrderModuleList" in images[1].ours
    whole = modules + [module(0x180000000, "version.dll", ("load", "memory", "init"))]
    assert [c.agree for c in wine.mapped_image_checks(7, memory, maps, whole, 0x140000000)] == \
        [True]


@needs_linux
def test_process_memory_reads_this_process():
    buffer = ctypes.create_string_buffer(b"ksinspect reads itself", 64)
    address = ctypes.addressof(buffer)
    with ProcessMemory(os.getpid()) as memory:
        assert memory.read(address, 22) == b"ksinspect reads itself"
        assert memory.read(address, 0) == b""
        with pytest.raises(InvalidAddressError) as caught:
            memory.read(0x1000, 8)          # the first pages are never mapped (mmap_min_addr)
        assert caught.value.address == 0x1000
        with pytest.raises(InvalidAddressError):
            memory.read(1 << 63, 8)
        with pytest.raises(LiveOSError):
            memory.read(address, MAX_READ + 1)
    with pytest.raises(LiveOSError):
        memory.read(address, 8)             # closed
    mapping = next(m for m in read_maps(os.getpid()) if m.start <= address < m.end)
    assert mapping.readable and mapping.writable and mapping.private


@needs_linux
def test_process_memory_of_a_missing_process():
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(LiveOSError) as caught:
        ProcessMemory(child.pid)
    assert "no process with PID %d" % child.pid in str(caught.value)
    with pytest.raises(LiveOSError):
        read_maps(child.pid)
    with pytest.raises(LiveOSError):
        ProcessMemory(0)


@pytest.mark.skipif(not LINUX_X86_64, reason="ptrace GS base: Linux x86-64 only")
def test_gs_bases_leave_the_process_as_it_was():
    from ksinspect.live.thread_registers import read_gs_bases

    # glibc keeps thread-local storage in FS on x86-64 (the psABI's TLS
    # register); a plain Linux program's GS base stays 0.
    child = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.2)
        bases = read_gs_bases(child.pid)
        assert bases == {child.pid: 0}
        _wait_state(child.pid, "S")         # back in its (restarted) sleep
        assert _state(child.pid) == ("S", "0")
        # A stopped process stays stopped.
        os.kill(child.pid, signal.SIGSTOP)
        _wait_state(child.pid, "T")
        assert read_gs_bases(child.pid) == {child.pid: 0}
        time.sleep(0.2)
        assert _state(child.pid) == ("T", "0")
        os.kill(child.pid, signal.SIGCONT)
        _wait_state(child.pid, "S")
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def _state(pid):
    with open("/proc/%d/status" % pid) as handle:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)
    return fields["State"][0], fields["TracerPid"]


def _wait_state(pid, state):
    for _ in range(100):
        if _state(pid)[0] == state:
            return
        time.sleep(0.02)
    raise AssertionError("process %d never reached state %s" % (pid, state))


def test_start_exe_arguments_are_a_prefix_of_the_programs():
    """start.exe's argv is rewritten by Wine in the room the original one had,
    so its tail may be cut off: what it shows must begin the program's."""
    from ksinspect.live.wine_launcher import _arguments_match

    program = ["plain", "with space", 'with "quote"']
    assert _arguments_match([], program)
    assert _arguments_match(["plain", "with space"], program)
    assert _arguments_match(["plain", "with sp"], program)       # the last one cut short
    assert not _arguments_match(["plain", "with"], ["plain", "other"])
    assert not _arguments_match(["pl", "with space"], program)   # only the last may be cut
    assert not _arguments_match(["--masquerade"], program)
    assert not _arguments_match(program + ["more"], program)


@pytest.mark.skipif(not LINUX, reason="reads /proc (Linux only)")
def test_a_process_that_is_not_start_exe_is_not_followed():
    from ksinspect.live.wine_launcher import follow_launcher

    assert follow_launcher(os.getpid()) == (os.getpid(), None)
