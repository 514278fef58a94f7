"""ctypes declarations of the Windows debug API (kernel32), nothing else.

The functions of the seed notes' debugger (*Gray Hat Python*): CreateProcessW
with DEBUG_ONLY_THIS_PROCESS, OpenProcess + DebugActiveProcess,
WaitForDebugEvent / ContinueDebugEvent, DebugActiveProcessStop,
DebugSetProcessKillOnExit, CreateToolhelp32Snapshot / Thread32First /
Thread32Next, OpenThread, Get/SetThreadContext
(and Wow64Get/SetThreadContext), Suspend/ResumeThread, Read/WriteProcessMemory,
FlushInstructionCache, VirtualQueryEx, VirtualProtectEx, GetSystemInfo,
GetProcAddress / GetModuleHandleW, TerminateProcess, GetExitCodeProcess.

Each call is wrapped so that a failure raises :class:`~ksinspect.errors.LiveOSError`
(or :class:`~ksinspect.errors.NoSuchProcessError`) naming the function, what
it was called on and Windows' own message (``GetLastError``). Structures are
passed as raw, properly aligned byte buffers: decoding them is the job of
:mod:`ksinspect.windows.debug_event`, :mod:`ksinspect.windows.memory_info` and
:mod:`ksinspect.windows.context`.

Sources: Microsoft Learn, the pages of each function named above, "Process
Security and Access Rights", "Thread Security and Access Rights", "Memory
Protection Constants"; the structure sizes of winnt.h / minwinbase.h /
tlhelp32.h for x64 (DEBUG_EVENT 176 bytes, CONTEXT 1232 bytes aligned on 16,
WOW64_CONTEXT 716, MEMORY_BASIC_INFORMATION 48, THREADENTRY32 28,
SYSTEM_INFO 48, STARTUPINFOW 104, PROCESS_INFORMATION 24).
"""
import ctypes
import struct
import sys
from typing import List, Optional, Tuple

from ..errors import LiveOSError, NoSuchProcessError, UnsupportedError

# Process creation and access (winbase.h, winnt.h).
DEBUG_PROCESS = 0x00000001
DEBUG_ONLY_THIS_PROCESS = 0x00000002
CREATE_UNICODE_ENVIRONMENT = 0x00000400
STARTF_USESTDHANDLES = 0x00000100
PROCESS_ALL_ACCESS = 0x001FFFFF
THREAD_ALL_ACCESS = 0x001FFFFF
HANDLE_FLAG_INHERIT = 0x00000001
INFINITE = 0xFFFFFFFF
WAIT_OBJECT_0 = 0
WAIT_TIMEOUT = 0x102
STILL_ACTIVE = 259

# ContinueDebugEvent statuses (ntstatus.h).
DBG_CONTINUE = 0x00010002
DBG_EXCEPTION_NOT_HANDLED = 0x80010001

# CONTEXT flags (winnt.h, x64 and WOW64).
CONTEXT_AMD64 = 0x00100000
CONTEXT_CONTROL = CONTEXT_AMD64 | 0x1
CONTEXT_INTEGER = CONTEXT_AMD64 | 0x2
CONTEXT_SEGMENTS = CONTEXT_AMD64 | 0x4
CONTEXT_DEBUG_REGISTERS = CONTEXT_AMD64 | 0x10
CONTEXT_ALL = CONTEXT_AMD64 | 0x1F
WOW64_CONTEXT_i386 = 0x00010000
WOW64_CONTEXT_CONTROL = WOW64_CONTEXT_i386 | 0x1
WOW64_CONTEXT_DEBUG_REGISTERS = WOW64_CONTEXT_i386 | 0x10
WOW64_CONTEXT_ALL = WOW64_CONTEXT_i386 | 0x3F
CONTEXT_SIZE = 1232
CONTEXT_ALIGN = 16
WOW64_CONTEXT_SIZE = 716

# Toolhelp32 (tlhelp32.h).
TH32CS_SNAPTHREAD = 0x00000004
INVALID_HANDLE_VALUE = ctypes.c_void_p(-1).value

DEBUG_EVENT_SIZE = 176
MBI_SIZE = 48

# GetLastError values met here (winerror.h).
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_HANDLE = 6
ERROR_INVALID_PARAMETER = 87
ERROR_SEM_TIMEOUT = 121
ERROR_PARTIAL_COPY = 299
ERROR_NOACCESS = 998
ERROR_FILE_NOT_FOUND = 2
ERROR_PATH_NOT_FOUND = 3
ERROR_NOT_SUPPORTED = 50


def available() -> bool:
    return sys.platform == "win32"


def unavailable_reason() -> Optional[str]:
    if sys.platform != "win32":
        return ("the Win32 debugger needs Windows (this is %s); on Linux, run it under Wine "
                "with the Windows CPython of tools/winpython.py, or use the ptrace lab"
                % sys.platform)
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return "the Win32 debugger needs a 64-bit Python (this one is 32-bit)"
    return None


class _Api:
    """kernel32 with the prototypes used here (built on first use, on Windows)."""

    def __init__(self):
        from ctypes import wintypes as w
        k = ctypes.WinDLL("kernel32", use_last_error=True)
        H, B, D, P, S = w.HANDLE, w.BOOL, w.DWORD, ctypes.c_void_p, ctypes.c_size_t
        proto = {
            "CreateProcessW": (B, [w.LPCWSTR, w.LPWSTR, P, P, B, D, P, w.LPCWSTR, P, P]),
            "OpenProcess": (H, [D, B, D]),
            "OpenThread": (H, [D, B, D]),
            "CloseHandle": (B, [H]),
            "DebugActiveProcess": (B, [D]),
            "DebugActiveProcessStop": (B, [D]),
            "DebugSetProcessKillOnExit": (B, [B]),
            "DebugBreakProcess": (B, [H]),
            "CheckRemoteDebuggerPresent": (B, [H, ctypes.POINTER(B)]),
            "WaitForDebugEvent": (B, [P, D]),
            "ContinueDebugEvent": (B, [D, D, D]),
            "GetThreadContext": (B, [H, P]),
            "SetThreadContext": (B, [H, P]),
            "Wow64GetThreadContext": (B, [H, P]),
            "Wow64SetThreadContext": (B, [H, P]),
            "IsWow64Process": (B, [H, ctypes.POINTER(B)]),
            "SuspendThread": (D, [H]),
            "ResumeThread": (D, [H]),
            "ReadProcessMemory": (B, [H, P, P, S, ctypes.POINTER(S)]),
            "WriteProcessMemory": (B, [H, P, P, S, ctypes.POINTER(S)]),
            "FlushInstructionCache": (B, [H, P, S]),
            "VirtualQueryEx": (S, [H, P, P, S]),
            "VirtualProtectEx": (B, [H, P, S, D, ctypes.POINTER(D)]),
            "GetSystemInfo": (None, [P]),
            "CreateToolhelp32Snapshot": (H, [D, D]),
            "Thread32First": (B, [H, P]),
            "Thread32Next": (B, [H, P]),
            "GetModuleHandleW": (H, [w.LPCWSTR]),
            "GetProcAddress": (P, [H, w.LPCSTR]),
            "TerminateProcess": (B, [H, w.UINT]),
            "GetExitCodeProcess": (B, [H, ctypes.POINTER(D)]),
            "WaitForSingleObject": (D, [H, D]),
            "GetProcessId": (D, [H]),
            "SetHandleInformation": (B, [H, D, D]),
            "GetStdHandle": (H, [D]),
            "GetFinalPathNameByHandleW": (D, [H, w.LPWSTR, D, D]),
            "GetCurrentProcessId": (D, []),
        }
        for name, (restype, argtypes) in proto.items():
            fn = getattr(k, name)
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name, fn)


_API: Optional[_Api] = None


def api() -> _Api:
    global _API
    reason = unavailable_reason()
    if reason:
        raise UnsupportedError(reason)
    if _API is None:
        _API = _Api()
    return _API


def last_error() -> int:
    return ctypes.get_last_error()


def fail(function: str, what: str, code: Optional[int] = None) -> LiveOSError:
    """The error of a failed call: '<function>(<what>) failed: <Windows' message> (error N)'."""
    code = last_error() if code is None else code
    text = ctypes.FormatError(code).strip() if available() else "error %d" % code
    exc_type = NoSuchProcessError if code == ERROR_INVALID_PARAMETER and "process" in what \
        else LiveOSError
    if exc_type is NoSuchProcessError:
        exc = NoSuchProcessError("%s(%s) failed: %s (error %d)" % (function, what, text, code),
                                 code)
    else:
        exc = LiveOSError(code, "%s(%s) failed: %s (error %d)" % (function, what, text, code))
    exc.winerror_code = code
    return exc


def check(ok, function: str, what: str):
    if not ok:
        raise fail(function, what)
    return ok


def aligned_buffer(size: int, align: int = CONTEXT_ALIGN) -> Tuple[object, int]:
    """(owner, address) of ``size`` zeroed bytes aligned on ``align`` (CONTEXT
    must be 16-byte aligned: DECLSPEC_ALIGN(16) in winnt.h)."""
    owner = ctypes.create_string_buffer(size + align)
    address = ctypes.addressof(owner)
    return owner, address + (-address) % align


# ------------------------------------------------------------- the calls

def close_handle(handle: Optional[int]) -> None:
    if handle:
        api().CloseHandle(handle)


def create_process(command_line: str, flags: int, stdio: Tuple[Optional[int], ...] = (),
                   cwd: Optional[str] = None) -> Tuple[int, int, int, int]:
    """CreateProcessW; returns (process handle, thread handle, pid, tid).

    stdio: up to three Win32 handles for the child's stdin, stdout, stderr
    (inheritable; None keeps the debugger's own).
    """
    a = api()
    si = ctypes.create_string_buffer(104)
    struct.pack_into("<I", si, 0, 104)                       # cb
    inherit = False
    if any(h is not None for h in stdio):
        handles = list(stdio) + [None] * (3 - len(stdio))
        std = [a.GetStdHandle(n & 0xFFFFFFFF) for n in (-10, -11, -12)]
        chosen = [h if h is not None else s for h, s in zip(handles, std)]
        for h in chosen:
            if h:
                a.SetHandleInformation(h, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT)
        struct.pack_into("<I", si, 60, STARTF_USESTDHANDLES)   # dwFlags
        struct.pack_into("<QQQ", si, 80, *(h or 0 for h in chosen))
        inherit = True
    pi = ctypes.create_string_buffer(24)
    line = ctypes.create_unicode_buffer(command_line)
    check(a.CreateProcessW(None, line, None, None, inherit, flags, None, cwd,
                           ctypes.addressof(si), ctypes.addressof(pi)),
          "CreateProcessW", command_line)
    return struct.unpack_from("<QQII", pi, 0)


def open_process(pid: int) -> int:
    handle = api().OpenProcess(PROCESS_ALL_ACCESS, False, pid)
    if not handle:
        code = last_error()
        if code == ERROR_INVALID_PARAMETER:
            raise NoSuchProcessError("process %d does not exist" % pid, code)
        raise fail("OpenProcess", "process %d, PROCESS_ALL_ACCESS" % pid, code)
    return handle


def open_thread(tid: int) -> int:
    return check(api().OpenThread(THREAD_ALL_ACCESS, False, tid), "OpenThread",
                 "thread %d, THREAD_ALL_ACCESS" % tid)


def debugger_present(process: int) -> bool:
    flag = ctypes.c_int(0)
    check(api().CheckRemoteDebuggerPresent(process, ctypes.byref(flag)),
          "CheckRemoteDebuggerPresent", "")
    return bool(flag.value)


def is_wow64(process: int) -> bool:
    flag = ctypes.c_int(0)
    check(api().IsWow64Process(process, ctypes.byref(flag)), "IsWow64Process", "")
    return bool(flag.value)


def wait_for_debug_event(milliseconds: int) -> Optional[bytes]:
    """The next DEBUG_EVENT's 176 bytes, or None when none came in time."""
    owner, address = aligned_buffer(DEBUG_EVENT_SIZE, 8)
    if not api().WaitForDebugEvent(address, milliseconds):
        code = last_error()
        if code == ERROR_SEM_TIMEOUT or code == 0:
            return None
        raise fail("WaitForDebugEvent", "", code)
    return ctypes.string_at(address, DEBUG_EVENT_SIZE)


def continue_debug_event(pid: int, tid: int, status: int) -> None:
    check(api().ContinueDebugEvent(pid, tid, status), "ContinueDebugEvent",
          "process %d thread %d, %#x" % (pid, tid, status))


def get_context(thread: int, flags: int = CONTEXT_ALL, wow64: bool = False) -> bytearray:
    """GetThreadContext (Wow64GetThreadContext): the raw CONTEXT bytes."""
    size = WOW64_CONTEXT_SIZE if wow64 else CONTEXT_SIZE
    owner, address = aligned_buffer(size)
    struct.pack_into("<I", (ctypes.c_char * size).from_address(address), 0 if wow64 else 0x30,
                     flags)
    function = "Wow64GetThreadContext" if wow64 else "GetThreadContext"
    check(getattr(api(), function)(thread, address), function, "flags %#x" % flags)
    return bytearray(ctypes.string_at(address, size))


def set_context(thread: int, data: bytes, wow64: bool = False) -> None:
    size = WOW64_CONTEXT_SIZE if wow64 else CONTEXT_SIZE
    owner, address = aligned_buffer(size)
    ctypes.memmove(address, bytes(data[:size]), size)
    function = "Wow64SetThreadContext" if wow64 else "SetThreadContext"
    check(getattr(api(), function)(thread, address), function, "")


def suspend_thread(thread: int) -> None:
    if api().SuspendThread(thread) == 0xFFFFFFFF:
        raise fail("SuspendThread", "")


def resume_thread(thread: int) -> None:
    if api().ResumeThread(thread) == 0xFFFFFFFF:
        raise fail("ResumeThread", "")


def read_memory(process: int, address: int, size: int) -> bytes:
    buf = ctypes.create_string_buffer(size)
    done = ctypes.c_size_t(0)
    ok = api().ReadProcessMemory(process, address, buf, size, ctypes.byref(done))
    if not ok or done.value != size:
        raise fail("ReadProcessMemory", "%d bytes at %#x" % (size, address))
    return buf.raw


def read_available(process: int, address: int, size: int) -> bytes:
    """As much of the range as can be read from its start (b'' when none)."""
    buf = ctypes.create_string_buffer(size)
    done = ctypes.c_size_t(0)
    api().ReadProcessMemory(process, address, buf, size, ctypes.byref(done))
    return buf.raw[:done.value]


def write_memory(process: int, address: int, data: bytes) -> None:
    done = ctypes.c_size_t(0)
    ok = api().WriteProcessMemory(process, address, data, len(data), ctypes.byref(done))
    if not ok or done.value != len(data):
        raise fail("WriteProcessMemory", "%d bytes at %#x" % (len(data), address))
    check(api().FlushInstructionCache(process, address, len(data)), "FlushInstructionCache",
          "%#x" % address)


def virtual_query(process: int, address: int) -> Optional[bytes]:
    """The MEMORY_BASIC_INFORMATION bytes of the region holding address
    (None past the end of the address space)."""
    owner, buf = aligned_buffer(MBI_SIZE, 8)
    got = api().VirtualQueryEx(process, address, buf, MBI_SIZE)
    if not got:
        code = last_error()
        if code == ERROR_INVALID_PARAMETER:
            return None
        raise fail("VirtualQueryEx", "%#x" % address, code)
    return ctypes.string_at(buf, MBI_SIZE)


def virtual_protect(process: int, address: int, size: int, protection: int) -> int:
    """VirtualProtectEx; returns the previous protection."""
    old = ctypes.c_ulong(0)
    check(api().VirtualProtectEx(process, address, size, protection, ctypes.byref(old)),
          "VirtualProtectEx", "%#x, %#x bytes, protection %#x" % (address, size, protection))
    return old.value


def page_size() -> int:
    """SYSTEM_INFO.dwPageSize from GetSystemInfo (offset 4)."""
    buf = ctypes.create_string_buffer(48)
    api().GetSystemInfo(buf)
    return struct.unpack_from("<I", buf, 4)[0]


def snapshot_threads(pid: int) -> List[int]:
    """Thread ids of process pid, by a Toolhelp32 thread snapshot (THREADENTRY32)."""
    a = api()
    snap = a.CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0)
    if snap == INVALID_HANDLE_VALUE or not snap:
        raise fail("CreateToolhelp32Snapshot", "TH32CS_SNAPTHREAD")
    tids = []
    try:
        entry = ctypes.create_string_buffer(28)
        struct.pack_into("<I", entry, 0, 28)
        ok = a.Thread32First(snap, entry)
        while ok:
            tid, owner = struct.unpack_from("<II", entry, 8)
            if owner == pid:
                tids.append(tid)
            ok = a.Thread32Next(snap, entry)
    finally:
        a.CloseHandle(snap)
    return tids


def own_proc_address(module: str, name: str) -> int:
    """GetModuleHandleW + GetProcAddress in the debugger's own process."""
    a = api()
    handle = a.GetModuleHandleW(module)
    if not handle:
        raise fail("GetModuleHandleW", module)
    address = a.GetProcAddress(handle, name.encode("ascii"))
    if not address:
        raise fail("GetProcAddress", "%s!%s" % (module, name))
    return address


def exit_code(process: int) -> Optional[int]:
    code = ctypes.c_ulong(0)
    check(api().GetExitCodeProcess(process, ctypes.byref(code)), "GetExitCodeProcess", "")
    return None if code.value == STILL_ACTIVE else code.value


def wait_process(process: int, milliseconds: int = INFINITE) -> bool:
    return api().WaitForSingleObject(process, milliseconds) == WAIT_OBJECT_0



def final_path(handle: int) -> Optional[str]:
    """GetFinalPathNameByHandleW of a file handle, as a DOS path (None on failure)."""
    if not handle:
        return None
    buf = ctypes.create_unicode_buffer(1024)
    n = api().GetFinalPathNameByHandleW(handle, buf, 1024, 0)
    if not n or n >= 1024:
        return None
    path = buf.value
    return path[4:] if path.startswith("\\\\?\\") else path


def api_current_pid() -> int:
    return api().GetCurrentProcessId()
