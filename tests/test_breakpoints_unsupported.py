"""The breakpoint lab off Linux x86-64: a clear "unsupported", never a crash.

Runs everywhere (the live tests are in test_breakpoints.py); the host is
made to look like another one by patching what ptrace.unavailable_reason
reads.
"""
import io

import pytest

from ksinspect.cli import main
from ksinspect.errors import UnsupportedError
from ksinspect.live import ptrace
from ksinspect.live.debugger import Debugger


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
        Debugger.start(["/bin/true"])
    with pytest.raises(UnsupportedError, match=words):
        Debugger.attach(1)
    with pytest.raises(UnsupportedError, match=words):
        ptrace.get_regs(1)
    out, err = io.StringIO(), io.StringIO()
    status = main(["break", "--sw", "main", "--", "/bin/true"], stream=out, errors=err)
    assert status == 1 and err.getvalue().startswith("ksinspect: error: break: ")
    assert words in err.getvalue() and err.getvalue().count("\n") == 1


def test_debugreg_offsets_refuse_dr4_dr5():
    # DR4/DR5 are reserved aliases of DR6/DR7 (SDM vol. 3B §17.2.2); the
    # kernel's ptrace refuses them too.
    for n in (4, 5, 8, -1):
        with pytest.raises(ValueError):
            ptrace.debugreg_offset(n)
