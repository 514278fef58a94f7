"""Build hook only: cffi compiles csrc/ into ksinspect._core (metadata is in pyproject.toml)."""
from setuptools import setup

setup(cffi_modules=["csrc/build_core.py:ffibuilder"])
