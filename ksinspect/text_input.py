"""One bounded reader for the small text inputs: ``--symbols``, ``--layout``,
``--registers``, ``--from-file``.

These files are given by the user and may be anything: a FIFO (opening it
for reading blocks until a writer comes), ``/dev/zero`` (endless), a
decompression bomb. So:

* the file is opened with ``O_NONBLOCK`` (a FIFO then opens at once) and
  must be a **regular file**; FIFOs, devices, sockets and directories are
  refused with one line (``/proc`` files such as ``/proc/kallsyms`` are
  regular and are read);
* ``.xz`` / ``.gz`` content (by magic bytes) is decompressed as a stream;
* at most a **cap** of bytes (after decompression) is read, checked while
  reading, never after: a bigger file is refused, naming the cap.

The caps, one per kind of input, are in :data:`CAPS`.
"""
import gzip
import lzma
import os
import stat
import zlib
from typing import Callable, Dict

__all__ = ["CAPS", "read_text_input", "cap_text"]

MiB = 1 << 20
#: The largest text input of each kind, in bytes (after decompression).
#: A kallsyms of a distribution kernel with modules is 10-20 MiB; a Volatility
#: ISF of a Windows kernel 20-70 MiB; `info registers -a` a few KiB per CPU.
NONBLOCK = getattr(os, "O_NONBLOCK", 0)

CAPS: Dict[str, int] = {
    "symbols": 64 * MiB,
    "layout": 128 * MiB,
    "registers": 4 * MiB,
    "addresses": 64 * MiB,
}

_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 * MiB

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a directory"))


def cap_text(kind: str) -> str:
    """The cap of *kind* for --help and messages (``128 MiB``)."""
    return "%d MiB" % (CAPS[kind] // MiB)


def _kind_of(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def read_text_input(path: str, kind: str, error: Callable[[str], Exception],
                    what: str = "file", limit: int = 0) -> bytes:
    """The bytes of a text input, decompressed, at most the cap of *kind*.

    Args:
        path: the file given by the user.
        kind: a key of :data:`CAPS`.
        error: makes the exception to raise from a message (the caller's
            own class: SymbolError, UnknownLayoutError, ImageFormatError...).
        what: what the file is, for messages ("symbol file").
        limit: a cap other than the kind's (0: the kind's).

    Raises:
        whatever *error* makes: the file cannot be opened or read, is not a
        regular file, is corrupt compressed data, or is bigger than the cap.
    """
    cap = limit or CAPS[kind]
    path = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (POSIX only);
        # O_BINARY: on Windows an fd is opened in text mode otherwise.
        fd = os.open(path, os.O_RDONLY | NONBLOCK | getattr(os, "O_CLOEXEC", 0) |
                     getattr(os, "O_BINARY", 0))
    except OSError as exc:
        if isinstance(exc, PermissionError) and os.path.isdir(path):
            # Windows refuses to open a directory (EACCES) where POSIX opens it.
            raise error("%s: the %s is a directory; it must be a regular file"
                        % (path, what)) from None
        raise error("%s: cannot read the %s: %s" % (path, what, exc.strerror or exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error("%s: the %s is %s; it must be a regular file" % (
                path, what, _kind_of(info.st_mode)))
        if NONBLOCK:
            os.set_blocking(fd, True)
        if info.st_size > cap:               # no need to read it to know (/proc says 0)
            raise error("%s: the %s is bigger than %d MiB (%d bytes), the limit for a %s" % (
                path, what, cap // MiB, info.st_size, what))
        with os.fdopen(fd, "rb", closefd=False) as raw:
            head = raw.read(6)
            raw.seek(0)
            if head.startswith(_XZ_MAGIC):
                stream, label = lzma.open(raw, "rb"), "xz"
            elif head.startswith(_GZIP_MAGIC):
                stream, label = gzip.open(raw, "rb"), "gzip"
            else:
                stream, label = raw, None
            chunks = []
            total = 0
            while True:
                try:
                    chunk = stream.read(min(_CHUNK, cap + 1 - total))
                except (lzma.LZMAError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                    raise error("%s: corrupt %s data in the %s after %d bytes: %s" % (
                        path, label, what, total, exc)) from None
                if not chunk:
                    break
                total += len(chunk)
                if total > cap:
                    raise error("%s: the %s is bigger than %d MiB%s, the limit for a %s" % (
                        path, what, cap // MiB, " once decompressed" if label else "", what))
                chunks.append(chunk)
            return b"".join(chunks)
    except OSError as exc:
        raise error("%s: cannot read the %s: %s" % (path, what, exc.strerror or exc)) from None
    finally:
        os.close(fd)
