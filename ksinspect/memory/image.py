"""Physical-memory images: format detection, the run table, reads.

:func:`open_image` mmaps a file (raw, LiME or ELF core; ``.xz`` / ``.gz``
are first decompressed to an anonymous temporary file) and returns a
:class:`PhysicalMemory`: the sorted table of :class:`Run` (physical start,
length, file offset) that the C page walker reads through
``ffi.from_buffer(memory.buffer)``, a bounds-checked :meth:`PhysicalMemory.read`,
and the CPU state when the image carries one.
"""
import bisect
import mmap
import os
import stat
from dataclasses import dataclass
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import DecodeError, ImageFormatError, InvalidAddressError
from . import elf, lime
from ._parsed import ParsedImage, is_kdump, is_minidump
from .cpu import CpuState

FORMATS = ("raw", "lime", "elf-qemu", "elf-kdump", "elf", "minidump", "kdump")
MAX_DECOMPRESSED = 4 << 30
ADDRESS_LIMIT = 1 << 64

# The first bytes of an xz and a gzip stream (an image is decompressed first).
XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b"
# Dump formats that are not physical images this reader understands: say so
# instead of reading them as raw memory.
_UNSUPPORTED = (
    (b"PAGEDUMP", "a Windows 32-bit crash dump"),
    (b"PAGEDU64", "a Windows 64-bit crash dump"),
    (b"QEVM", "a QEMU savevm/migration stream; use dump-guest-memory instead"),
)
_MAX_WARNINGS = 20

RegistersArg = Union[None, str, "os.PathLike[str]", CpuState]


@dataclass(frozen=True)
class Run:
    """One contiguous physical range stored in the file."""

    start: int      # physical address
    length: int     # bytes
    offset: int     # file offset of the first byte

    @property
    def end(self) -> int:
        """The first physical address after the run (exclusive)."""
        return self.start + self.length

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "size": self.length,
                "offset": self.offset}


class PhysicalMemory:
    """Physical memory held in an image file (or in a bytes object).

    Attributes:
        path: the file given to :func:`open_image` (None for in-memory images).
        format: ``"raw"``, ``"lime"``, ``"elf-qemu"``, ``"elf-kdump"`` or ``"elf"``.
        runs: sorted by start, non-overlapping, merged where adjacent both in
            the file and in memory.
        buffer: the whole (decompressed) file as a read-only mmap, or a bytes
            object; ``runs[i].offset`` indexes it.
        cpu: the first CPU's state (QEMU note, completed by ``registers=``).
        cpus: every CPU state found (one per QEMU note).
        size: bytes of physical memory covered by ``runs``.
        absent: (start, length) ranges a PT_LOAD declares (p_memsz) but does
            not store (p_filesz): not in the image, not zero.
        prstatus: registers from NT_PRSTATUS notes, one dict per CPU.
        vmcoreinfo: the kdump VMCOREINFO text, when present.
        warnings: facts about the file worth showing (overlapping ranges,
            registers that disagree with the note...): evidence, not errors.
        description: one line about the container (ELF class, machine, notes).
        compression: ``"xz"`` or ``"gzip"`` when the file was decompressed.
        container: what the format holds besides memory: a
            :class:`~ksinspect.memory.minidump.MinidumpLayout` (streams,
            threads, modules...) for a minidump, else None.
        virtual: the run addresses are a process's virtual addresses (a
            minidump: no page tables; read(va, n) reads the process).
        buffer: None when the pages are not stored flat (a compressed kdump:
            read() decompresses them; the C walker reads through read()).
    """

    def __init__(self, buffer: Any, runs: Sequence[Run], format: str = "raw",
                 path: Optional[str] = None, cpu: Optional[CpuState] = None, *,
                 cpus: Sequence[CpuState] = (), absent: Sequence[Tuple[int, int]] = (),
                 prstatus: Sequence[Dict[str, int]] = (), vmcoreinfo: Optional[str] = None,
                 warnings: Sequence[str] = (), description: str = "",
                 compression: Optional[str] = None, file_size: Optional[int] = None,
                 name: Optional[str] = None, container: Any = None, reader: Any = None,
                 _owned: Sequence[Any] = ()):
        self.path = path
        self.container = container
        self._reader = reader
        self.virtual = format == "minidump"
        self.format = format
        self.buffer = buffer
        self.runs: Tuple[Run, ...] = tuple(runs)
        self.cpu = cpu if cpu is not None else (cpus[0] if cpus else None)
        self.cpus: Tuple[CpuState, ...] = tuple(cpus) if cpus else (
            (cpu,) if cpu is not None else ())
        self.absent = tuple(absent)
        self.prstatus = tuple(prstatus)
        self.vmcoreinfo = vmcoreinfo
        self.warnings = tuple(warnings)
        self.description = description
        self.compression = compression
        self.file_size = len(buffer) if file_size is None else file_size
        self.size = sum(r.length for r in self.runs)
        self._starts = [r.start for r in self.runs]
        self._name = name
        self._owned = list(_owned)
        self._watch_fd: Optional[int] = None     # the mapped file, for check_intact()
        self._closed = False

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes, base: int = 0) -> "PhysicalMemory":
        """A raw image held in memory: ``data`` is physical memory from ``base``."""
        data = bytes(data)
        if base < 0 or base + len(data) > ADDRESS_LIMIT:
            raise DecodeError("from_bytes: base %#x with %d bytes is outside the 64-bit "
                              "physical address space" % (base, len(data)))
        runs = (Run(base, len(data), 0),) if data else ()
        return cls(data, runs, "raw", description="raw image in memory")

    # -- reading ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """How messages name the image: its path, or the name given to
        :func:`open_image_bytes`."""
        if self.path is not None:
            return self.path
        return self._name or "<memory>"

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("%s: the image is closed" % self.name)
        self.check_intact()

    def check_intact(self) -> None:
        """Raise ImageFormatError if the mapped file has shrunk since it was
        opened: touching a mapped page past the new end of file would kill
        the process with SIGBUS. Readers of the mapping (here, and the C
        walks and scans between their batches) call this first; one fstat.

        Raises:
            ImageFormatError: naming the image and both sizes.
        """
        fd = self._watch_fd
        if fd is None:
            return
        try:
            now = os.fstat(fd).st_size
        except OSError:
            return
        if now < self.file_size:
            raise ImageFormatError("%s: the image file shrank from %d to %d bytes while it was "
                                   "being read" % (self.name, self.file_size, now))

    def watched_file(self) -> Optional[Tuple[int, int]]:
        """(descriptor, size when opened) of the mapped file that check_intact
        watches, for C code that checks it itself; None when nothing is watched."""
        return None if self._watch_fd is None else (self._watch_fd, self.file_size)

    def _missing(self, address: int, pa: int, n: int) -> InvalidAddressError:
        why = "not in the image"
        for start, length in self.absent:
            if start <= address < start + length:
                why = "declared by a PT_LOAD (p_memsz) but not stored in the file (p_filesz)"
                break
        span = "" if n <= 1 else " (reading %d bytes at %#x)" % (n, pa)
        kind = "virtual address" if self.virtual else "physical address"
        return InvalidAddressError("%s %#x is %s %s%s" % (
            kind, address, why, self.name, span), address=address)

    def _find(self, pa: int) -> int:
        """Index of the run holding ``pa``, or -1."""
        i = bisect.bisect_right(self._starts, pa) - 1
        if i >= 0 and pa < self.runs[i].end:
            return i
        return -1

    def read(self, pa: int, n: int) -> bytes:
        """``n`` bytes of physical memory at ``pa``.

        Raises:
            InvalidAddressError: some byte is not in the image; ``address`` is
                the first missing one.
            DecodeError: ``n`` is negative.
        """
        self._check_open()
        if n < 0:
            raise DecodeError("read: negative length %d" % n)
        if pa < 0 or pa >= ADDRESS_LIMIT:
            raise InvalidAddressError("physical address %#x is outside the 64-bit address space"
                                      % pa, address=pa)
        if n == 0:
            return b""
        if self._reader is not None:       # pages decompressed on demand; absent ones raise
            return self._reader.read(pa, n, lambda at: self._missing(at, pa, n))
        i = self._find(pa)
        if i < 0:
            raise self._missing(pa, pa, n)
        run = self.runs[i]
        if pa + n <= run.end:       # the common case: one run
            at = run.offset + pa - run.start
            return bytes(self.buffer[at:at + n])
        if not self.contains(pa, n):
            raise self._missing(self._first_missing(pa, n), pa, n)
        parts = []
        address, remaining = pa, n
        while remaining:
            run = self.runs[i]
            take = min(remaining, run.end - address)
            at = run.offset + address - run.start
            parts.append(bytes(self.buffer[at:at + take]))
            address += take
            remaining -= take
            i += 1
        return b"".join(parts)

    def native_source(self):
        """(C read function, context, take_failure) when a C reader serves this
        image (a compressed kdump's page cache): the C walker reads through it
        without calling back into Python; else None."""
        source = getattr(self._reader, "native_source", None)
        return source() if source is not None else None

    def read_available(self, pa: int, n: int) -> Tuple[bytes, Optional[InvalidAddressError]]:
        """The bytes from ``pa`` up to the first one not in the image (at most ``n``),
        and the error for that byte (None when all ``n`` were read); the same
        contract as :meth:`ksinspect.paging.AddressSpace.read_available`."""
        if n <= 0 or self.contains(pa, n):
            return self.read(pa, max(n, 0)), None
        missing = self._first_missing(pa, n) if self._find(pa) >= 0 else pa
        data = self.read(pa, missing - pa) if missing > pa else b""
        return data, self._missing(missing, pa, n)

    def _first_missing(self, pa: int, n: int) -> int:
        i = self._find(pa)
        if i < 0:
            return pa
        address = self.runs[i].end
        while address < pa + n:
            i += 1
            if i >= len(self.runs) or self.runs[i].start != address:
                return address
            address = self.runs[i].end
        return address   # not reached when the range is incomplete

    def contains(self, pa: int, n: int = 1) -> bool:
        """Whether every byte of ``[pa, pa + n)`` is in the image."""
        if n <= 0:
            return n == 0
        if pa < 0 or pa + n > ADDRESS_LIMIT:
            return False
        i = self._find(pa)
        if i < 0:
            return False
        end = pa + n
        address = self.runs[i].end
        while address < end:
            i += 1
            if i >= len(self.runs) or self.runs[i].start != address:
                return False
            address = self.runs[i].end
        return True

    def run_at(self, pa: int) -> Optional[Run]:
        """The run holding physical address ``pa``, or None."""
        i = self._find(pa)
        return self.runs[i] if i >= 0 else None

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap the file (and drop the decompressed copy). Safe to call twice.

        If C code still holds ``ffi.from_buffer(buffer)`` the mapping cannot be
        closed now; it is released when the last reference goes.
        """
        if self._closed:
            return
        self._closed = True
        if isinstance(self.buffer, mmap.mmap):
            try:
                self.buffer.close()
            except BufferError:
                pass
        for obj in self._owned:
            try:
                obj.close()
            except (OSError, BufferError):
                pass
        self._owned = []

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "PhysicalMemory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<PhysicalMemory %s %s: %d runs, %#x bytes%s>" % (
            self.format, self.name, len(self.runs), self.size,
            ", cpu" if self.cpu is not None else "")

    def to_dict(self) -> dict:
        mode, reason = self.cpu.paging_decision() if self.cpu else (None, None)
        return {
            "path": self.path, "format": self.format, "compression": self.compression,
            "description": self.description, "file_size": self.file_size, "size": self.size,
            "runs": [r.to_dict() for r in self.runs],
            "absent": [{"start": s, "end": s + n, "size": n} for s, n in self.absent],
            "cpu": self.cpu.to_dict() if self.cpu else None, "cpu_count": len(self.cpus),
            "paging_mode": mode, "paging_reason": reason,
            "prstatus": [dict(r) for r in self.prstatus],
            "vmcoreinfo": self.vmcoreinfo, "warnings": list(self.warnings),
            **({"kdump": self.container.to_dict()} if self.format == "kdump" else {}),
        }


# -- building a PhysicalMemory from a parsed image ----------------------------------------

def _normalise(raw: Sequence[Tuple[int, int, int]], warnings: List[str]) -> List[Run]:
    """Sort, clip overlaps (the lower-addressed range wins, as in kdump's
    duplicate kernel-text segment) and merge file- and memory-adjacent runs."""
    runs: List[List[int]] = []
    covered = 0
    overlaps = 0
    for start, length, offset in sorted(raw, key=lambda r: (r[0], r[2])):
        if runs and start < covered:
            overlaps += 1
            if overlaps <= _MAX_WARNINGS:
                warnings.append("range %#x-%#x (file offset %#x) overlaps an earlier range up "
                                "to %#x; the earlier one is used" % (
                                    start, start + length, offset, covered))
            if start + length <= covered:
                continue
            cut = covered - start
            start, length, offset = start + cut, length - cut, offset + cut
        last = runs[-1] if runs else None
        if last and last[0] + last[1] == start and last[2] + last[1] == offset:
            last[1] += length
        else:
            runs.append([start, length, offset])
        covered = start + length
    if overlaps > _MAX_WARNINGS:
        warnings.append("... %d overlapping ranges in all" % overlaps)
    return [Run(*r) for r in runs]


def _detect(buf: Any, size: int, name: str) -> ParsedImage:
    head = bytes(buf[:16])
    if head.startswith(elf.ELF_MAGIC):
        return elf.parse(buf, size, name)
    if head.startswith(lime.LIME_SIGNATURE):
        return lime.parse(buf, size, name)
    # kdump and minidump are imported when an image of theirs is opened (what
    # a command's start costs: tens of ms each).
    if is_kdump(head):
        from . import kdump
        return kdump.parse(buf, size, name)
    if is_minidump(head):
        from . import minidump
        dump = minidump.parse(buf, size, name)
        return ParsedImage(format="minidump", description=minidump.describe(dump),
                      runs=minidump.sorted_runs(dump.ranges), warnings=list(dump.warnings),
                      container=dump)
    for magic, what in _UNSUPPORTED:
        if head.startswith(magic):
            raise ImageFormatError("%s: this is %s, not a format ksinspect reads" % (name, what))
    return ParsedImage(format="raw", description="raw physical memory from address 0",
                  runs=[(0, size, 0)])


def _load_registers(registers: RegistersArg) -> Optional[CpuState]:
    if registers is None or isinstance(registers, CpuState):
        return registers
    from .qemu_registers import read_info_registers
    return read_info_registers(os.fspath(registers))


def _build(buf: Any, size: int, name: str, path: Optional[str], registers: RegistersArg,
           compression: Optional[str], owned: Sequence[Any]) -> PhysicalMemory:
    parsed = _detect(buf, size, name)
    warnings = list(parsed.warnings)
    if parsed.reader is not None:     # page-granular runs, already sorted and merged
        runs = [Run(start, length, offset) for start, length, offset in parsed.runs]
        owned = list(owned) + ([buf] if hasattr(buf, "close") else [])
        buf = None
    else:
        runs = _normalise(parsed.runs, warnings)
    cpus = list(parsed.cpus)
    extra = _load_registers(registers)
    if extra is not None:
        if cpus:
            merged, conflicts = cpus[0].completed_by(extra)
            cpus[0] = merged
            warnings += ["the registers file disagrees with the image: " + c for c in conflicts]
        else:
            cpus = [extra]
    memory = PhysicalMemory(buf, runs, parsed.format, path, cpus=cpus, absent=parsed.absent,
                            prstatus=parsed.prstatus, vmcoreinfo=parsed.vmcoreinfo,
                            warnings=warnings, description=parsed.description,
                            compression=compression, file_size=size, name=name,
                            container=parsed.container, reader=parsed.reader, _owned=owned)
    if parsed.reader is not None:
        parsed.reader.check = memory.check_intact     # before each page read from the mapping
    return memory


def open_image_bytes(data: bytes, name: str = "<memory>",
                     registers: RegistersArg = None) -> PhysicalMemory:
    """Detect the format of an image held in memory (what :func:`open_image`
    does for a file, without decompression): handy for tests and for images
    built on the fly.

    Raises:
        ImageFormatError: as :func:`open_image`.
    """
    data = bytes(data)
    if not data:
        raise ImageFormatError("%s: empty image" % name)
    if data.startswith(XZ_MAGIC) or data.startswith(GZIP_MAGIC):
        raise ImageFormatError("%s: compressed data; write it to a .xz / .gz file and use "
                               "open_image" % name)
    memory = _build(data, len(data), name, None, registers, None, ())
    return memory


def _decompress(path: str, kind: str, cap: int) -> IO[bytes]:
    import gzip
    import lzma
    import tempfile
    import zlib
    opener = lzma.open if kind == "xz" else gzip.open
    try:
        out = tempfile.TemporaryFile(prefix="ksinspect-")
    except OSError as exc:
        raise ImageFormatError("%s: cannot create a temporary file to decompress into: %s"
                               % (path, exc.strerror or exc)) from exc
    total = 0
    try:
        with opener(path, "rb") as src:
            while True:
                try:
                    chunk = src.read(1 << 20)
                except (lzma.LZMAError, EOFError, zlib.error, OSError) as exc:
                    raise ImageFormatError("%s: corrupt %s data after %d decompressed bytes: %s"
                                           % (path, kind, total, exc)) from exc
                if not chunk:
                    break
                total += len(chunk)
                if total > cap:
                    raise ImageFormatError(
                        "%s: decompresses to more than %d bytes, the limit (raise it with "
                        "max_decompressed= or --max-decompressed)" % (path, cap))
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise ImageFormatError("%s: cannot write the decompressed copy to %s: %s" % (
                        path, tempfile.gettempdir(), exc.strerror or exc)) from exc
        out.flush()
    except BaseException:
        out.close()
        raise
    return out


def open_image(path: Union[str, "os.PathLike[str]"], registers: RegistersArg = None,
               max_decompressed: int = MAX_DECOMPRESSED) -> PhysicalMemory:
    """Open a physical-memory image: raw, LiME, or an ELF core (QEMU, kdump).

    The format is detected from the content (ELF and LiME magic; anything
    else non-empty is raw memory from address 0). A name ending in ``.xz`` or
    ``.gz`` (or content starting with their magic) is decompressed first to
    an anonymous temporary file in ``$TMPDIR``, at most ``max_decompressed``
    bytes.

    Args:
        path: the image file.
        registers: QEMU ``info registers`` text file, or a :class:`CpuState`,
            that overrides and completes the image's CPU state (QEMU 7.2's
            note has no EFER; ``info registers`` does).
        max_decompressed: refuse compressed files that grow beyond this.

    Raises:
        ImageFormatError: the file cannot be read, is empty, is corrupt, or
            has headers that do not fit in it. The message names the file.
    """
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ImageFormatError("%s: cannot open: %s" % (path, exc.strerror or exc)) from exc
    if not stat.S_ISREG(info.st_mode):
        raise ImageFormatError("%s: not a regular file" % path)
    owned: List[Any] = []
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            compression = None
            lower = path.lower()
            if lower.endswith(".xz") or head.startswith(XZ_MAGIC):
                compression = "xz"
            elif lower.endswith(".gz") or head.startswith(GZIP_MAGIC):
                compression = "gzip"
            if not head:
                raise ImageFormatError("%s: empty file" % path)
            if compression:
                source = _decompress(path, compression, max_decompressed)
                owned.append(source)
            else:
                source = fh
                # Another process may truncate the file under the mapping:
                # keep a descriptor to notice (PhysicalMemory.check_intact).
                watch = os.fdopen(os.dup(fh.fileno()), "rb")
                owned.append(watch)
            size = os.fstat(source.fileno()).st_size
            if size == 0:
                raise ImageFormatError("%s: decompresses to nothing (empty image)" % path)
            buf = mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        for obj in owned:
            obj.close()
        raise ImageFormatError("%s: cannot read: %s" % (path, exc.strerror or exc)) from exc
    except BaseException:
        for obj in owned:
            obj.close()
        raise
    try:
        memory = _build(buf, size, path, path, registers, compression, owned)
        if compression is None:
            memory._watch_fd = owned[-1].fileno()
        return memory
    except BaseException:
        buf.close()
        for obj in owned:
            obj.close()
        raise
