"""Work and memory stay bounded whatever an image says.

* Walks: a translation reads at most one entry per level; an enumeration
  is capped by ``max_entries`` (entries read), and what it gathers by
  ``max_ranges`` / ``max_aliases``; the CLI's ``maps`` by ``--max-ranges``.
  Hitting a cap raises WalkLimitError, which says which cap and where the
  walk stopped (the CLI prints what it found, then that line, exit 1).
* Memory: images are mmapped, never read whole. An 8 GiB sparse raw image
  is opened, described, walked and read in a process whose peak RSS is
  measured (VmHWM) and must stay far below the image size.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from builders.image_builder import build_elf_core, qemu_cpu_state, qword_page
from ksinspect import errors, paging
from ksinspect.memory import open_image
from ksinspect.paging import AddressSpace
from conftest import run_cli  # noqa: E402  (tests/conftest.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P_RW_US = 0x7


cli = run_cli


def test_walk_limit_error_lives_in_errors_and_is_still_importable_from_paging():
    assert paging.WalkLimitError is errors.WalkLimitError
    assert issubclass(errors.WalkLimitError, errors.KsinspectError)
    exc = errors.WalkLimitError("capped", resume_at=0x1000, entries_read=5)
    assert (exc.resume_at, exc.entries_read, str(exc)) == (0x1000, 5, "capped")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A PML4 whose 512 entries all name the PML4 itself: 2^36 linear pages,
    every one mapping physical 0x1000 (SDM §4.5: nothing forbids it)."""
    core = build_elf_core([(0x1000, qword_page({i: 0x1000 | P_RW_US for i in range(512)}))],
                          qemu_state=qemu_cpu_state(cr=[0x80050033, 0, 0, 0x1000, 0x6F0]))
    path = tmp_path_factory.mktemp("bounds") / "mirror.elf"
    path.write_bytes(core)
    return str(path)


def test_entries_cap_stops_the_walk_and_says_where(mirror):
    with open_image(mirror) as memory:
        space = AddressSpace(memory)
        with pytest.raises(errors.WalkLimitError) as info:
            list(space.mappings(merge="rights", max_entries=50_000))
    assert info.value.entries_read >= 50_000 and "max_entries" in str(info.value)


def test_range_cap_bounds_what_mapping_table_holds(mirror):
    with open_image(mirror) as memory:
        space = AddressSpace(memory)
        with pytest.raises(errors.WalkLimitError) as info:
            space.mapping_table(max_ranges=5000, chunk=1024)
    assert "max_ranges" in str(info.value) and info.value.resume_at > 0


def test_alias_cap_bounds_physical_to_virtual(mirror):
    with open_image(mirror) as memory:
        space = AddressSpace(memory)
        with pytest.raises(errors.WalkLimitError) as info:
            space.physical_to_virtual(0x1000, max_aliases=3000)
        assert "max_aliases" in str(info.value)
        # Any four indices reach the PML4 page again (SDM §4.5: bits 47:12 index
        # the four levels), so every such address maps physical 0x1000.
        for indices in ((0, 0, 0, 0), (5, 7, 9, 11), (511, 1, 255, 3)):
            va = sum(index << shift for index, shift in zip(indices, (39, 30, 21, 12)))
            va |= 0xFFFF000000000000 if indices[0] >= 256 else 0
            assert space.vtop(va + 0x234) == 0x1234


def test_cli_maps_lists_up_to_the_cap_then_says_so(mirror):
    status, out, err = cli("maps", mirror, "--max-ranges", "700", "--format", "jsonl")
    assert status == 1 and len(out.splitlines()) == 700
    # one line says where it stopped (after the note on the CR3 it read through)
    stopped = [line for line in err.splitlines()
               if not line.startswith("ksinspect: note: read through CR3 ")]
    assert len(stopped) == 1 and "--max-ranges" in stopped[0] and mirror in stopped[0], err
    last = json.loads(out.splitlines()[-1])
    assert last["pa"] == 0x1000 and last["size"] == 0x1000


def test_cli_ptov_and_bad_caps(mirror):
    status, _, err = cli("ptov", mirror, "1000", "--max-aliases", "10")
    assert status == 1 and "max_aliases" in err and mirror in err
    assert cli("maps", mirror, "--max-ranges", "0")[0] == 2
    assert cli("ptov", mirror, "1000", "--max-aliases", "-1")[0] == 2


_SPARSE_PROBE = textwrap.dedent("""
    import json, sys
    from ksinspect.cli import main
    from ksinspect.memory import open_image
    from ksinspect.paging import AddressSpace
    path = sys.argv[1]
    with open_image(path) as memory:
        space = AddressSpace(memory, cr3=0x1000, mode="4level")
        mapped = space.mapping_table()
        top = space.translate(0xFFFFFFFFFFFFF000)
        data = space.read(0x7FFF0000, 16)
        aliases = space.physical_to_virtual(memory.size - 0x1000)
    import io
    for argv in (["info", path], ["maps", path, "--cr3", "1000", "--mode", "4level"],
                 ["read", path, "7fff0000", "100", "--cr3", "1000", "--mode", "4level"]):
        assert main(argv, stream=io.StringIO()) == 0, argv
    # VmHWM: this process's peak RSS. (ru_maxrss would also count the parent's
    # pages the child held between fork and exec.)
    with open("/proc/self/status") as fh:
        peak = int(fh.read().split("VmHWM:")[1].split()[0])
    print(json.dumps({"size": memory.size, "ranges": len(mapped), "top": top.pa,
                      "data": data.hex(), "aliases": len(aliases), "peak_rss_kib": peak}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the peak RSS is read from /proc/self/status (Linux)")
def test_eight_gib_sparse_image_is_never_read_whole(tmp_path):
    size = 8 << 30
    path = tmp_path / "sparse.raw"
    with open(path, "wb") as fh:
        fh.truncate(size)
        # PML4 at 0x1000: entry 0 -> PDPT at 0x2000, entry 511 -> the same PDPT.
        fh.seek(0x1000)
        fh.write(qword_page({0: 0x2003, 511: 0x2003}))
        # PDPT: entry 1 maps 1 GiB at 0x40000000 (PS), entry 511 the last GiB of the file.
        fh.seek(0x2000)
        fh.write(qword_page({1: 0x40000000 | 0x83, 511: (size - (1 << 30)) | 0x83}))
        fh.seek(0x40000000 + 0x3FFF0000)
        fh.write(b"the end of a 1 GiB page")
    if os.stat(path).st_blocks * 512 > 1 << 20:
        pytest.skip("this file system does not keep sparse files sparse")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _SPARSE_PROBE, str(path)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["size"] == size and result["ranges"] == 4
    assert result["top"] == size - 0x1000 and result["aliases"] == 2
    assert bytes.fromhex(result["data"]) == b"the end of a 1 GiB page".ljust(16, b"\0")[:16]
    # An interpreter with ksinspect loaded takes about 30 MiB; the image is 8 GiB.
    if os.environ.get("KSINSPECT_SANITIZED"):
        return      # ASan's shadow memory and quarantine make the RSS meaningless
    assert result["peak_rss_kib"] < 200 * 1024, result


def test_table_commands_never_read_a_whole_image(tmp_path):
    # A raw file larger than any descriptor table is refused after 64 KiB + 1
    # bytes; a core is opened as an image (mmapped), not read into memory.
    big = tmp_path / "big.raw"
    with open(big, "wb") as fh:
        fh.truncate(8 << 30)
    status, _, err = cli("gdt", str(big))
    assert status == 1 and "larger than any descriptor table" in err and str(big) in err
    exact = tmp_path / "exact.bin"
    exact.write_bytes(bytes(0x10000))
    status, out, _ = cli("gdt", str(exact), "--mode", "long", "--format", "jsonl")
    assert status == 0 and len(out.splitlines()) == 0x10000 // 8
