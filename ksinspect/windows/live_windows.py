"""A live process's PEB on Windows, through ctypes over ntdll and kernel32.

It runs in the test suite under a real Windows CPython (the official x64
embeddable build) under Wine, against Windows programs of the same prefix
(``tools/winpython.py``, ``tests/test_windows_live_windows.py``); its pure parts
(:func:`windows_checks`, path normalisation) also run everywhere with fakes.
It imports cleanly on any system; its functions raise
:class:`~ksinspect.errors.UnsupportedError` elsewhere than on Windows.

* :func:`open_process` opens the process with PROCESS_QUERY_INFORMATION |
  PROCESS_VM_READ and finds its PEB with NtQueryInformationProcess
  (ProcessBasicInformation: PebBaseAddress; ProcessWow64Information: the
  32-bit PEB of a WoW64 process). The returned :class:`WindowsProcessMemory`
  reads with ReadProcessMemory and is the ``memory`` the decoders take.
* :func:`gather_facts` asks Windows for what it knows without reading the
  PEB in the process: the main module of a Toolhelp32 module snapshot,
  QueryFullProcessImageNameW (the kernel's image file name),
  CheckRemoteDebuggerPresent (the kernel's debug port), and every image the
  memory manager has mapped (VirtualQueryEx regions of type MEM_IMAGE, each
  named by GetMappedFileNameW: the Windows counterpart of /proc/PID/maps).
  Toolhelp32 itself walks the loader list, so it agrees with a PEB whose
  loader list was tampered with; the kernel's image name and the mapped
  images do not.
* :func:`windows_checks` compares them with the decoded PEB.

Sources: MSDN "NtQueryInformationProcess", "PROCESS_BASIC_INFORMATION",
"ReadProcessMemory", "CreateToolhelp32Snapshot", "MODULEENTRY32W",
"QueryFullProcessImageNameW", "CheckRemoteDebuggerPresent", "OpenProcess",
"Process Security and Access Rights", "VirtualQueryEx",
"MEMORY_BASIC_INFORMATION", "GetMappedFileNameW", "QueryDosDeviceW",
"GetExitCodeProcess".
"""
import ctypes
import errno
import ntpath
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import InvalidAddressError, LiveOSError, UnsupportedError
from .checks import Check, loader_list_checks

__all__ = ["WindowsProcessMemory", "WindowsFacts", "open_process", "gather_facts",
           "windows_checks", "normalise_windows_path", "available"]

PROCESS_QUERY_INFORMATION = 0x0400
PROCESS_VM_READ = 0x0010
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
RIGHTS = ((PROCESS_QUERY_INFORMATION, "PROCESS_QUERY_INFORMATION",
           "ask for its PEB address and debug port"),
          (PROCESS_VM_READ, "PROCESS_VM_READ", "read its memory"))
STILL_ACTIVE = 259
MEM_COMMIT = 0x1000
MEM_IMAGE = 0x1000000
# The highest user address on x64 (and the 2/3/4 GiB ends of WoW64) is below
# this; VirtualQueryEx fails past the end, which ends the walk anyway.
USER_SPACE_END = 1 << 47
MAX_REGIONS = 1 << 20
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


def normalise_windows_path(path: Optional[str],
                           devices: Optional[Dict[str, str]] = None) -> Optional[str]:
    """A Win32 path for comparison: ``\\\\?\\`` and ``\\??\\`` prefixes dropped,
    ``/`` as ``\\``, case folded (NTFS names compare case-insensitively).

    Args:
        devices: ``{"\\device\\harddiskvolume1": "c:"}`` (QueryDosDeviceW, case
            folded): a kernel device path such as GetMappedFileNameW returns on
            Windows becomes the drive-letter path.
    """
    if path is None:
        return None
    path = path.replace("/", "\\")
    for lead in ("\\\\?\\", "\\??\\"):
        if path.startswith(lead):
            path = path[len(lead):]
    path = ntpath.normcase(path)
    for device, drive in (devices or {}).items():
        if path.startswith(device + "\\"):
            return drive + path[len(device):]
    return path


@dataclass(frozen=True)
class WindowsFacts:
    """What Windows says about a process without reading its PEB.

    Attributes:
        snapshot_base, snapshot_size, snapshot_path: the main module in a
            Toolhelp32 module snapshot (None when the snapshot failed).
        image_name: QueryFullProcessImageNameW (None when it failed).
        debugger_present: CheckRemoteDebuggerPresent (None when it failed).
        images: ``(allocation base, mapped file name)`` of every MEM_IMAGE
            allocation (VirtualQueryEx + GetMappedFileNameW), None when the
            walk failed.
        devices: QueryDosDeviceW's ``{device path: drive}``, case folded.
        errors: why a source failed, one line each.
    """

    snapshot_base: Optional[int]
    snapshot_size: Optional[int]
    snapshot_path: Optional[str]
    image_name: Optional[str]
    debugger_present: Optional[bool]
    errors: tuple = ()
    images: Optional[Tuple[Tuple[int, str], ...]] = None
    devices: Optional[Dict[str, str]] = None


def windows_checks(facts: WindowsFacts, image_base: int, image_path: Optional[str],
                   being_debugged: bool, main_module: Optional[Any],
                   modules: Sequence[Any] = ()) -> List[Check]:
    """The PEB against :class:`WindowsFacts` (pure: no system calls).

    Args:
        facts: from :func:`gather_facts`.
        image_base: PEB.ImageBaseAddress.
        image_path: ProcessParameters.ImagePathName.
        being_debugged: PEB.BeingDebugged.
        main_module: the loader entry at ImageBaseAddress (``base``, ``size``),
            or None when the loader list has none.
        modules: the PEB's modules (``base``, ``name``, ``path``, ``lists``),
            compared with the mapped images when ``facts.images`` is known.
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
    if facts.images is not None:
        checks += mapped_image_checks(facts, image_base, image_path, modules)
    return checks


MAPPED_RULE = ("GetMappedFileNameW of the MEM_IMAGE allocation at that base (the memory "
               "manager's section, not the loader's lists); device paths are turned into "
               "drive letters with QueryDosDeviceW, and ")


def mapped_image_checks(facts: WindowsFacts, image_base: int, image_path: Optional[str],
                        modules: Sequence[Any]) -> List[Check]:
    """The image path and every module against the images mapped in the process.

    * ImagePathName must name the file mapped at ImageBaseAddress;
    * each module's DllBase must be the allocation base of a mapped image
      of a file with the module's name;
    * every mapped image must be on the loader lists
      (:func:`~ksinspect.windows.checks.loader_list_checks`).
    """
    images = dict(facts.images or ())
    devices = facts.devices or {}
    mapped = images.get(image_base)
    checks = [Check(
        "image path vs the image mapped at ImageBaseAddress %#x (GetMappedFileNameW)"
        % image_base, image_path, mapped,
        mapped is not None and image_path is not None and
        normalise_windows_path(image_path, devices) == normalise_windows_path(mapped, devices),
        MAPPED_RULE + "the paths are compared without a \\\\?\\ prefix, ignoring case")]
    for module in modules:
        theirs = images.get(module.base)
        name = module.name or ntpath.basename(module.path or "")
        checks.append(Check(
            "module %s at %#x vs the image mapped there (VirtualQueryEx)" % (name or "?",
                                                                           module.base),
            module.path or name, theirs if theirs is not None else
            "no image is mapped at %#x" % module.base,
            theirs is not None and ntpath.basename(normalise_windows_path(theirs, devices)) ==
            ntpath.normcase(name or ""),
            "DllBase must be the allocation base of a MEM_IMAGE region; " + MAPPED_RULE +
            "its file name must be the module's, ignoring case"))
    listed = [(base, ntpath.basename(path.replace("/", "\\")), path)
              for base, path in sorted(images.items())]
    checks += loader_list_checks(listed, modules, image_base,
                                 "the process (VirtualQueryEx, MEM_IMAGE)",
                                 "every allocation of type MEM_IMAGE that VirtualQueryEx "
                                 "reports (the memory manager's view)")
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
    kernel32.GetExitCodeProcess.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD)]
    kernel32.GetExitCodeProcess.restype = wintypes.BOOL
    kernel32.VirtualQueryEx.argtypes = [wintypes.HANDLE, wintypes.LPCVOID,
                                        ctypes.POINTER(_MemoryBasicInformation), ctypes.c_size_t]
    kernel32.VirtualQueryEx.restype = ctypes.c_size_t
    # GetMappedFileNameW is psapi's; kernel32 exports it as K32GetMappedFileNameW (Windows 7+).
    kernel32.K32GetMappedFileNameW.argtypes = [wintypes.HANDLE, wintypes.LPVOID, wintypes.LPWSTR,
                                               wintypes.DWORD]
    kernel32.K32GetMappedFileNameW.restype = wintypes.DWORD
    kernel32.QueryDosDeviceW.argtypes = [wintypes.LPCWSTR, wintypes.LPWSTR, wintypes.DWORD]
    kernel32.QueryDosDeviceW.restype = wintypes.DWORD
    kernel32.GetLogicalDrives.argtypes = []
    kernel32.GetLogicalDrives.restype = wintypes.DWORD
    return kernel32, ntdll


def under_wine(ntdll: Any) -> Optional[str]:
    """Wine's version when this Windows is Wine (its ntdll exports wine_get_version)."""
    try:
        function = ntdll.wine_get_version
    except AttributeError:
        return None
    function.restype = ctypes.c_char_p
    function.argtypes = []
    return function().decode("ascii", "replace")


class _ProcessBasicInformation(ctypes.Structure):
    _fields_ = [("ExitStatus", ctypes.c_long), ("PebBaseAddress", ctypes.c_void_p),
                ("AffinityMask", ctypes.c_size_t), ("BasePriority", ctypes.c_long),
                ("UniqueProcessId", ctypes.c_size_t),
                ("InheritedFromUniqueProcessId", ctypes.c_size_t)]


class _MemoryBasicInformation(ctypes.Structure):
    # MEMORY_BASIC_INFORMATION (winnt.h), 48 bytes on x64.
    _fields_ = [("BaseAddress", ctypes.c_void_p), ("AllocationBase", ctypes.c_void_p),
                ("AllocationProtect", ctypes.c_uint32), ("PartitionId", ctypes.c_uint16),
                ("RegionSize", ctypes.c_size_t), ("State", ctypes.c_uint32),
                ("Protect", ctypes.c_uint32), ("Type", ctypes.c_uint32)]


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
        wow64: a 32-bit process on 64-bit Windows (ProcessWow64Information
            is not 0).
        wow64_peb_address: the 32-bit PEB of a WoW64 process as
            ProcessWow64Information gives it, else None. (Wine 8 answers with
            1, a flag, instead of the address: then it is None and ``wow64``
            True.)
    """

    def __init__(self, pid: int, handle: Any, kernel32: Any, peb_address: int,
                 wow64_peb_address: Optional[int], wow64: bool = False):
        self.pid = pid
        self._handle = handle
        self._kernel32 = kernel32
        self.peb_address = peb_address
        self.wow64_peb_address = wow64_peb_address
        self.wow64 = wow64 or bool(wow64_peb_address)

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
        LiveOSError: no such process, a process that has exited, one without
            a PEB (System and the other kernel processes), access denied (one
            line naming the right that is missing), or NtQueryInformationProcess
            failed.
    """
    _require_windows()
    kernel32, ntdll = _api()
    handle = kernel32.OpenProcess(PROCESS_QUERY_INFORMATION | PROCESS_VM_READ, False, pid)
    if not handle:
        code = ctypes.get_last_error()
        if code == ERROR_INVALID_PARAMETER:
            raise LiveOSError(errno.ESRCH, _no_such_process(pid, ntdll))
        if code == ERROR_ACCESS_DENIED:
            raise LiveOSError(errno.EACCES, _access_denied(pid, kernel32, ntdll))
        raise LiveOSError(code, "OpenProcess(%d): %s" % (pid, ctypes.FormatError(code).strip()))
    try:
        info = _basic_information(handle, pid, ntdll)
        exit_code = ctypes.c_ulong(0)
        if kernel32.GetExitCodeProcess(handle, ctypes.byref(exit_code)) and \
                exit_code.value != STILL_ACTIVE:
            raise LiveOSError(errno.ESRCH, "process %d%s has exited (exit status %d): its memory "
                              "is gone" % (pid, _name_of(handle, kernel32), exit_code.value))
        if not info.PebBaseAddress:
            raise LiveOSError(errno.ENOENT, _no_peb(pid, _name_of(handle, kernel32)))
        wow64 = ctypes.c_size_t(0)
        returned = ctypes.c_ulong(0)
        status = ntdll.NtQueryInformationProcess(handle, ProcessWow64Information,
                                                 ctypes.byref(wow64), ctypes.sizeof(wow64),
                                                 ctypes.byref(returned))
        flag = wow64.value if status >= 0 else 0
        # Windows gives the PEB32's address; Wine 8 gives 1. No PEB sits in the
        # first 64 KiB (never allocated on Windows), so a smaller value is a flag.
        wow64_peb = flag if flag >= 0x10000 else None
    except BaseException:
        kernel32.CloseHandle(handle)
        raise
    return WindowsProcessMemory(pid, handle, kernel32, info.PebBaseAddress or 0, wow64_peb,
                                bool(flag))


THREAD_QUERY_INFORMATION = 0x0040
TH32CS_SNAPTHREAD = 0x00000004
ThreadBasicInformation = 0


class _ThreadEntry32(ctypes.Structure):
    _fields_ = [("dwSize", ctypes.c_uint32), ("cntUsage", ctypes.c_uint32),
                ("th32ThreadID", ctypes.c_uint32), ("th32OwnerProcessID", ctypes.c_uint32),
                ("tpBasePri", ctypes.c_long), ("tpDeltaPri", ctypes.c_long),
                ("dwFlags", ctypes.c_uint32)]


class _ThreadBasicInformation(ctypes.Structure):
    _fields_ = [("ExitStatus", ctypes.c_long), ("TebBaseAddress", ctypes.c_void_p),
                ("UniqueProcess", ctypes.c_void_p), ("UniqueThread", ctypes.c_void_p),
                ("AffinityMask", ctypes.c_size_t), ("Priority", ctypes.c_long),
                ("BasePriority", ctypes.c_long)]


def thread_tebs(pid: int) -> List[Tuple[int, int]]:
    """``(thread ID, TebBaseAddress)`` of the threads of process *pid*: a
    Toolhelp32 thread snapshot, then NtQueryInformationThread
    (ThreadBasicInformation) of each. Threads that cannot be opened are left
    out; for a WoW64 process the addresses are those of the 64-bit TEBs."""
    _require_windows()
    from ctypes import wintypes

    kernel32, ntdll = _api()
    kernel32.Thread32First.argtypes = kernel32.Thread32Next.argtypes = [
        wintypes.HANDLE, ctypes.POINTER(_ThreadEntry32)]
    kernel32.OpenThread.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
    kernel32.OpenThread.restype = wintypes.HANDLE
    ntdll.NtQueryInformationThread.argtypes = [wintypes.HANDLE, wintypes.ULONG, ctypes.c_void_p,
                                               wintypes.ULONG, ctypes.POINTER(wintypes.ULONG)]
    ntdll.NtQueryInformationThread.restype = ctypes.c_long
    snapshot = kernel32.CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0)
    if snapshot in (None, wintypes.HANDLE(-1).value):
        return []
    found = []
    try:
        entry = _ThreadEntry32()
        entry.dwSize = ctypes.sizeof(entry)
        more = kernel32.Thread32First(snapshot, ctypes.byref(entry))
        while more:
            if entry.th32OwnerProcessID == pid:
                thread = kernel32.OpenThread(THREAD_QUERY_INFORMATION, False, entry.th32ThreadID)
                if thread:
                    try:
                        info = _ThreadBasicInformation()
                        if ntdll.NtQueryInformationThread(
                                thread, ThreadBasicInformation, ctypes.byref(info),
                                ctypes.sizeof(info), None) >= 0 and info.TebBaseAddress:
                            found.append((entry.th32ThreadID, info.TebBaseAddress))
                    finally:
                        kernel32.CloseHandle(thread)
            more = kernel32.Thread32Next(snapshot, ctypes.byref(entry))
    finally:
        kernel32.CloseHandle(snapshot)
    return found


def _basic_information(handle: Any, pid: int, ntdll: Any) -> "_ProcessBasicInformation":
    info = _ProcessBasicInformation()
    returned = ctypes.c_ulong(0)
    status = ntdll.NtQueryInformationProcess(handle, ProcessBasicInformation, ctypes.byref(info),
                                             ctypes.sizeof(info), ctypes.byref(returned))
    if status < 0:
        raise LiveOSError(errno.EIO, "NtQueryInformationProcess(ProcessBasicInformation) for "
                          "process %d failed: NTSTATUS %#010x" % (pid, status & 0xFFFFFFFF))
    return info


def _name_of(handle: Any, kernel32: Any) -> str:
    """`` (name.exe)`` from QueryFullProcessImageNameW, or "" when it fails."""
    from ctypes import wintypes

    buffer = ctypes.create_unicode_buffer(32768)
    length = wintypes.DWORD(len(buffer))
    if kernel32.QueryFullProcessImageNameW(handle, 0, buffer, ctypes.byref(length)) and \
            buffer.value:
        return " (%s)" % ntpath.basename(buffer.value)
    return ""


def _no_peb(pid: int, name: str) -> str:
    return ("process %d%s has no PEB (PebBaseAddress is NULL): a kernel process such as "
            "System, Registry, Secure System or Memory Compression runs no user-mode image"
            % (pid, name))


def _no_such_process(pid: int, ntdll: Any) -> str:
    wine = under_wine(ntdll)
    if wine is None:
        return "no process with PID %d" % pid
    return ("no process with PID %d in this Wine prefix (%s, Wine %s): under Wine, PIDs are "
            "Windows PIDs (what GetCurrentProcessId returns), not Linux PIDs, and only the "
            "processes of the same prefix are visible"
            % (pid, os.environ.get("WINEPREFIX", "~/.wine"), wine))


def _access_denied(pid: int, kernel32: Any, ntdll: Any) -> str:
    """The line for a refused OpenProcess: which of the two rights is missing
    (each asked for alone), and whether the process has a PEB at all."""
    missing = []
    for right, name, purpose in RIGHTS:
        handle = kernel32.OpenProcess(right, False, pid)
        if handle:
            kernel32.CloseHandle(handle)
        elif ctypes.get_last_error() == ERROR_ACCESS_DENIED:
            missing.append("%s (to %s)" % (name, purpose))
    label = ""
    limited = kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if limited:
        try:
            label = _name_of(limited, kernel32)
            try:
                if not _basic_information(limited, pid, ntdll).PebBaseAddress:
                    return _no_peb(pid, label)
            except LiveOSError:
                pass
        finally:
            kernel32.CloseHandle(limited)
    return "process %d%s: access denied for %s; %s" % (
        pid, label, " and ".join(missing) or
        "PROCESS_QUERY_INFORMATION | PROCESS_VM_READ together", ACCESS_HINT)


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
    images: Optional[Tuple[Tuple[int, str], ...]]
    try:
        images = mapped_images(memory.handle, kernel32)
    except LiveOSError as exc:
        images = None
        errors.append(str(exc))
    return WindowsFacts(base, size, path, image_name, debugger, tuple(errors), images,
                        dos_devices(kernel32))


def mapped_images(handle: Any, kernel32: Any) -> Tuple[Tuple[int, str], ...]:
    """``(allocation base, file)`` of every MEM_IMAGE allocation in the process.

    VirtualQueryEx walks the regions (the memory manager's view, whatever the
    loader lists say); GetMappedFileNameW names the file of each image's
    section (``\\Device\\HarddiskVolumeN\\...`` on Windows, ``\\??\\C:\\...``
    under Wine). Bounded: at most MAX_REGIONS regions.

    Raises:
        LiveOSError: VirtualQueryEx failed before the end of user space.
    """
    info = _MemoryBasicInformation()
    found: Dict[int, str] = {}
    address = 0
    for _ in range(MAX_REGIONS):
        if address >= USER_SPACE_END:
            break
        if not kernel32.VirtualQueryEx(handle, ctypes.c_void_p(address), ctypes.byref(info),
                                       ctypes.sizeof(info)):
            code = ctypes.get_last_error()
            if code == ERROR_INVALID_PARAMETER:      # past the highest user address
                break
            raise LiveOSError(code, "VirtualQueryEx at %#x: %s" % (
                address, ctypes.FormatError(code).strip()))
        base = info.AllocationBase or 0
        if info.State == MEM_COMMIT and info.Type == MEM_IMAGE and base not in found:
            buffer = ctypes.create_unicode_buffer(32768)
            length = kernel32.K32GetMappedFileNameW(handle, ctypes.c_void_p(base), buffer,
                                                    len(buffer))
            found[base] = buffer.value[:length] if length else "?"
        following = (info.BaseAddress or 0) + info.RegionSize
        if following <= address:
            break
        address = following
    return tuple(sorted(found.items()))


def dos_devices(kernel32: Any) -> Dict[str, str]:
    """``{"\\device\\harddiskvolume1": "c:"}`` for every drive letter (QueryDosDeviceW)."""
    drives = kernel32.GetLogicalDrives()
    devices = {}
    buffer = ctypes.create_unicode_buffer(1024)
    for index in range(26):
        if drives & (1 << index):
            letter = chr(ord("a") + index) + ":"
            if kernel32.QueryDosDeviceW(letter, buffer, len(buffer)):
                devices[buffer.value.lower()] = letter
    return devices
