"""Segmentation checks against this machine's CPU.

tests/programs/ldt_access.c writes LDT entries with modify_ldt(2) (read-only
data, expand-down data with a small limit, execute-only code, a not-present
segment, readable code), switches to compatibility mode, loads each selector
into DS and accesses it inside, at and past the limit. The CPU's outcome
(completion, or SIGSEGV/SIGBUS with trapno and error code from the signal
context) must equal ksinspect.access.check_segment_access's prediction for
the descriptor the kernel stored (read back with modify_ldt), the same
selector and offset. The GDT's __KERNEL_DS (0x18, DPL 0) is Linux's
GDT_ENTRY_INIT(0xc093, 0, 0xfffff) = 0x00cf93000000ffff
(arch/x86/kernel/cpu/common.c).
"""
import os
import platform
import re
import shutil
import subprocess

import pytest

from ksinspect.access import check_segment_access
from ksinspect.x86.control import CpuMode
from ksinspect.x86.descriptor import SegmentDescriptor
from ksinspect.x86.selector import Selector

from conftest import PROGRAMS

pytestmark = [pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64",
                                 reason="needs Linux on x86-64 (modify_ldt, compatibility mode)"),
              pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")]

KERNEL_DS = 0x00CF93000000FFFF
KINDS = {0: ("write", 1), 1: ("read", 1), 2: ("read", 2)}
CASE = re.compile(r"case (\w+) sel (0x[0-9a-f]+|0) offset (0x[0-9a-f]+|0) kind (\d) -> (.*)$")


@pytest.fixture(scope="module")
def run_program(tmp_path_factory):
    exe = str(tmp_path_factory.mktemp("ldt") / "ldt_access")
    subprocess.run(["gcc", "-O1", "-no-pie", "-fno-pie", "-o", exe,
                    os.path.join(PROGRAMS, "ldt_access.c")], check=True)
    proc = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    if proc.returncode == 2 and "modify_ldt" in proc.stderr:
        pytest.skip("modify_ldt is not available: %s" % proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    entries, cases = {}, {}
    for line in proc.stdout.splitlines():
        if line.startswith("entry "):
            _, index, raw = line.split()
            entries[int(index)] = int(raw, 16)
        m = CASE.match(line)
        if m:
            name, sel, offset, kind, outcome = m.groups()
            report = None
            if outcome != "ok":
                fields = outcome.split()
                report = {k: int(v, 0) for k, v in zip(fields[::2], fields[1::2])}
            cases[name] = (int(sel, 16), int(offset, 16), int(kind), report)
    return entries, cases


def test_the_kernel_stored_the_descriptors_asked_for(run_program):
    entries, _ = run_program
    ro, down, xo = (SegmentDescriptor.decode(entries[i], None, "legacy") for i in (0, 1, 2))
    assert ro.kind.value == "data" and not ro.writable and ro.limit == 0xFF and ro.dpl == 3
    assert down.expand_down and down.offset_range == (0x1000, 0xFFFF)
    assert xo.kind.value == "code" and not xo.readable
    assert not SegmentDescriptor.decode(entries[4], None, "legacy").present


@pytest.mark.parametrize("name", [
    "ro_read_inside", "ro_write", "ro_read_at_limit", "ro_read_past_limit",
    "ro_read2_across_limit", "rw_write_inside", "rw_read2_at_end", "rw_write_past_limit",
    "down_at_limit", "down_just_above", "down_top", "down_past_top", "down_read2_at_top",
    "xo_load", "not_present_load", "code_readable_read", "code_readable_write",
    "rpl0_selector", "kernel_ds_dpl0", "null_selector_use"])
def test_cpu_and_prediction_agree(run_program, name):
    entries, cases = run_program
    sel, offset, kind, report = cases[name]
    selector = Selector.decode(sel)
    if selector.is_null:
        descriptor = None
    elif selector.table.value == "LDT":
        descriptor = SegmentDescriptor.decode(entries[selector.index], None, "legacy")
    else:
        assert sel & ~3 == 0x18
        descriptor = SegmentDescriptor.decode(KERNEL_DS, None, "legacy")
    access, size = KINDS[kind]
    p = check_segment_access(descriptor, offset, access, size, 3, CpuMode.COMPATIBILITY, "ds",
                             selector)
    if report is None:
        assert p.ok, [str(s) for s in p.steps]
        assert p.linear == descriptor.base + offset
    else:
        assert not p.ok, "the CPU faulted (%s) where the prediction says ok" % report
        assert (report["trapno"], report["err"]) == (p.fault.vector, p.error_code), [
            str(s) for s in p.steps]
        # Linux: #GP -> SIGSEGV, #NP and #SS -> SIGBUS, both with si_code SI_KERNEL.
        assert report["signo"] == (11 if p.fault.vector == 13 else 7)
        assert report["code"] == 0x80
