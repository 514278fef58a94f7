"""Exceptions raised by ksinspect.

Every error is a :class:`KsinspectError`; the specific ones also subclass
the builtin they resemble, so ``except ValueError`` works as expected.
"""
from typing import Optional


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


class ImageFormatError(KsinspectError, ValueError):
    """A memory image is not in a format ksinspect reads, or its headers are broken."""


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


class TableNotFoundError(KsinspectError, LookupError):
    """A descriptor table cannot be located in an image: no CPU state to give
    GDTR / IDTR, or LDTR holding the null selector or selecting something that
    is not an LDT descriptor."""


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
