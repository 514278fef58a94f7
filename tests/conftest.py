"""What the test files share: the data paths, the QEMU guest profiles, the
CLI runner and the check of a value's teaching forms (one copy instead of one
per file).

Test files import the helpers (``from conftest import run_cli, QEMU``: pytest
puts tests/ on sys.path) or take the fixtures by name (``cli``,
``qemu_profile``).
"""
import io
import json
import os
import signal
from contextlib import redirect_stderr
from typing import Tuple

import pytest

from hang_guard import deadline
from html_check import parse_view
from ksinspect.cli import main

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
QEMU = os.path.join(DATA, "qemu")
PROGRAMS = os.path.join(HERE, "programs")     # C sources of the live tests' programs
# The four real guests under tests/data/qemu, one per paging mode (README there).
PROFILES = ("x86_64-4level", "x86_64-5level", "i386-pae", "i386-2level")
PROFILE_MODES = {"x86_64-4level": "4level", "x86_64-5level": "5level", "i386-pae": "pae",
                 "i386-2level": "32"}


def qemu_file(profile: str, name: str = "core-trimmed.elf.xz") -> str:
    """A file of one shipped guest (its trimmed core by default)."""
    return os.path.join(QEMU, profile, name)


def run_cli(*argv, guarded: bool = False) -> Tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``ksinspect ARGV`` run in this process.

    Arguments are turned into strings (paths may be pathlib objects). With
    ``guarded`` the run is bounded by hang_guard's deadline and notes the
    library writes to sys.stderr are captured too (the hostile-input tests).
    """
    out, err = io.StringIO(), io.StringIO()
    args = [str(a) for a in argv]
    if guarded:
        with deadline(), redirect_stderr(err):
            status = main(args, stream=out, errors=err)
    else:
        status = main(args, stream=out, errors=err)
    return status, out.getvalue(), err.getvalue()


def check_teaching_forms(value, explain_newlines: int = 1) -> dict:
    """What every decoded value offers a reader (STYLE.md, "Teaching"): ``str()``
    on one line; ``explain()`` on more lines (at least *explain_newlines* line
    breaks) citing the SDM; ``_repr_html_()`` well-formed, with a picture and
    the ``str()`` text; ``to_dict()`` that survives JSON. Returns the dict."""
    line = str(value)
    assert line and "\n" not in line, line
    text = value.explain()
    assert "SDM" in text and text.count("\n") >= explain_newlines, text
    parse_view(value._repr_html_(), line)
    data = value.to_dict()
    assert json.loads(json.dumps(data)) == data
    return data


def skip_if_ignored(*signums: int) -> None:
    """Skip a test that sends these signals where they are ignored from the start
    (pytest run under nohup, or as a background job of a shell script, ignores
    SIGHUP, or SIGINT and SIGQUIT): every process it starts inherits that, and
    ksinspect keeps an inherited ignore, as it should (test_signals checks it)."""
    ignored = sorted({signal.Signals(s).name for s in signums
                      if signal.getsignal(s) == signal.SIG_IGN})
    if ignored:
        pytest.skip("%s ignored by what started pytest (nohup, or a background job of a "
                    "script): ksinspect and the programs inherit that" % ", ".join(ignored))


@pytest.fixture
def cli():
    """The CLI runner: ``cli("vtop", image, "1000")`` -> (status, stdout, stderr)."""
    return run_cli


@pytest.fixture(params=PROFILES)
def qemu_profile(request) -> str:
    """Each shipped QEMU guest in turn (its profile name)."""
    return request.param
