"""`peb --pid` on real Windows, the two refusals Wine cannot produce: a
process that denies one of the rights ksinspect opens it with, and a
kernel process (System, Registry, Memory Compression) with no PEB.

Wine has neither kind of process (no access control between processes of a
prefix, no System process), so kernel32 and ntdll are replaced by fakes that
answer as the Win32 documentation says they do: OpenProcess returns NULL and
sets ERROR_ACCESS_DENIED (5, winerror.h) for a right the caller may not have,
and NtQueryInformationProcess(ProcessBasicInformation) succeeds with a NULL
PebBaseAddress for a process that runs no user-mode image ("Minimal" and
"Pico" processes, [MS-docs] PROCESS_BASIC_INFORMATION).
"""
import ctypes

import pytest

from ksinspect.errors import LiveOSError
from ksinspect.windows import live_windows as lw

PROCESS_QUERY_INFORMATION = 0x0400      # winnt.h
PROCESS_VM_READ = 0x0010
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
STILL_ACTIVE = 259                      # minwinbase.h (STATUS_PENDING)


class FakeKernel32:
    """OpenProcess grants exactly the rights in `granted` (each asked alone
    or together), as the access check of a process's security descriptor does."""

    def __init__(self, granted, image):
        self.granted, self.image = granted, image
        self.last_error = 0
        self.open_handles = set()
        self._next = 0x100

    def OpenProcess(self, rights, inherit, pid):
        if rights & ~self.granted:
            self.last_error = 5             # ERROR_ACCESS_DENIED
            return None
        self._next += 4
        self.open_handles.add(self._next)
        return self._next

    def CloseHandle(self, handle):
        self.open_handles.discard(handle)
        return 1

    def QueryFullProcessImageNameW(self, handle, flags, buffer, length):
        buffer.value = self.image
        return 1

    def GetExitCodeProcess(self, handle, code):
        code._obj.value = STILL_ACTIVE
        return 1


class FakeNtdll:
    def __init__(self, peb):
        self.peb = peb

    def NtQueryInformationProcess(self, handle, info_class, buffer, size, returned):
        if info_class == 0:                 # ProcessBasicInformation
            buffer._obj.PebBaseAddress = self.peb
            buffer._obj.UniqueProcessId = 4
        return 0                            # STATUS_SUCCESS


@pytest.fixture
def windows(monkeypatch):
    """Pretend to be Windows with the given fakes: returns a setter."""
    def use(kernel32, ntdll):
        monkeypatch.setattr(lw, "_require_windows", lambda: None)
        monkeypatch.setattr(lw, "_api", lambda: (kernel32, ntdll))
        monkeypatch.setattr(ctypes, "get_last_error", lambda: kernel32.last_error, raising=False)
        monkeypatch.setattr(lw, "under_wine", lambda ntdll: None)
    return use


def test_a_process_that_denies_vm_read_names_that_right_and_its_image(windows):
    kernel32 = FakeKernel32(PROCESS_QUERY_INFORMATION | PROCESS_QUERY_LIMITED_INFORMATION,
                            r"C:\Windows\System32\lsass.exe")
    windows(kernel32, FakeNtdll(peb=0x7FF6_1234_0000))
    with pytest.raises(LiveOSError) as refused:
        lw.open_process(712)
    message = str(refused.value)
    assert message.startswith("process 712 (lsass.exe): access denied for PROCESS_VM_READ "
                              "(to read its memory);"), message
    assert "PROCESS_QUERY_INFORMATION (" not in message      # that right was granted
    assert "\n" not in message and "SeDebugPrivilege" in message
    assert kernel32.open_handles == set()                      # every handle it opened is closed


def test_a_process_that_denies_both_rights_names_both(windows):
    kernel32 = FakeKernel32(PROCESS_QUERY_LIMITED_INFORMATION, r"C:\Program Files\av\guard.exe")
    windows(kernel32, FakeNtdll(peb=0x7FF6_1234_0000))
    with pytest.raises(LiveOSError) as refused:
        lw.open_process(1500)
    assert str(refused.value).startswith(
        "process 1500 (guard.exe): access denied for PROCESS_QUERY_INFORMATION (to ask for its "
        "PEB address and debug port) and PROCESS_VM_READ (to read its memory);")
    assert kernel32.open_handles == set()


def test_a_kernel_process_without_a_peb_says_so_when_it_can_be_opened(windows):
    kernel32 = FakeKernel32(PROCESS_QUERY_INFORMATION | PROCESS_VM_READ
                            | PROCESS_QUERY_LIMITED_INFORMATION, "Registry")
    windows(kernel32, FakeNtdll(peb=0))
    with pytest.raises(LiveOSError) as refused:
        lw.open_process(120)
    assert str(refused.value).startswith("process 120 (Registry) has no PEB (PebBaseAddress is "
                                         "NULL): a kernel process")
    assert kernel32.open_handles == set()


def test_a_kernel_process_without_a_peb_says_so_when_access_is_denied(windows):
    # System (PID 4) grants only PROCESS_QUERY_LIMITED_INFORMATION to an administrator.
    kernel32 = FakeKernel32(PROCESS_QUERY_LIMITED_INFORMATION, "System")
    windows(kernel32, FakeNtdll(peb=0))
    with pytest.raises(LiveOSError) as refused:
        lw.open_process(4)
    assert str(refused.value).startswith("process 4 (System) has no PEB")
    assert kernel32.open_handles == set()
