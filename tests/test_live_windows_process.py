"""ksinspect.live.windows_process: layout choice from the PEB's OS version, argument checks.

Build numbers are the public ones of each release (Windows 7 SP1 is
6.1.7601, Windows 8.1 6.3.9600, Windows 10 22H2 10.0.19045); the offsets of
the PEB's version fields on x64 (OSMajorVersion 0x118, OSMinorVersion 0x11c,
OSBuildNumber 0x120) are those of the public PEB definition in the Windows
SDK's winternl.h lineage / the PDBs (e.g. Vergilius, any x64 build).
"""
import os
import sys

import pytest

from ksinspect.errors import DecodeError
from ksinspect.live.windows_process import (choose_layout, inspect_live_peb, read_os_version,
                                            shared_offset)


def test_version_fields_share_one_offset_on_x64():
    assert shared_offset("x64", "_PEB", "OSMajorVersion") == 0x118
    assert shared_offset("x64", "_PEB", "OSMinorVersion") == 0x11C
    assert shared_offset("x64", "_PEB", "OSBuildNumber") == 0x120
    assert shared_offset("x64", "_NT_TIB", "Self") == 0x30
    assert shared_offset("x64", "_TEB", "ProcessEnvironmentBlock") == 0x60


class _Peb:
    def __init__(self, address, major, minor, build):
        self.data = bytearray(0x400)
        self.address = address
        self.data[0x118:0x11C] = major.to_bytes(4, "little")
        self.data[0x11C:0x120] = minor.to_bytes(4, "little")
        self.data[0x120:0x122] = build.to_bytes(2, "little")

    def read(self, address, size):
        start = address - self.address
        return bytes(self.data[start:start + size])


def test_read_os_version():
    assert read_os_version(_Peb(0x7FFDF000, 6, 1, 7601), 0x7FFDF000, "x64") == (6, 1, 7601)


def test_choose_layout_for_wines_default_windows_7():
    layout, note = choose_layout(6, 1, 7601, "x64")
    assert layout.name.startswith("win7-sp1-7601.") and layout.arch == "x64"
    assert "6.1.7601" in note and "earliest revision" in note


def test_choose_layout_exact_and_nearest():
    layout, _ = choose_layout(10, 0, 19045, "x64")
    assert "-19045." in layout.name
    layout, note = choose_layout(6, 3, 9600, "x86")
    assert "-9600." in layout.name and layout.arch == "x86"
    # A build with no layout: the nearest earlier one of the same version, said so.
    layout, note = choose_layout(10, 0, 19999, "x64")
    assert "-19045." in layout.name and "no layout for" in note and "10.0.19999" in note
    layout, note = choose_layout(11, 0, 5, "x64")
    assert "another Windows version" in note


@pytest.mark.parametrize("pid", [0, -3, "12", True, 1.5])
def test_bad_pids(pid):
    with pytest.raises(DecodeError):
        inspect_live_peb(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("reader", ["inspect_live_peb", "inspect_live_teb"])
def test_a_program_followed_from_start_exe_that_has_ended_is_one_line(monkeypatch, reader):
    """start.exe named a program that is gone by the time it is opened (it
    was killed an instant before): the error names both PIDs, not only the
    vanished one."""
    import subprocess
    from ksinspect.errors import LiveOSError
    from ksinspect.live import wine_launcher, windows_process
    gone = subprocess.Popen(["true"])
    gone.wait()                                   # reaped: its PID names no process
    monkeypatch.setattr(wine_launcher, "follow_launcher", lambda pid: (gone.pid, "followed"))
    with pytest.raises(LiveOSError) as caught:
        getattr(windows_process, reader)(os.getpid())
    assert str(caught.value) == ("PID %d is Wine's start.exe, and the program it started, "
                                 "PID %d, has ended" % (os.getpid(), gone.pid))
