"""ksinspect: inspect x86 / x86-64 kernel structures, exactly and fast.

The decoders live in a C core compiled by cffi (``ksinspect._core``); the
value types are in :mod:`ksinspect.x86`.
"""
from ._version import __version__
from .errors import (BuildMismatchError, DecodeError, EncodeError, KsinspectError,
                     TruncatedDataError, UnsupportedError)

__all__ = ["__version__", "BuildMismatchError", "DecodeError", "EncodeError", "KsinspectError",
           "TruncatedDataError", "UnsupportedError"]
