"""Exceptions raised by ksinspect.

Every error is a :class:`KsinspectError`; the specific ones also subclass
the builtin they resemble, so ``except ValueError`` works as expected.
"""
from typing import Optional, Sequence


class KsinspectError(Exception):
    """Base of every error ksinspect raises on purpose."""


class DecodeError(KsinspectError, ValueError):
    """A value or argument cannot be decoded (bad width, unknown mode...)."""


class TruncatedDataError(DecodeError):
    """The data is shorter than the structure it must hold."""


class EncodeError(KsinspectError, ValueError):
    """A value cannot be encoded because it breaks an architectural rule.

    Attributes:
        index: the position of the offending request, when there is one.
    """

    def __init__(self, message: str, index: Optional[int] = None):
        super().__init__(message)
        self.index = index


class UnsupportedError(KsinspectError, NotImplementedError):
    """The feature does not exist on this machine or build."""


class BuildMismatchError(KsinspectError, ImportError):
    """The compiled core does not belong to this version of the package."""


class LiveOSError(KsinspectError, OSError):
    """A system call made to inspect the live machine failed; ``errno`` says why."""

    def __str__(self) -> str:
        # The sentence alone: "[Errno 3] ..." says nothing more to a user.
        return self.strerror or super().__str__()


class ImageFormatError(KsinspectError, ValueError):
    """A memory image is not in a format ksinspect reads, or its headers are broken."""


class MinidumpFormatError(ImageFormatError):
    """A Windows minidump's header, directory or a stream is broken or does not fit the file."""


class KdumpFormatError(ImageFormatError):
    """A compressed kdump (diskdump / flattened makedumpfile) is broken or does not fit the file."""


class MissingDecompressorError(KdumpFormatError):
    """The dump's pages use a compression whose decompressor is not installed here.

    Attributes:
        compression: ``"snappy"``, ``"zstd"``...; ``package``: what to install.
    """

    def __init__(self, message: str, compression: str = "", package: str = ""):
        super().__init__(message)
        self.compression = compression
        self.package = package


class InvalidAddressError(KsinspectError, LookupError):
    """An address cannot be translated or read.

    Attributes:
        address: the virtual or physical address asked for.
        level: the paging level where translation stopped (5..1), or None
            for a physical address that is simply not in the image.
        entry: the paging-structure entry found at that level, if any.
    """

    def __init__(self, message: str, address: int, level: Optional[int] = None,
                 entry: Optional[int] = None):
        super().__init__(message)
        self.address = address
        self.level = level
        self.entry = entry


class UnknownLayoutError(KsinspectError, LookupError):
    """No structure layout matches the Windows build asked for.

    Attributes:
        requested: the build name, version or path that was asked for.
        candidates: the closest layouts that exist (names), best first.
    """

    def __init__(self, message: str, requested: str, candidates: Sequence[str] = ()):
        super().__init__(message)
        self.requested = requested
        self.candidates = list(candidates)


class UnknownStructError(KsinspectError, LookupError):
    """A layout has no structure of that name.

    Attributes:
        struct: the structure name asked for.
        layout: the name of the layout searched.
    """

    def __init__(self, message: str, struct: str, layout: str):
        super().__init__(message)
        self.struct = struct
        self.layout = layout


class UnknownFieldError(KsinspectError, LookupError):
    """A structure of a layout has no field of that name.

    Attributes:
        struct: the structure searched.
        field: the field name asked for.
        layout: the name of the layout.
    """

    def __init__(self, message: str, struct: str, field: str, layout: str):
        super().__init__(message)
        self.struct = struct
        self.field = field
        self.layout = layout


class NoTebError(KsinspectError, LookupError):
    """A live process shows no Windows TEB: it is not a Windows program (under Wine).

    Attributes:
        pid: the process asked about.
    """

    def __init__(self, message: str, pid: int):
        super().__init__(message)
        self.pid = pid


class KernelNotFoundError(KsinspectError, LookupError):
    """No Windows kernel image was found in memory, or the image named is not one."""


class PtraceError(LiveOSError):
    """A ptrace request on a tracee failed.

    Attributes:
        request: the ptrace request name (``"PTRACE_POKEUSER"``...).
        pid: the thread it was made on.
    """

    def __init__(self, message: str, errno: int = 0, request: str = "", pid: int = 0):
        super().__init__(errno, message)
        self.request = request
        self.pid = pid

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class TracePermissionError(PtraceError, PermissionError):
    """The kernel refused to let this process trace the one asked for."""


class NoSuchProcessError(PtraceError, ProcessLookupError):
    """The process (or thread) to trace does not exist, or has exited."""


class OutputError(KsinspectError, OSError):
    """An output file (such as an SVG picture) cannot be written."""


class TableNotFoundError(KsinspectError, LookupError):
    """A descriptor table cannot be located in an image: no CPU state to give
    GDTR / IDTR, or LDTR holding the null selector or selecting something that
    is not an LDT descriptor."""


class NoCpuStateError(DecodeError):
    """The image carries no CPU state, and the caller did not give what it
    would have supplied. ``missing`` names those values, as the keywords of
    ``AddressSpace`` (``"cr3"``, ``"mode"``), so a front end can name its
    own options for them without reading the message."""

    def __init__(self, message: str, missing=()):
        super().__init__(message)
        self.missing = tuple(missing)


class WalkLimitError(KsinspectError, RuntimeError):
    """An enumeration reached a cap before it finished: ``max_entries``
    entries read, or more ranges / aliases than ``max_ranges`` /
    ``max_aliases`` (the message says which).

    Page tables that alias each other (or a hostile image) can describe an
    enormous number of mappings. Attributes: ``resume_at`` (the linear address
    the walk had reached) and ``entries_read``.
    """

    def __init__(self, message: str, resume_at: int, entries_read: int):
        super().__init__(message)
        self.resume_at = resume_at
        self.entries_read = entries_read
