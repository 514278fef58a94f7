"""Build hooks only: cffi compiles csrc/ into ksinspect._core, and setuptools the
optional per-call glue ksinspect._percall (metadata is in pyproject.toml)."""
import os
import sys

from setuptools import setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc"))
from build_core import percall_extension  # noqa: E402

setup(cffi_modules=["csrc/build_core.py:ffibuilder"], ext_modules=[percall_extension()])
