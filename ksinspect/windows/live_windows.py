"""A live process's PEB on Windows, through ctypes over ntdll and kernel32.

**Untested on real Windows**: it was written from Microsoft's documented
signatures and only its pure parts (:func:`windows_checks`, path
normalisation) run in the test suite, with fakes. It imports cleanly on any
system; its functions raise :class:`~ksinspect.errors.UnsupportedError`
elsewhere than on Windows.

* :func:`open_process` opens the process with PROCESS_QUERY_INFORMATION |
  PROCESS_VM_READ and finds its PEB with NtQueryInformationProcess
  (ProcessBasicInformation: PebBaseAddress; ProcessWow64Information: the
  32-bit PEB of a WoW64 process). The returned :class:`WindowsProcessMemory`
  reads with ReadProcessMemory and is the ``memory`` the decoders take.
* :func:`gather_facts` asks Windows for what it knows without reading the
  PEB in the process: the main module of a Toolhelp32 module snapshot,
  QueryFullProcessImageNameW (the kernel's image file name) and
  CheckRemoteDebuggerPresent (the kernel's debug port).
  Toolhelp32 itself walks the loader list, so it agrees with a PEB whose
  loader list was tampered with; the image name from the kernel does not.
* :func:`windows_checks` compares them with the decoded PEB.

Sources: MSDN "NtQueryInformationProcess", "PROCESS_BASIC_INFORMATION",
"ReadProcessMemory", "CreateToolhelp32Snapshot", "MODULEENTRY32W",
"QueryFullProcessImageNameW", "CheckRemoteDebuggerPresent", "OpenProcess",
"Process Security and Access Rights".
"""
import ctypes
import ntpath
import sys
from dataclasses import dataclass
from typing import Any, List, Optional

from ..errors import InvalidAddressError, LiveOSError, UnsupportedError
from .checks import Check

__all__ = ["WindowsProcessMemory", "WindowsFacts", "open_process", "gather_facts",
           "windows_checks", "normalise_windows_path", "available"]

PROCESS_QUERY_INFORMATION = 0x0400
PROCESS_VM_READ = 0x0010
ProcessBasicInformation = 0
ProcessWow64Information = 26
TH32CS_SNAPMODULE = 0x00000008
TH32CS_SNAPMODULE32 = 0x00000010
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_PARAMETER = 87
ERROR_BAD_LENGTH = 24
ERROR_PARTIAL_COPY = 299
ERROR_NOACCESS = 998
MAX_PATH = 260
MAX_MODULE_NAME32 = 255
MAX_READ = 16 << 20

ACCESS_HINT = ("reading another process's PEB needs PROCESS_QUERY_INFORMATION and "
               "PROCESS_VM_READ: run as the same user, elevated (administrator) for other "
               "users' processes, with SeDebugPrivilege for services; protected (PPL) "
               "processes cannot be read")


def available() -> bool:
    return sys.platform == "win32"


def _require_windows() -> None:
    if not available():
        raise UnsupportedError("the Windows live back-end needs Windows (this is %s); under "
                               "Linux, Windows programs running in Wine are read by "
                               "ksinspect.live.wine" % sys.platform)


def normalise_windows_path(path: Optional[str]) -> Optional[str]:
    """A Win32 path for comparison: ``\\\\?\\`` and ``\\??\\`` prefixes dropped,
    ``/`` as ``\\``, case folded (NTFS names compare case-insensitively)."""
    if path is None:
        return None
    path = path.replace("/", "\\")
    for lead in ("\\\\?\\", "\\??\\"):
        if path.startswith(lead):
            path = path[len(lead):]
    return ntpath.normcase(path)


@dataclass(frozen=True)
class WindowsFacts:
    """What Windows says about a process without reading its PEB.

    Attributes:
        snapshot_base, snapshot_size, snapshot_path: the main module in a
            Toolhelp32 module snapshot (None when the snapshot failed).
        image_name: QueryFullProcessImageNameW (None when it failed).
        debugger_present: CheckRemoteDebuggerPresent (None when it failed).
        errors: why a source failed, one line each.
    """

    snapshot_base: Optional[int]
    snapshot_size: Optional[int]
    snapshot_path: Optional[str]
    image_name: Optional[str]
    debugger_present: Optional[bool]
    errors: tuple = ()


def windows_checks(facts: WindowsFacts, image_base: int, image_path: Optional[str],
                   being_debugged: bool, main_module: Optional[Any]) -> List[Check]:
    """The PEB against :class:`WindowsFacts` (pure: no system calls).

    Args:
        facts: from :func:`gather_facts`.
        image_base: PEB.ImageBaseAddress.
        image_path: ProcessParameters.ImagePathName.
        being_debugged: PEB.BeingDebugged.
        main_module: the loader entry at ImageBaseAddress (``base``, ``size``),
            or None when the loader list has none.
    """
    path_rule = ("paths compared without a \\\\?\\ prefix, ignoring case")
    checks = [
        Check("image path vs QueryFullProcessImageNameW", image_path,
              facts.image_name,
              facts.image_name is not None and
              normalise_windows_path(image_path) == normalise_windows_path(facts.image_name),
              "ImagePathName must name the file the kernel created the process from; "
              + path_rule),
        Check("ImageBaseAddress vs the main module of a Toolhelp32 snapshot", image_base,
              facts.snapshot_base, facts.snapshot_base == image_base,
              "the first module of a TH32CS_SNAPMODULE snapshot is the main image"),
        Check("image path vs the main module of a Toolhelp32 snapshot", image_path,
              facts.snapshot_path,
              facts.snapshot_path is not None and
              normalise_windows_path(image_path) == normalise_windows_path(facts.snapshot_path),
              "MODULEENTRY32W.szExePath of the main module; " + path_rule),
        Check("BeingDebugged vs CheckRemoteDebuggerPresent", bool(being_debugged),
              facts.debugger_present, facts.debugger_present is not None and
              bool(being_debugged) == facts.debugger_present,
              "PEB.BeingDebugged must be set exactly when the kernel reports a debug port"),
    ]
    if main_module is not None:
        checks.append(Check(
            "SizeOfImage of the main module: loader entry vs Toolhelp32 snapshot",
            main_module.size, facts.snapshot_size, facts.snapshot_size == main_module.size,
            "MODULEENTRY32W.modBaseSize of the main module"))
    return checks


# -- ctypes (Windows only) -------------------------------------------------

def _api():
    """kernel32 and ntdll with the prototypes used here (Windows only)."""
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    ntdll = ctypes.WinDLL("ntdll")
    kernel32.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    kernel32.CloseHandle.restype = wintypes.BOOL
    kernel32.ReadProcessMemory.argtypes = [wintypes.HANDLE, wintypes.LPCVOID, wintypes.LPVOID,
                                           ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    kernel32.ReadProcessMemory.restype = wintypes.BOOL
    kernel32.CreateToolhelp32Snapshot.argtypes = [wintypes.DWORD, wintypes.DWORD]
    kernel32.CreateToolhelp32Snapshot.restype = wintypes.HANDLE
    kernel32.Module32FirstW.argtypes = [wintypes.HANDLE, ctypes.POINTER(_ModuleEntry32W)]
    kernel32.Module32FirstW.restype = wintypes.BOOL
    kernel32.QueryFullProcessImageNameW.argtypes = [wintypes.HANDLE, wintypes.DWORD,
                                                    wintypes.LPWSTR,
                                                    ctypes.POINTER(wintypes.DWORD)]
    kernel32.QueryFullProcessImageNameW.restype = wintypes.BOOL
    kernel32.CheckRemoteDebuggerPresent.argtypes = [wintypes.HANDLE,
                                                    ctypes.POINTER(wintypes.BOOL)]
    kernel32.CheckRemoteDebuggerPresent.restype = wintypes.BOOL
    ntdll.NtQueryInformationProcess.argtypes = [wintypes.HANDLE, wintypes.ULONG,
                                                ctypes.c_void_p, wintypes.ULONG,
                                                ctypes.POINTER(wintypes.ULONG)]
    ntdll.NtQueryInformationProcess.restype = ctypes.c_long     # NTSTATUS
    return kernel32, ntdll


class _ProcessBasicInformation(ctypes.Structure):
    _fields_ = [("ExitStatus", ctypes.c_long), ("PebBaseAddress", ctypes.c_void_p),
                ("AffinityMask", ctypes.c_size_t), ("BasePriority", ctypes.c_long),
                ("UniqueProcessId", ctypes.c_size_t),
                ("InheritedFromUniqueProcessId", ctypes.c_size_t)]


class _ModuleEntry32W(ctypes.Structure):
    _fields_ = [("dwSize", ctypes.c_uint32), ("th32ModuleID", ctypes.c_uint32),
                ("th32ProcessID", ctypes.c_uint32), ("GlblcntUsage", ctypes.c_uint32),
                ("ProccntUsage", ctypes.c_uint32), ("modBaseAddr", ctypes.c_void_p),
                ("modBaseSize", ctypes.c_uint32), ("hModule", ctypes.c_void_p),
                # WCHAR is 16-bit on Windows (c_wchar is 32-bit on Linux): declared
                # as uint16 so the layout is the SDK's wherever this is imported.
                ("szModule", ctypes.c_uint16 * (MAX_MODULE_NAME32 + 1)),
                ("szExePath", ctypes.c_uint16 * MAX_PATH)]


def _wide(chars: Any) -> str:
    """A NUL-terminated WCHAR array as text."""
    raw = bytes(memoryview(chars).cast("B"))
    text = raw.decode("utf-16-le", errors="replace")
    return text.split("\0", 1)[0]


class WindowsProcessMemory:
    """Reads a process's memory with ReadProcessMemory (the decoders' ``memory``).

    Attributes:
        pid: the process ID.
        peb_address: PebBaseAddress (the native PEB).
        wow64_peb_address: the 32-bit PEB of a WoW64 process, else None.
    """

    def __init__(self, pid: int, handle: Any, kernel32: Any, peb_address: int,
                 wow64_peb_address: Optional[int]):
        self.pid = pid
        self._handle = handle
        self._kernel32 = kernel32
        self.peb_address = peb_address
        self.wow64_peb_address = wow64_peb_address

    @property
    def handle(self) -> Any:
        return self._handle

    def read(self, address: int, size: int) -> bytes:
        """*size* bytes at *address*.

        Raises:
            InvalidAddressError: part of the range is not readable.
            LiveOSError: the size is out of bounds, or the read failed otherwise.
        """
        if self._handle is None:
            raise LiveOSError(9, "the handle of process %d is closed" % self.pid)
        if size < 0 or size > MAX_READ:
            raise LiveOSError(22, "refusing to read %d bytes at %#x from process %d" % (
                size, address, self.pid))
        if size == 0:
            return b""
        buffer = ctypes.create_string_buffer(size)
        done = ctypes.c_size_t(0)
        if not self._kernel32.ReadProcessMemory(self._handle, ctypes.c_void_p(address), buffer,
                                                size, ctypes.byref(done)):
            code = ctypes.get_last_error()
            if code in (ERROR_PARTIAL_COPY, ERROR_NOACCESS):
                raise InvalidAddressError("address %#x (+%#x) is not readable in process %d"
                                          % (address, size, self.pid), address)
            raise LiveOSError(code, "ReadProcessMemory at %#x in process %d: %s" % (
                address, self.pid, ctypes.FormatError(code).strip()))
        if done.value != size:
            raise InvalidAddressError("address %#x is not readable in process %d" % (
                address + done.value, self.pid), address + done.value)
        return buffer.raw

    def close(self) -> None:
        if self._handle is not None:
            self._kernel32.CloseHandle(self._handle)
            self._handle = None

    def __enter__(self) -> "WindowsProcessMemory":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_process(pid: int) -> WindowsProcessMemory:
    """Open process *pid* for reading and find its PEB(s).

    Raises:
        UnsupportedError: not on Windows.
        LiveOSError: no such process, access denied (one line saying what
            access is missing), or NtQueryInformationProcess failed.
    """
    _require_windows()
    kernel32, ntdll = _api()
    handle = kernel32.OpenProcess(PROCESS_QUERY_INFORMATION | PROCESS_VM_READ, False, pid)
    if not handle:
        code = ctypes.get_last_error()
        if code == ERROR_INVALID_PARAMETER:
            raise LiveOSError(3, "no process with PID %d" % pid)
        if code == ERROR_ACCESS_DENIED:
            raise LiveOSError(13, "OpenProcess(%d): access denied; %s" % (pid, ACCESS_HINT))
        raise LiveOSError(code, "OpenProcess(%d): %s" % (pid, ctypes.FormatError(code).strip()))
    try:
        info = _ProcessBasicInformation()
        returned = ctypes.c_ulong(0)
        status = ntdll.NtQueryInformationProcess(handle, ProcessBasicInformation,
                                                 ctypes.byref(info), ctypes.sizeof(info),
                                                 ctypes.byref(returned))
        if status < 0:
            raise LiveOSError(5, "NtQueryInformationProcess(ProcessBasicInformation) for "
                              "process %d failed: NTSTATUS %#010x" % (pid, status & 0xFFFFFFFF))
        wow64 = ctypes.c_size_t(0)
        status = ntdll.NtQueryInformationProcess(handle, ProcessWow64Information,
                                                 ctypes.byref(wow64), ctypes.sizeof(wow64),
                                                 ctypes.byref(returned))
        wow64_peb = wow64.value if status >= 0 and wow64.value else None
    except BaseException:
        kernel32.CloseHandle(handle)
        raise
    return WindowsProcessMemory(pid, handle, kernel32, info.PebBaseAddress or 0, wow64_peb)


def gather_facts(memory: WindowsProcessMemory) -> WindowsFacts:
    """Toolhelp32 main module, QueryFullProcessImageNameW, CheckRemoteDebuggerPresent.

    A source that fails leaves its fields None and says why in ``errors``.
    """
    _require_windows()
    from ctypes import wintypes

    kernel32, _ = _api()
    errors = []
    base = size = path = None
    snapshot = None
    for _ in range(5):      # ERROR_BAD_LENGTH: the module list changed meanwhile; retry
        snapshot = kernel32.CreateToolhelp32Snapshot(TH32CS_SNAPMODULE | TH32CS_SNAPMODULE32,
                                                     memory.pid)
        if snapshot not in (None, wintypes.HANDLE(-1).value) or \
                ctypes.get_last_error() != ERROR_BAD_LENGTH:
            break
    if snapshot in (None, wintypes.HANDLE(-1).value):
        errors.append("CreateToolhelp32Snapshot: %s"
                      % ctypes.FormatError(ctypes.get_last_error()).strip())
    else:
        try:
            entry = _ModuleEntry32W()
            entry.dwSize = ctypes.sizeof(entry)
            if kernel32.Module32FirstW(snapshot, ctypes.byref(entry)):
                base, size, path = entry.modBaseAddr or 0, entry.modBaseSize, _wide(entry.szExePath)
            else:
                errors.append("Module32FirstW: %s"
                              % ctypes.FormatError(ctypes.get_last_error()).strip())
        finally:
            kernel32.CloseHandle(snapshot)
    image_name = None
    buffer = ctypes.create_unicode_buffer(32768)
    length = wintypes.DWORD(len(buffer))
    if kernel32.QueryFullProcessImageNameW(memory.handle, 0, buffer, ctypes.byref(length)):
        image_name = buffer.value
    else:
        errors.append("QueryFullProcessImageNameW: %s"
                      % ctypes.FormatError(ctypes.get_last_error()).strip())
    debugger = None
    flag = wintypes.BOOL(0)
    if kernel32.CheckRemoteDebuggerPresent(memory.handle, ctypes.byref(flag)):
        debugger = bool(flag.value)
    else:
        errors.append("CheckRemoteDebuggerPresent: %s"
                      % ctypes.FormatError(ctypes.get_last_error()).strip())
    return WindowsFacts(base, size, path, image_name, debugger, tuple(errors))
