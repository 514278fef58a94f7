"""The libFuzzer harnesses (tests/fuzz/) and the bugs they found.

* Every harness file is listed in tools/fuzz.py and has a seed corpus.
* Regressions: each C bug the fuzzers found has a test here through the
  cffi module, and its input is kept as tests/fuzz/corpus/<harness>/regress-*.
* With clang and libFuzzer (Debian: clang, libclang-rt-14-dev), the
  harnesses are built and replayed over their committed corpora (about 15 s).
  ``KSINSPECT_FUZZ_SECONDS=N`` also fuzzes each harness for N seconds (CI
  runs ``python3 tools/fuzz.py --seconds 5`` as its own step instead).
"""
import os
import subprocess
import sys

import pytest

from ksinspect._native import ffi, lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import fuzz  # noqa: E402  (tools/fuzz.py)

from builders.pagetable_builder import PageTableBuilder  # noqa: E402


def test_every_harness_is_listed_and_has_seeds():
    fuzz.check_listed()          # raises SystemExit naming the difference
    for name, max_len in fuzz.HARNESSES:
        seeds = os.path.join(fuzz.FUZZ_DIR, "corpus", name)
        files = os.listdir(seeds)
        assert files, name
        for f in files:
            assert os.path.getsize(os.path.join(seeds, f)) <= max_len, (name, f)


def test_read_virtual_refuses_a_range_that_wraps_past_2_64():
    # Found by fuzz_read_virtual: 0x200 bytes at 0xffffffffffffff00 went on
    # reading at linear address 0 after the top of the space.
    b = PageTableBuilder("4level")
    b.map(0xFFFFFFFFFFFFF000, 0x9000)
    b.map(0, 0xA000)
    b.write_phys(0x9000, b"\xaa" * 0x1000)
    b.write_phys(0xA000, b"\xbb" * 0x1000)
    data = b.flat()
    buf = ffi.from_buffer(data)
    run = ffi.new("ksi_run *", (0, len(data), 0))
    phys = ffi.new("ksi_phys *")
    phys.base, phys.base_length, phys.runs, phys.run_count = buf, len(data), run, 1
    cfg = ffi.new("ksi_paging_config *", (52, 0x0007040600070406, lib.KSI_PO_NXE))
    out = ffi.new("uint8_t[]", 0x200)
    done = ffi.new("size_t *")
    failure = ffi.new("ksi_translation *")
    status = lib.ksi_read_virtual(phys, b.cr3, lib.KSI_PAGING_4LEVEL, cfg, 0xFFFFFFFFFFFFFF00,
                                  out, 0x200, done, failure)
    assert status == lib.KSI_ERR_OUT_OF_RANGE and done[0] == 0
    # The last 0x100 bytes of the space are still readable.
    status = lib.ksi_read_virtual(phys, b.cr3, lib.KSI_PAGING_4LEVEL, cfg, 0xFFFFFFFFFFFFFF00,
                                  out, 0x100, done, failure)
    assert status == lib.KSI_OK and done[0] == 0x100
    assert ffi.buffer(out, 0x100)[:] == b"\xaa" * 0x100


def _toolchain():
    return fuzz.toolchain_problem(fuzz.find_clang(None))


@pytest.mark.skipif(_toolchain() is not None, reason="no libFuzzer toolchain: %s" % _toolchain())
def test_harnesses_build_and_replay_their_corpora_clean(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "fuzz.py"), "--replay",
                           "--build-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].endswith(", 0 failed")


@pytest.mark.skipif(not os.environ.get("KSINSPECT_FUZZ_SECONDS"),
                    reason="set KSINSPECT_FUZZ_SECONDS=N to fuzz each harness for N s "
                           "(CI: python3 tools/fuzz.py --seconds 5)")
@pytest.mark.skipif(_toolchain() is not None, reason="no libFuzzer toolchain: %s" % _toolchain())
def test_fuzz_each_harness_briefly(tmp_path):
    seconds = int(os.environ["KSINSPECT_FUZZ_SECONDS"])
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "fuzz.py"), "--seconds",
                           str(seconds), "--build-dir", str(tmp_path)], capture_output=True,
                          text=True, timeout=120 + 3 * seconds * len(fuzz.HARNESSES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_read_failure_is_the_walk_of_the_first_missing_byte():
    # Found by fuzz_read_virtual: when a mapped page's memory ended inside the
    # image, the failure described the page's first byte read, not the first
    # missing one, and AddressSpace.read said "0x400010 maps physical 0x9000".
    from ksinspect.memory import PhysicalMemory, Run
    from ksinspect.paging import AddressSpace
    b = PageTableBuilder("4level")
    b.map(0x400000, 0x9000)
    runs, buffer = [], b""
    for pa, data in b.runs():
        runs.append(Run(pa, len(data), len(buffer)))
        buffer += data
    runs.append(Run(0x9000, 0x10, len(buffer)))    # only 16 bytes of the page
    buffer += b"A" * 0x10
    space = AddressSpace(PhysicalMemory(buffer, runs, "raw"), cr3=b.cr3, mode="4level")
    data, error = space.read_available(0x400000, 0x20)
    assert data == b"A" * 0x10
    assert error.address == 0x400010 and "maps physical 0x9010" in str(error)
