"""The Win32 ``DEBUG_EVENT``, decoded from its bytes (x64 layout).

``WaitForDebugEvent`` fills a DEBUG_EVENT (minwinbase.h): the event code,
the process and thread ids, and a union whose member the code selects (the
seed notes' nine codes). On x64 the union starts at offset 16 and the whole
structure is 176 bytes; its largest member is EXCEPTION_DEBUG_INFO, an
EXCEPTION_RECORD (152 bytes: code, flags, a nested record pointer, the
address, the parameter count and up to 15 parameters) and dwFirstChance.

The pointers an event carries into the debuggee (a DLL's image name, the text
of OutputDebugString) are followed only when a ``read(address, size)`` is
given; the decoder itself reads nothing else and keeps the raw bytes.

Sources: Microsoft Learn "DEBUG_EVENT", "EXCEPTION_DEBUG_INFO",
"EXCEPTION_RECORD", "CREATE_PROCESS_DEBUG_INFO", "CREATE_THREAD_DEBUG_INFO",
"EXIT_THREAD_DEBUG_INFO", "EXIT_PROCESS_DEBUG_INFO", "LOAD_DLL_DEBUG_INFO",
"UNLOAD_DLL_DEBUG_INFO", "OUTPUT_DEBUG_STRING_INFO", "RIP_INFO"; the
exception codes of ntstatus.h / winnt.h ("EXCEPTION_RECORD": the meaning of
ExceptionInformation for EXCEPTION_ACCESS_VIOLATION and
EXCEPTION_IN_PAGE_ERROR); for STATUS_GUARD_PAGE_VIOLATION the same two
parameters (access kind, address), as Windows and Wine fill them.
"""
import enum
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import TruncatedDataError
from ..views.html import html_pre

DEBUG_EVENT_SIZE = 176
UNION_OFFSET = 16
EXCEPTION_MAXIMUM_PARAMETERS = 15
MAX_NAME = 1024                 # characters read for an image name (MAX_PATH is 260)
MAX_DEBUG_STRING = 65536        # nDebugStringLength is a WORD: never more

Reader = Callable[[int, int], bytes]


class DebugEventCode(enum.IntEnum):
    """dwDebugEventCode (minwinbase.h)."""

    EXCEPTION_DEBUG_EVENT = 1
    CREATE_THREAD_DEBUG_EVENT = 2
    CREATE_PROCESS_DEBUG_EVENT = 3
    EXIT_THREAD_DEBUG_EVENT = 4
    EXIT_PROCESS_DEBUG_EVENT = 5
    LOAD_DLL_DEBUG_EVENT = 6
    UNLOAD_DLL_DEBUG_EVENT = 7
    OUTPUT_DEBUG_STRING_EVENT = 8
    RIP_EVENT = 9

    @property
    def short(self) -> str:
        return self.name[:-len("_DEBUG_EVENT")] if self.name.endswith("_DEBUG_EVENT") else \
            self.name[:-len("_EVENT")]


# Exception codes a debugger meets (ntstatus.h; winnt.h EXCEPTION_* aliases).
EXCEPTION_NAMES: Dict[int, str] = {
    0x80000001: "STATUS_GUARD_PAGE_VIOLATION",
    0x80000002: "EXCEPTION_DATATYPE_MISALIGNMENT",
    0x80000003: "EXCEPTION_BREAKPOINT",
    0x80000004: "EXCEPTION_SINGLE_STEP",
    0xC0000005: "EXCEPTION_ACCESS_VIOLATION",
    0xC0000006: "EXCEPTION_IN_PAGE_ERROR",
    0xC0000008: "EXCEPTION_INVALID_HANDLE",
    0xC000001D: "EXCEPTION_ILLEGAL_INSTRUCTION",
    0xC0000025: "EXCEPTION_NONCONTINUABLE_EXCEPTION",
    0xC0000026: "EXCEPTION_INVALID_DISPOSITION",
    0xC000008C: "EXCEPTION_ARRAY_BOUNDS_EXCEEDED",
    0xC000008D: "EXCEPTION_FLT_DENORMAL_OPERAND",
    0xC000008E: "EXCEPTION_FLT_DIVIDE_BY_ZERO",
    0xC000008F: "EXCEPTION_FLT_INEXACT_RESULT",
    0xC0000090: "EXCEPTION_FLT_INVALID_OPERATION",
    0xC0000091: "EXCEPTION_FLT_OVERFLOW",
    0xC0000092: "EXCEPTION_FLT_STACK_CHECK",
    0xC0000093: "EXCEPTION_FLT_UNDERFLOW",
    0xC0000094: "EXCEPTION_INT_DIVIDE_BY_ZERO",
    0xC0000095: "EXCEPTION_INT_OVERFLOW",
    0xC0000096: "EXCEPTION_PRIV_INSTRUCTION",
    0xC00000FD: "EXCEPTION_STACK_OVERFLOW",
    0xC0000409: "STATUS_STACK_BUFFER_OVERRUN",
    0x40010005: "DBG_CONTROL_C",
    0x40010008: "DBG_CONTROL_BREAK",
    0x4000001F: "STATUS_WX86_BREAKPOINT",
    0x4000001E: "STATUS_WX86_SINGLE_STEP",
    0x406D1388: "MS_VC_EXCEPTION (thread name)",
    0xE06D7363: "C++ exception (MSVC)",
}
STATUS_GUARD_PAGE_VIOLATION = 0x80000001
EXCEPTION_BREAKPOINT = 0x80000003
EXCEPTION_SINGLE_STEP = 0x80000004
EXCEPTION_ACCESS_VIOLATION = 0xC0000005
EXCEPTION_IN_PAGE_ERROR = 0xC0000006
STATUS_WX86_BREAKPOINT = 0x4000001F
DBG_CONTROL_C = 0x40010005
EXCEPTION_NONCONTINUABLE = 0x1          # ExceptionFlags bit

# ExceptionInformation[0] of an access violation / guard page / in-page error.
ACCESS_KINDS = {0: "read", 1: "write", 8: "execute"}
RIP_TYPES = {0: "only dwError is set", 1: "SLE_ERROR (invalid data, the program will fail)",
             2: "SLE_MINORERROR (may fail)", 3: "SLE_WARNING (will not fail)"}

_SOURCE = "minwinbase.h / Microsoft Learn \"DEBUG_EVENT\""


def exception_name(code: int) -> str:
    return EXCEPTION_NAMES.get(code, "exception %#010x" % code)


def _text(value: Optional[str]) -> str:
    """A string from the debuggee, for text output: quoted, control characters escaped."""
    return "-" if value is None else repr(value)


@dataclass(frozen=True)
class ExceptionInfo:
    """EXCEPTION_DEBUG_INFO: the EXCEPTION_RECORD and dwFirstChance."""

    code: int
    flags: int
    record: int                       # pointer to a nested EXCEPTION_RECORD (0: none)
    address: int
    parameters: Tuple[int, ...]
    first_chance: bool

    @property
    def name(self) -> str:
        return exception_name(self.code)

    @property
    def continuable(self) -> bool:
        return not self.flags & EXCEPTION_NONCONTINUABLE

    @property
    def access(self) -> Optional[str]:
        """read / write / execute, for the exceptions whose first parameter says it."""
        if self.code in (EXCEPTION_ACCESS_VIOLATION, STATUS_GUARD_PAGE_VIOLATION,
                         EXCEPTION_IN_PAGE_ERROR) and len(self.parameters) >= 2:
            return ACCESS_KINDS.get(self.parameters[0], "kind %d" % self.parameters[0])
        return None

    @property
    def data_address(self) -> Optional[int]:
        """The address that was accessed (ExceptionInformation[1]) for those exceptions."""
        return self.parameters[1] if self.access is not None else None

    def to_dict(self) -> Dict[str, Any]:
        return {"code": self.code, "name": self.name, "flags": self.flags,
                "address": self.address, "first_chance": self.first_chance,
                "parameters": list(self.parameters), "access": self.access,
                "data_address": self.data_address}

    def summary(self) -> str:
        text = "%#010x %s at %#x" % (self.code, self.name, self.address)
        if self.access is not None:
            text += ", %s of %#x" % (self.access, self.data_address)
        return text + (", first chance" if self.first_chance else ", second chance")

    def explain_lines(self) -> list:
        lines = [
            "  ExceptionRecord.ExceptionCode    +0x00  %#010x %s" % (self.code, self.name),
            "  ExceptionRecord.ExceptionFlags   +0x04  %#x (%s)" % (
                self.flags, "continuable" if self.continuable else "EXCEPTION_NONCONTINUABLE"),
            "  ExceptionRecord.ExceptionRecord  +0x08  %#x%s" % (
                self.record, " (no nested record)" if not self.record else ""),
            "  ExceptionRecord.ExceptionAddress +0x10  %#x (where it happened)" % self.address,
            "  ExceptionRecord.NumberParameters +0x18  %d" % len(self.parameters),
        ]
        for n, value in enumerate(self.parameters):
            meaning = ""
            if self.access is not None and n == 0:
                meaning = " (%s: 0 read, 1 write, 8 execute (DEP))" % self.access
            elif self.access is not None and n == 1:
                meaning = " (the address accessed)"
            lines.append("  ExceptionInformation[%d]         +%#04x  %#x%s" % (
                n, 0x20 + 8 * n, value, meaning))
        lines.append("  dwFirstChance                    +0x98  %d (%s)" % (
            self.first_chance, "first chance: the program's handlers have not seen it yet"
            if self.first_chance else "second chance: no handler took it, the program dies"))
        return lines


@dataclass(frozen=True)
class CreateProcessInfo:
    """CREATE_PROCESS_DEBUG_INFO."""

    file: int
    process: int
    thread: int
    image_base: int
    debug_info_offset: int
    debug_info_size: int
    thread_local_base: int
    start_address: int
    image_name_pointer: int
    unicode: bool
    image_name: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"image_base": self.image_base, "start_address": self.start_address,
                "thread_local_base": self.thread_local_base, "image_name": self.image_name,
                "handles": {"file": self.file, "process": self.process, "thread": self.thread}}

    def summary(self) -> str:
        return "image %s at %#x, start %#x, TEB %#x" % (
            _text(self.image_name), self.image_base, self.start_address, self.thread_local_base)

    def explain_lines(self) -> list:
        return [
            "  hFile                 +0x00  %#x (the image file; the debugger closes it)" % self.file,
            "  hProcess              +0x08  %#x" % self.process,
            "  hThread               +0x10  %#x (the first thread)" % self.thread,
            "  lpBaseOfImage         +0x18  %#x" % self.image_base,
            "  dwDebugInfoFileOffset +0x20  %#x" % self.debug_info_offset,
            "  nDebugInfoSize        +0x24  %#x" % self.debug_info_size,
            "  lpThreadLocalBase     +0x28  %#x (the thread's TEB)" % self.thread_local_base,
            "  lpStartAddress        +0x30  %#x" % self.start_address,
            "  lpImageName           +0x38  %#x -> pointer -> %s" % (
                self.image_name_pointer, _text(self.image_name)),
            "  fUnicode              +0x40  %d" % self.unicode,
        ]


@dataclass(frozen=True)
class CreateThreadInfo:
    """CREATE_THREAD_DEBUG_INFO."""

    thread: int
    thread_local_base: int
    start_address: int

    def to_dict(self) -> Dict[str, Any]:
        return {"thread_local_base": self.thread_local_base, "start_address": self.start_address,
                "handles": {"thread": self.thread}}

    def summary(self) -> str:
        return "start %#x, TEB %#x" % (self.start_address, self.thread_local_base)

    def explain_lines(self) -> list:
        return ["  hThread           +0x00  %#x" % self.thread,
                "  lpThreadLocalBase +0x08  %#x (the new thread's TEB)" % self.thread_local_base,
                "  lpStartAddress    +0x10  %#x" % self.start_address]


@dataclass(frozen=True)
class ExitInfo:
    """EXIT_THREAD_DEBUG_INFO / EXIT_PROCESS_DEBUG_INFO: dwExitCode."""

    exit_code: int

    def to_dict(self) -> Dict[str, Any]:
        return {"exit_code": self.exit_code}

    def summary(self) -> str:
        return "exit code %d (%#x)" % (self.exit_code, self.exit_code)

    def explain_lines(self) -> list:
        return ["  dwExitCode +0x00  %d" % self.exit_code]


@dataclass(frozen=True)
class LoadDllInfo:
    """LOAD_DLL_DEBUG_INFO."""

    file: int
    base: int
    debug_info_offset: int
    debug_info_size: int
    image_name_pointer: int
    unicode: bool
    image_name: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"base": self.base, "image_name": self.image_name,
                "handles": {"file": self.file}}

    def summary(self) -> str:
        return "%s at %#x" % (_text(self.image_name), self.base)

    def explain_lines(self) -> list:
        return ["  hFile                 +0x00  %#x (the debugger closes it)" % self.file,
                "  lpBaseOfDll           +0x08  %#x" % self.base,
                "  dwDebugInfoFileOffset +0x10  %#x" % self.debug_info_offset,
                "  nDebugInfoSize        +0x14  %#x" % self.debug_info_size,
                "  lpImageName           +0x18  %#x -> pointer -> %s" % (
                    self.image_name_pointer, _text(self.image_name)),
                "  fUnicode              +0x20  %d" % self.unicode]


@dataclass(frozen=True)
class UnloadDllInfo:
    """UNLOAD_DLL_DEBUG_INFO."""

    base: int

    def to_dict(self) -> Dict[str, Any]:
        return {"base": self.base}

    def summary(self) -> str:
        return "base %#x" % self.base

    def explain_lines(self) -> list:
        return ["  lpBaseOfDll +0x00  %#x" % self.base]


@dataclass(frozen=True)
class DebugStringInfo:
    """OUTPUT_DEBUG_STRING_INFO."""

    pointer: int
    unicode: bool
    length: int                       # nDebugStringLength, characters with the NUL
    text: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"pointer": self.pointer, "unicode": self.unicode, "length": self.length,
                "text": self.text}

    def summary(self) -> str:
        return "%s%s" % (_text(self.text), " (Unicode)" if self.unicode else " (ANSI)")

    def explain_lines(self) -> list:
        return ["  lpDebugStringData  +0x00  %#x -> %s" % (self.pointer, _text(self.text)),
                "  fUnicode           +0x08  %d" % self.unicode,
                "  nDebugStringLength +0x0a  %d (characters, the NUL included)" % self.length]


@dataclass(frozen=True)
class RipInfo:
    """RIP_INFO: the system debugging error."""

    error: int
    type: int

    def to_dict(self) -> Dict[str, Any]:
        return {"error": self.error, "type": self.type}

    def summary(self) -> str:
        return "error %d, %s" % (self.error, RIP_TYPES.get(self.type, "type %d" % self.type))

    def explain_lines(self) -> list:
        return ["  dwError +0x00  %d" % self.error,
                "  dwType  +0x04  %d (%s)" % (self.type, RIP_TYPES.get(self.type, "unknown"))]


Info = Any


@dataclass(frozen=True)
class DebugEvent:
    """One DEBUG_EVENT: its code, PID/TID and decoded union member.

    ``note`` is what the debugger made of it ("the loader's initial
    breakpoint", "passed to the program"...), filled by the live layer.
    """

    code: int
    pid: int
    tid: int
    info: Info
    raw: bytes = field(repr=False, default=b"")
    note: str = ""
    kind: str = "debug-event"

    @property
    def name(self) -> str:
        try:
            return DebugEventCode(self.code).name
        except ValueError:
            return "debug event %d" % self.code

    @property
    def short_name(self) -> str:
        try:
            return DebugEventCode(self.code).short
        except ValueError:
            return "EVENT_%d" % self.code

    @classmethod
    def decode(cls, data: bytes, read: Optional[Reader] = None) -> "DebugEvent":
        """Decode the 176 bytes WaitForDebugEvent wrote.

        Args:
            data: the DEBUG_EVENT bytes (x64 layout).
            read: ``read(address, size) -> bytes`` in the debuggee, to follow
                the image-name and debug-string pointers (None: not followed).

        Raises:
            TruncatedDataError: fewer than 176 bytes.
        """
        if len(data) < DEBUG_EVENT_SIZE:
            raise TruncatedDataError("a DEBUG_EVENT is %d bytes, got %d" % (
                DEBUG_EVENT_SIZE, len(data)))
        code, pid, tid = struct.unpack_from("<III", data, 0)
        u = UNION_OFFSET
        info: Info = None
        if code == DebugEventCode.EXCEPTION_DEBUG_EVENT:
            ecode, flags, record, address, count = struct.unpack_from("<IIQQI", data, u)
            count = min(count, EXCEPTION_MAXIMUM_PARAMETERS)
            params = struct.unpack_from("<%dQ" % count, data, u + 32)
            first = struct.unpack_from("<I", data, u + 152)[0]
            info = ExceptionInfo(ecode, flags, record, address, params, bool(first))
        elif code == DebugEventCode.CREATE_THREAD_DEBUG_EVENT:
            info = CreateThreadInfo(*struct.unpack_from("<QQQ", data, u))
        elif code == DebugEventCode.CREATE_PROCESS_DEBUG_EVENT:
            f, p, t, base, off, size, tls, start, name, uni = struct.unpack_from(
                "<QQQQIIQQQH", data, u)
            info = CreateProcessInfo(f, p, t, base, off, size, tls, start, name, bool(uni),
                                     _image_name(read, name, bool(uni)))
        elif code in (DebugEventCode.EXIT_THREAD_DEBUG_EVENT,
                      DebugEventCode.EXIT_PROCESS_DEBUG_EVENT):
            info = ExitInfo(struct.unpack_from("<I", data, u)[0])
        elif code == DebugEventCode.LOAD_DLL_DEBUG_EVENT:
            f, base, off, size, name, uni = struct.unpack_from("<QQIIQH", data, u)
            info = LoadDllInfo(f, base, off, size, name, bool(uni),
                               _image_name(read, name, bool(uni)))
        elif code == DebugEventCode.UNLOAD_DLL_DEBUG_EVENT:
            info = UnloadDllInfo(struct.unpack_from("<Q", data, u)[0])
        elif code == DebugEventCode.OUTPUT_DEBUG_STRING_EVENT:
            pointer, uni, length = struct.unpack_from("<QHH", data, u)
            info = DebugStringInfo(pointer, bool(uni), length,
                                   _debug_string(read, pointer, bool(uni), length))
        elif code == DebugEventCode.RIP_EVENT:
            info = RipInfo(*struct.unpack_from("<II", data, u))
        return cls(code, pid, tid, info, bytes(data[:DEBUG_EVENT_SIZE]))

    def with_note(self, note: str) -> "DebugEvent":
        return DebugEvent(self.code, self.pid, self.tid, self.info, self.raw, note)

    def to_dict(self) -> Dict[str, Any]:
        return {"event": self.kind, "code": self.code, "name": self.name, "pid": self.pid,
                "tid": self.tid, "info": self.info.to_dict() if self.info else None,
                "note": self.note or None}

    def __str__(self) -> str:
        text = "event  pid %-5d tid %-5d %-22s" % (self.pid, self.tid, self.short_name)
        if self.info is not None:
            text += " " + self.info.summary()
        if self.note:
            text += " (%s)" % self.note
        return text

    def explain(self) -> str:
        """The DEBUG_EVENT member by member, with its offsets (x64)."""
        lines = [str(self), "DEBUG_EVENT (x64, %d bytes; %s)" % (DEBUG_EVENT_SIZE, _SOURCE),
                 "  dwDebugEventCode +0x00  %d %s" % (self.code, self.name),
                 "  dwProcessId      +0x04  %d" % self.pid,
                 "  dwThreadId       +0x08  %d" % self.tid]
        if self.info is not None:
            lines.append("  u (+0x10): %s" % type(self.info).__doc__.split(":")[0].split(".")[0])
            lines += ["  " + line for line in self.info.explain_lines()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return html_pre(self.explain())


def _image_name(read: Optional[Reader], pointer: int, unicode: bool) -> Optional[str]:
    """lpImageName: a pointer, in the debuggee, to the name (may be NULL, or
    point to NULL: "the debugger should be prepared to handle this")."""
    if read is None or not pointer:
        return None
    try:
        target = struct.unpack("<Q", read(pointer, 8))[0]
    except (OSError, ValueError, struct.error):
        return None
    if not target:
        return None
    return _read_string(read, target, unicode, MAX_NAME)


def _debug_string(read: Optional[Reader], pointer: int, unicode: bool,
                  length: int) -> Optional[str]:
    if read is None or not pointer:
        return None
    return _read_string(read, pointer, unicode, min(length or MAX_DEBUG_STRING,
                                                    MAX_DEBUG_STRING))


def _read_string(read: Reader, address: int, unicode: bool, limit: int) -> Optional[str]:
    """A NUL-terminated string of at most ``limit`` characters, read in pieces
    so an unreadable page after the string does not lose it."""
    width = 2 if unicode else 1
    data = b""
    chunk = 256
    while len(data) < limit * width:
        try:
            piece = read(address + len(data), chunk * width)
        except (OSError, ValueError):
            if chunk == 1:
                break
            chunk = 1
            continue
        if not piece:
            break
        data += piece
        end = _terminator(data, width)
        if end >= 0:
            data = data[:end]
            break
    data = data[:limit * width]
    return data.decode("utf-16-le" if unicode else "mbcs" if _has_mbcs() else "latin-1",
                       "replace")


def _terminator(data: bytes, width: int) -> int:
    for i in range(0, len(data) - width + 1, width):
        if data[i:i + width] == b"\0" * width:
            return i
    return -1


def _has_mbcs() -> bool:
    import codecs
    try:
        codecs.lookup("mbcs")      # the ANSI code page, on Windows only
        return True
    except LookupError:
        return False
