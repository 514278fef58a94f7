"""The breakpoint lab off Linux x86-64: a clear "unsupported", never a crash.

Runs everywhere (the live tests are in test_breakpoints.py); the host is
made to look like another one by patching what ptrace.unavailable_reason
reads.
"""

import pytest

from ksinspect.errors import UnsupportedError
from ksinspect.live import ptrace
from ksinspect.commands import breakpoints
from ksinspect.live.debugger import PtraceDebugger

from conftest import run_cli


@pytest.mark.parametrize("platform_name, machine, words", [
    ("win32", "AMD64", "needs Linux"),
    ("darwin", "arm64", "needs Linux"),
    ("linux", "aarch64", "needs an x86-64 CPU"),
])
def test_unsupported_hosts(monkeypatch, platform_name, machine, words):
    monkeypatch.setattr(ptrace.sys, "platform", platform_name)
    monkeypatch.setattr(ptrace.platform, "machine", lambda: machine)
    assert words in ptrace.unavailable_reason()
    with pytest.raises(UnsupportedError, match=words):
        PtraceDebugger.start(["/bin/true"])
    with pytest.raises(UnsupportedError, match=words):
        PtraceDebugger.attach(1)
    with pytest.raises(UnsupportedError, match=words):
        ptrace.get_regs(1)


@pytest.mark.skipif(breakpoints.WINDOWS, reason="on Windows `break` is the Win32 debugger "
                    "(tests/test_win32_debugger.py)")
@pytest.mark.parametrize("platform_name, machine, words", [
    ("win32", "AMD64", "needs Linux"),
    ("darwin", "arm64", "needs Linux"),
    ("linux", "aarch64", "needs an x86-64 CPU"),
])
def test_break_command_refuses_in_one_line(monkeypatch, platform_name, machine, words):
    monkeypatch.setattr(ptrace.sys, "platform", platform_name)
    monkeypatch.setattr(ptrace.platform, "machine", lambda: machine)
    status, _, err = run_cli("break", "--sw", "main", "--", "/bin/true")
    assert status == 1 and err.startswith("ksinspect: error: break: ")
    assert words in err and err.count("\n") == 1


def test_debugreg_offsets_refuse_dr4_dr5():
    # DR4/DR5 are reserved aliases of DR6/DR7 (SDM vol. 3B §17.2.2); the
    # kernel's ptrace refuses them too.
    for n in (4, 5, 8, -1):
        with pytest.raises(ValueError):
            ptrace.debugreg_offset(n)
