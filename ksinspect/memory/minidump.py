"""Windows minidumps (``MDMP``, ``.dmp``): the container, its streams, and the
process memory they hold as a flat *virtual* address space.

What MiniDumpWriteDump, procdump, Windows Error Reporting, Task Manager and
``winedbg --minidump`` write. The layout is minidumpapiset.h's (the Windows
SDK; documented on the MINIDUMP_HEADER, MINIDUMP_DIRECTORY and MINIDUMP_*
pages of the Windows docs): a 32-byte header, a directory of
``{StreamType, DataSize, Rva}`` entries, and the streams, each found by its
RVA (a file offset). Decoded here: SystemInfo, ThreadList, ModuleList,
Exception, MiscInfo, MemoryList and Memory64List, the comment streams;
every other stream (Wine writes a private one, 0xFFF0) is kept and listed.

A minidump has no page tables: the memory ranges *are* the process's virtual
address space, so :class:`Minidump` is a :class:`PhysicalMemory` whose run
addresses are virtual addresses (``read(va, n)``). Thread CONTEXTs are kept
as bytes here (:meth:`Minidump.context_bytes`); ``ksinspect.windows`` decodes
them (this layer does not import it).

Every count, RVA and size is checked against the file before use: a hostile
header is one :class:`~ksinspect.errors.MinidumpFormatError` line naming the
file, the stream and the problem, never a crash or a huge allocation.
"""
import datetime
import enum
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import MinidumpFormatError

HEADER = struct.Struct("<4sIIIIIQ")          # MINIDUMP_HEADER, 32 bytes
DIRECTORY = struct.Struct("<III")            # MINIDUMP_DIRECTORY, 12 bytes
THREAD = struct.Struct("<IIIIQQIIII")        # MINIDUMP_THREAD, 48 bytes
MODULE = struct.Struct("<QIIII13IIIIIQQ")    # MINIDUMP_MODULE, 108 bytes
DESCRIPTOR = struct.Struct("<QII")           # MINIDUMP_MEMORY_DESCRIPTOR, 16 bytes
DESCRIPTOR64 = struct.Struct("<QQ")          # MINIDUMP_MEMORY_DESCRIPTOR64, 16 bytes
SYSTEM_INFO = struct.Struct("<HHHBBIIIIIHH24s")   # MINIDUMP_SYSTEM_INFO, 56 bytes
EXCEPTION = struct.Struct("<IIIIQQII15QII")  # MINIDUMP_EXCEPTION_STREAM, 168 bytes
MISC_INFO = struct.Struct("<IIIIII")         # MINIDUMP_MISC_INFO, 24 bytes
MISC_INFO_2 = struct.Struct("<IIIII")        # + processor power, to 44 bytes
MAX_STRING = 1 << 16                         # bytes of a MINIDUMP_STRING read at most
SOURCE = "minidumpapiset.h (Windows SDK): MINIDUMP_HEADER, MINIDUMP_DIRECTORY, MINIDUMP_*"

assert HEADER.size == 32 and THREAD.size == 48 and MODULE.size == 108
assert SYSTEM_INFO.size == 56 and EXCEPTION.size == 168


class StreamType(enum.IntEnum):
    """MINIDUMP_STREAM_TYPE (minidumpapiset.h)."""

    UNUSED = 0
    RESERVED0 = 1
    RESERVED1 = 2
    THREAD_LIST = 3
    MODULE_LIST = 4
    MEMORY_LIST = 5
    EXCEPTION = 6
    SYSTEM_INFO = 7
    THREAD_EX_LIST = 8
    MEMORY64_LIST = 9
    COMMENT_A = 10
    COMMENT_W = 11
    HANDLE_DATA = 12
    FUNCTION_TABLE = 13
    UNLOADED_MODULE_LIST = 14
    MISC_INFO = 15
    MEMORY_INFO_LIST = 16
    THREAD_INFO_LIST = 17
    HANDLE_OPERATION_LIST = 18
    TOKEN = 19
    JAVASCRIPT_DATA = 20
    SYSTEM_MEMORY_INFO = 21
    PROCESS_VM_COUNTERS = 22
    IPT_TRACE = 23
    THREAD_NAMES = 24


def stream_name(kind: int) -> str:
    """``ThreadListStream``... for known types; ``unknown (0x...)`` otherwise."""
    try:
        member = StreamType(kind)
    except ValueError:
        if kind == 0xFFF0:
            return "unknown (0xfff0, Wine's private stream)"
        if 0x8000 <= kind <= 0xFFFE:
            return "unknown (%#x, in the user-defined range)" % kind
        return "unknown (%#x)" % kind
    return "".join(part.capitalize() for part in member.name.split("_")) + "Stream"


ARCHITECTURES = {0: "x86", 5: "arm", 6: "ia64", 9: "x64", 12: "arm64", 0xFFFF: "unknown"}
PRODUCT_TYPES = {1: "workstation", 2: "domain controller", 3: "server"}
PLATFORMS = {0: "Win32s", 1: "Windows 9x", 2: "Windows NT"}


@dataclass(frozen=True)
class Stream:
    """One directory entry."""

    index: int
    type: int
    size: int
    rva: int

    @property
    def name(self) -> str:
        return stream_name(self.type)

    @property
    def known(self) -> bool:
        return self.type in StreamType.__members__.values()

    def to_dict(self) -> dict:
        return {"index": self.index, "type": self.type, "name": self.name, "size": self.size,
                "rva": self.rva}


@dataclass(frozen=True)
class SystemInfo:
    """MINIDUMP_SYSTEM_INFO: the machine and the Windows build the process ran on."""

    processor_architecture: int
    processor_level: int
    processor_revision: int
    number_of_processors: int
    product_type: int
    major_version: int
    minor_version: int
    build_number: int
    platform_id: int
    csd_version: Optional[str]
    suite_mask: int
    vendor_id: Optional[str]

    @property
    def arch(self) -> str:
        return ARCHITECTURES.get(self.processor_architecture,
                                 "unknown (%d)" % self.processor_architecture)

    @property
    def version(self) -> str:
        return "%d.%d.%d" % (self.major_version, self.minor_version, self.build_number)

    def __str__(self) -> str:
        return "Windows %s%s (%s), %s, %d processor%s%s" % (
            self.version, " " + self.csd_version if self.csd_version else "",
            PLATFORMS.get(self.platform_id, "platform %d" % self.platform_id), self.arch,
            self.number_of_processors, "" if self.number_of_processors == 1 else "s",
            ", " + self.vendor_id if self.vendor_id else "")

    def to_dict(self) -> dict:
        return {"processor_architecture": self.processor_architecture, "arch": self.arch,
                "processor_level": self.processor_level,
                "processor_revision": self.processor_revision,
                "number_of_processors": self.number_of_processors,
                "product_type": PRODUCT_TYPES.get(self.product_type, self.product_type),
                "version": self.version, "major_version": self.major_version,
                "minor_version": self.minor_version, "build_number": self.build_number,
                "platform_id": self.platform_id, "csd_version": self.csd_version,
                "suite_mask": self.suite_mask, "vendor_id": self.vendor_id}


@dataclass(frozen=True)
class DumpThread:
    """MINIDUMP_THREAD: a thread, its TEB, its stack range and where its CONTEXT is."""

    thread_id: int
    suspend_count: int
    priority_class: int
    priority: int
    teb: int
    stack_start: int
    stack_size: int
    stack_rva: int
    context_size: int
    context_rva: int

    def to_dict(self) -> dict:
        return {"thread_id": self.thread_id, "suspend_count": self.suspend_count,
                "priority_class": self.priority_class, "priority": self.priority,
                "teb": self.teb, "stack_start": self.stack_start, "stack_size": self.stack_size,
                "context_size": self.context_size, "context_rva": self.context_rva}


@dataclass(frozen=True)
class DumpModule:
    """MINIDUMP_MODULE: a loaded image as the dump writer's module snapshot saw it."""

    base: int
    size: int
    checksum: int
    timestamp: int
    path: str
    file_version: Optional[str]
    pdb: Optional[str]

    @property
    def name(self) -> str:
        return self.path.replace("/", "\\").rsplit("\\", 1)[-1]

    @property
    def end(self) -> int:
        return self.base + self.size

    def to_dict(self) -> dict:
        return {"base": self.base, "size": self.size, "checksum": self.checksum,
                "timestamp": self.timestamp, "time": _iso(self.timestamp), "name": self.name,
                "path": self.path, "file_version": self.file_version, "pdb": self.pdb}


@dataclass(frozen=True)
class DumpException:
    """MINIDUMP_EXCEPTION_STREAM: the exception the dump was written for."""

    thread_id: int
    code: int
    flags: int
    record: int
    address: int
    parameters: Tuple[int, ...]
    context_size: int
    context_rva: int

    def to_dict(self) -> dict:
        return {"thread_id": self.thread_id, "code": self.code, "flags": self.flags,
                "record": self.record, "address": self.address,
                "parameters": list(self.parameters)}

    def __str__(self) -> str:
        return "exception %#010x at %#x in thread %d%s" % (
            self.code, self.address, self.thread_id,
            " (noncontinuable)" if self.flags & 1 else "")


@dataclass(frozen=True)
class MiscInfo:
    """MINIDUMP_MISC_INFO(_N): process id and times, when Flags1 says they are valid."""

    size: int
    flags1: int
    process_id: Optional[int]
    create_time: Optional[int]
    user_time: Optional[int]
    kernel_time: Optional[int]
    processor_max_mhz: Optional[int] = None
    processor_current_mhz: Optional[int] = None

    def to_dict(self) -> dict:
        return {"size": self.size, "flags1": self.flags1, "process_id": self.process_id,
                "create_time": _iso(self.create_time) if self.create_time else None,
                "user_time": self.user_time, "kernel_time": self.kernel_time,
                "processor_max_mhz": self.processor_max_mhz,
                "processor_current_mhz": self.processor_current_mhz}


@dataclass(frozen=True)
class MemoryRange:
    """One range of process memory stored in the dump."""

    start: int
    size: int
    rva: int
    stream: str       # "Memory64List" or "MemoryList"

    @property
    def end(self) -> int:
        return self.start + self.size

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "size": self.size, "rva": self.rva,
                "stream": self.stream}


@dataclass
class MinidumpLayout:
    """Everything :func:`parse` found; ``open_image`` turns it into a :class:`Minidump`."""

    version: int
    implementation: int
    timestamp: int
    flags: int
    streams: List[Stream]
    system_info: Optional[SystemInfo]
    threads: List[DumpThread]
    modules: List[DumpModule]
    exception: Optional[DumpException]
    misc_info: Optional[MiscInfo]
    ranges: List[MemoryRange]
    comments: List[str]
    warnings: List[str]


def _iso(timestamp: Optional[int]) -> Optional[str]:
    if not timestamp:
        return None
    try:
        return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


class _Reader:
    """Bounds-checked reads from the dump; every failure names the file and the stream."""

    def __init__(self, buf: Any, size: int, name: str):
        self.buf, self.size, self.name = buf, size, name

    def fail(self, text: str) -> MinidumpFormatError:
        return MinidumpFormatError("%s: %s" % (self.name, text))

    def bytes(self, rva: int, size: int, what: str) -> bytes:
        if rva + size > self.size:
            raise self.fail("%s at RVA %#x, %d bytes, runs past the end of the file (%d bytes)"
                            % (what, rva, size, self.size))
        return bytes(self.buf[rva:rva + size])

    def unpack(self, fmt: struct.Struct, rva: int, what: str) -> tuple:
        return fmt.unpack(self.bytes(rva, fmt.size, what))

    def string(self, rva: int, what: str) -> str:
        """A MINIDUMP_STRING: a byte length, then UTF-16LE."""
        (length,) = self.unpack(struct.Struct("<I"), rva, what)
        if length > MAX_STRING or length % 2:
            raise self.fail("%s at RVA %#x: string length %d is %s" % (
                what, rva, length, "odd" if length % 2 else "over %d bytes" % MAX_STRING))
        return self.bytes(rva + 4, length, what).decode("utf-16-le", "replace")


def _records(r: _Reader, stream: Stream, count: int, header: int, fmt: struct.Struct,
             what: str) -> int:
    """Check that ``count`` records of ``fmt`` fit in the stream; return the first's RVA."""
    need = header + count * fmt.size
    if need > stream.size:
        raise r.fail("%s (stream %d) says %d entries (%d bytes) but the stream holds %d bytes"
                     % (what, stream.index, count, need, stream.size))
    return stream.rva + header


def _system_info(r: _Reader, s: Stream) -> SystemInfo:
    if s.size < SYSTEM_INFO.size:
        raise r.fail("SystemInfoStream (stream %d) is %d bytes, shorter than "
                     "MINIDUMP_SYSTEM_INFO (56)" % (s.index, s.size))
    (arch, level, revision, cpus, product, major, minor, build, platform, csd_rva, suite, _r,
     cpu) = r.unpack(SYSTEM_INFO, s.rva, "SystemInfoStream")
    csd = r.string(csd_rva, "SystemInfo CSDVersion") if csd_rva else None
    vendor = None
    if arch == 0 or arch == 9:        # the x86 CPU_INFORMATION arm of the union: CPUID 0 vendor
        raw = cpu[:12]
        if raw.strip(b"\0") and all(32 <= b < 127 for b in raw):
            vendor = raw.decode("ascii")
    return SystemInfo(arch, level, revision, cpus, product, major, minor, build, platform, csd,
                      suite, vendor)


def _threads(r: _Reader, s: Stream) -> List[DumpThread]:
    (count,) = struct.unpack("<I", r.bytes(s.rva, 4, "ThreadListStream"))
    at = _records(r, s, count, 4, THREAD, "ThreadListStream")
    threads = []
    for i in range(count):
        (tid, suspend, pclass, prio, teb, stack, stack_size, stack_rva, ctx_size,
         ctx_rva) = r.unpack(THREAD, at + i * THREAD.size, "thread %d" % i)
        if ctx_rva + ctx_size > r.size:
            raise r.fail("thread %d (TID %d): CONTEXT at RVA %#x, %d bytes, runs past the end "
                         "of the file (%d bytes)" % (i, tid, ctx_rva, ctx_size, r.size))
        threads.append(DumpThread(tid, suspend, pclass, prio, teb, stack, stack_size, stack_rva,
                                  ctx_size, ctx_rva))
    return threads


def _version_text(ms: int, ls: int) -> str:
    return "%d.%d.%d.%d" % (ms >> 16, ms & 0xFFFF, ls >> 16, ls & 0xFFFF)


def _pdb(r: _Reader, size: int, rva: int) -> Optional[str]:
    """The PDB file name of an RSDS CodeView record (CV_INFO_PDB70), when present."""
    if size < 25 or size > 4096 or rva + size > r.size:
        return None
    data = r.bytes(rva, size, "CodeView record")
    if data[:4] != b"RSDS":
        return None
    return data[24:].split(b"\0", 1)[0].decode("utf-8", "replace")


def _modules(r: _Reader, s: Stream) -> List[DumpModule]:
    (count,) = struct.unpack("<I", r.bytes(s.rva, 4, "ModuleListStream"))
    at = _records(r, s, count, 4, MODULE, "ModuleListStream")
    modules = []
    for i in range(count):
        f = r.unpack(MODULE, at + i * MODULE.size, "module %d" % i)
        base, size, checksum, stamp, name_rva = f[:5]
        info = f[5:18]       # VS_FIXEDFILEINFO: signature 0xFEEF04BD, then the versions
        cv_size, cv_rva = f[18], f[19]
        version = _version_text(info[2], info[3]) if info[0] == 0xFEEF04BD else None
        path = r.string(name_rva, "module %d name" % i)
        modules.append(DumpModule(base, size, checksum, stamp, path, version,
                                  _pdb(r, cv_size, cv_rva)))
    return modules


def _exception(r: _Reader, s: Stream) -> DumpException:
    if s.size < EXCEPTION.size:
        raise r.fail("ExceptionStream (stream %d) is %d bytes, shorter than "
                     "MINIDUMP_EXCEPTION_STREAM (168)" % (s.index, s.size))
    f = r.unpack(EXCEPTION, s.rva, "ExceptionStream")
    tid, code, flags, record, address, nparams = f[0], f[2], f[3], f[4], f[5], f[6]
    params = f[8:8 + min(nparams, 15)]
    ctx_size, ctx_rva = f[23], f[24]
    if ctx_rva + ctx_size > r.size:
        raise r.fail("ExceptionStream: CONTEXT at RVA %#x, %d bytes, runs past the end of the "
                     "file (%d bytes)" % (ctx_rva, ctx_size, r.size))
    return DumpException(tid, code, flags, record, address, tuple(params), ctx_size, ctx_rva)


def _misc_info(r: _Reader, s: Stream) -> MiscInfo:
    if s.size < MISC_INFO.size:
        raise r.fail("MiscInfoStream (stream %d) is %d bytes, shorter than MINIDUMP_MISC_INFO "
                     "(24)" % (s.index, s.size))
    size, flags, pid, create, user, kernel = r.unpack(MISC_INFO, s.rva, "MiscInfoStream")
    max_mhz = cur_mhz = None
    if flags & 4 and s.size >= 44:     # MINIDUMP_MISC1_PROCESSOR_POWER_INFO
        max_mhz, cur_mhz = r.unpack(MISC_INFO_2, s.rva + 24, "MiscInfoStream")[:2]
    return MiscInfo(size, flags, pid if flags & 1 else None,
                    create if flags & 2 else None, user if flags & 2 else None,
                    kernel if flags & 2 else None, max_mhz, cur_mhz)


def _memory_list(r: _Reader, s: Stream) -> List[MemoryRange]:
    (count,) = struct.unpack("<I", r.bytes(s.rva, 4, "MemoryListStream"))
    at = _records(r, s, count, 4, DESCRIPTOR, "MemoryListStream")
    ranges = []
    for i in range(count):
        start, size, rva = r.unpack(DESCRIPTOR, at + i * DESCRIPTOR.size, "memory range")
        ranges.append(MemoryRange(start, size, rva, "MemoryList"))
    return ranges


def _memory64_list(r: _Reader, s: Stream) -> List[MemoryRange]:
    count, base = struct.unpack("<QQ", r.bytes(s.rva, 16, "Memory64ListStream"))
    at = _records(r, s, count, 16, DESCRIPTOR64, "Memory64ListStream")
    ranges, rva = [], base
    for i in range(count):
        start, size = r.unpack(DESCRIPTOR64, at + i * DESCRIPTOR64.size, "memory range")
        ranges.append(MemoryRange(start, size, rva, "Memory64List"))
        rva += size
    return ranges


def _check_ranges(r: _Reader, ranges: List[MemoryRange]) -> List[MemoryRange]:
    for m in ranges:
        if m.start + m.size > 1 << 64:
            raise r.fail("%s range %#x + %#x runs past the 64-bit address space"
                         % (m.stream, m.start, m.size))
        if m.rva + m.size > r.size:
            raise r.fail("%s range %#x-%#x: its data at RVA %#x, %d bytes, runs past the end of "
                         "the file (%d bytes)" % (m.stream, m.start, m.end, m.rva, m.size, r.size))
    ordered = sorted((m for m in ranges if m.size), key=lambda m: m.start)
    for a, b in zip(ordered, ordered[1:]):
        if b.start < a.end:
            raise r.fail("memory ranges %#x-%#x (%s) and %#x-%#x (%s) overlap"
                         % (a.start, a.end, a.stream, b.start, b.end, b.stream))
    return ordered


_DECODERS = {
    StreamType.SYSTEM_INFO: "system_info", StreamType.THREAD_LIST: "threads",
    StreamType.MODULE_LIST: "modules", StreamType.EXCEPTION: "exception",
    StreamType.MISC_INFO: "misc_info",
}


def parse(buf: Any, size: int, name: str) -> MinidumpLayout:
    """Parse the header, the directory and the streams of a minidump.

    Raises:
        MinidumpFormatError: a header, directory entry or stream does not fit
            in the file or contradicts itself (one line naming the file).
    """
    r = _Reader(buf, size, name)
    if size < HEADER.size:
        raise r.fail("minidump header truncated: %d of 32 bytes" % size)
    sig, version, count, dir_rva, _checksum, stamp, flags = HEADER.unpack(bytes(buf[:32]))
    if dir_rva + count * DIRECTORY.size > size:
        raise r.fail("the stream directory (%d entries at RVA %#x) runs past the end of the "
                     "file (%d bytes)" % (count, dir_rva, size))
    streams = []
    for i in range(count):
        kind, data_size, rva = DIRECTORY.unpack(bytes(buf[dir_rva + 12 * i:dir_rva + 12 * i + 12]))
        s = Stream(i, kind, data_size, rva)
        if kind != StreamType.UNUSED and rva + data_size > size:
            raise r.fail("stream %d (%s) at RVA %#x, %d bytes, runs past the end of the file "
                         "(%d bytes)" % (i, s.name, rva, data_size, size))
        streams.append(s)
    found: Dict[str, Any] = {"system_info": None, "threads": [], "modules": [],
                             "exception": None, "misc_info": None}
    ranges: List[MemoryRange] = []
    comments: List[str] = []
    warnings: List[str] = []
    seen = set()
    for s in streams:
        if s.type in _DECODERS or s.type in (StreamType.MEMORY_LIST, StreamType.MEMORY64_LIST):
            if s.type in seen:
                warnings.append("a second %s (stream %d) is ignored" % (s.name, s.index))
                continue
            seen.add(s.type)
        if s.type == StreamType.SYSTEM_INFO:
            found["system_info"] = _system_info(r, s)
        elif s.type == StreamType.THREAD_LIST:
            found["threads"] = _threads(r, s)
        elif s.type == StreamType.MODULE_LIST:
            found["modules"] = _modules(r, s)
        elif s.type == StreamType.EXCEPTION:
            found["exception"] = _exception(r, s)
        elif s.type == StreamType.MISC_INFO:
            found["misc_info"] = _misc_info(r, s)
        elif s.type == StreamType.MEMORY_LIST:
            ranges += _memory_list(r, s)
        elif s.type == StreamType.MEMORY64_LIST:
            ranges += _memory64_list(r, s)
        elif s.type == StreamType.COMMENT_A:
            comments.append(r.bytes(s.rva, min(s.size, MAX_STRING), "CommentStreamA")
                            .split(b"\0", 1)[0].decode("latin-1"))
        elif s.type == StreamType.COMMENT_W:
            comments.append(r.bytes(s.rva, min(s.size, MAX_STRING) & ~1, "CommentStreamW")
                            .decode("utf-16-le", "replace").split("\0", 1)[0])
    return MinidumpLayout(version & 0xFFFF, version >> 16, stamp, flags, streams,
                          found["system_info"], found["threads"], found["modules"],
                          found["exception"], found["misc_info"], _check_ranges(r, ranges),
                          comments, warnings)


def describe(layout: MinidumpLayout) -> str:
    si = layout.system_info
    return "Windows minidump (version %#x), %d streams, %d threads, %d modules, %d memory " \
           "ranges%s" % (layout.version, len(layout.streams), len(layout.threads),
                         len(layout.modules), len(layout.ranges),
                         "; " + str(si) if si is not None else "")


def sorted_runs(ranges: Sequence[MemoryRange]) -> List[Tuple[int, int, int]]:
    """(start, length, file offset) for PhysicalMemory's run table."""
    return [(m.start, m.size, m.rva) for m in ranges if m.size]


def stored_bytes(memory: Any, rva: int, size: int) -> bytes:
    """Bytes of the dump file itself (a CONTEXT, a stream): ``memory.buffer[rva:rva+size]``,
    already checked against the file by :func:`parse`."""
    return bytes(memory.buffer[rva:rva + size])
