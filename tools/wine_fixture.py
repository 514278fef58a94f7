"""What the tools that make Wine fixtures share (capture_wine_process.py,
make_minidump_fixture.py): a work folder kept or removed, a private Wine
prefix with a minimal environment, a reader that records what a decode
touched, and those reads rounded to whole 4 KiB pages.

Not a script: the tools import it from their own folder.
"""
import contextlib
import os
import shutil
import subprocess
import tempfile
from typing import Dict, Iterable, Iterator, List, Tuple

PAGE = 0x1000
INSTALL = "apt-get install -y --no-install-recommends wine wine64 gcc-mingw-w64-x86-64-win32"


def missing(*tools: str) -> List[str]:
    """The commands of *tools* that are not on PATH."""
    return [tool for tool in tools if shutil.which(tool) is None]


@contextlib.contextmanager
def work_folder(prefix: str, keep: bool) -> Iterator[str]:
    """A new temporary folder; removed at the end unless *keep* (then printed)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    try:
        yield folder
    finally:
        if keep:
            print("kept", folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def wine_environment(home: str, prefix: str) -> Dict[str, str]:
    """A minimal environment for Wine, nothing of the caller's but where Wine is:
    the programs' environment strings end up in the fixtures."""
    folders = []
    for tool in ("wine", "wineserver"):
        found = shutil.which(tool)
        if found and os.path.dirname(found) not in folders:
            folders.append(os.path.dirname(found))
    path = ":".join(folders + [f for f in ("/usr/bin", "/bin") if f not in folders])
    return {"PATH": path, "HOME": home, "LANG": "C.UTF-8", "WINEPREFIX": prefix,
            "WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml="}


def make_prefix(env: Dict[str, str]) -> None:
    """Initialise the prefix of *env* and wait until its wineserver is idle."""
    subprocess.run(["wine", "wineboot", "--init"], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=300, check=True)
    subprocess.run(["wineserver", "-w"], env=env, timeout=120, check=True)


class RecordingMemory:
    """Forwards to a reader; remembers every non-empty (address, size) read that
    succeeded. ``name``, ``container`` and ``contains`` are the reader's."""

    def __init__(self, memory):
        self.memory = memory
        self.touched: List[Tuple[int, int]] = []

    @property
    def name(self):
        return self.memory.name

    @property
    def container(self):
        return self.memory.container

    def contains(self, address: int, size: int = 1) -> bool:
        return self.memory.contains(address, size)

    def read(self, address: int, size: int) -> bytes:
        data = self.memory.read(address, size)
        if size:
            self.touched.append((address, size))
        return data


def pages_of(ranges: Iterable[Tuple[int, int]]) -> List[int]:
    """The 4 KiB pages (addresses, sorted) that (address, size) ranges touch; an
    empty range counts its address's page (a thread's empty stack descriptor)."""
    pages = set()
    for address, size in ranges:
        pages.update(range(address & ~(PAGE - 1), address + max(size, 1), PAGE))
    return sorted(pages)


def ranges_of(pages: Iterable[int]) -> List[Tuple[int, int]]:
    """Consecutive pages joined: [(start, end_exclusive)]."""
    ranges: List[List[int]] = []
    for page in pages:
        if ranges and ranges[-1][1] == page:
            ranges[-1][1] = page + PAGE
        else:
            ranges.append([page, page + PAGE])
    return [(start, end) for start, end in ranges]
