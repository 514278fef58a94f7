"""The access simulator against this machine's CPU: page faults and #GP.

tests/programs/faults.c (built here with gcc) makes user-mode accesses that
fault on purpose and prints, for each, the mapping's /proc/self/maps rights
and pagemap present bit before the access, then what the CPU put in the
signal context: trapno, the error code and CR2. ksinspect.live.fault_model
predicts each outcome from the same rights; the prediction must equal the
CPU's report bit for bit, including the two documented Linux steps (demand
paging of a readable VMA before an instruction fetch faults, and X86_PF_PROT
forced for kernel addresses, arch/x86/mm/fault.c), which are checked as such.
"""
import os
import platform
import re
import shutil
import subprocess

import pytest

from ksinspect.live.fault_model import PF_PROT, host_paging_state, predict_user_access

from conftest import PROGRAMS

pytestmark = [pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64",
                                 reason="the fault program needs Linux on x86-64"),
              pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")]

LINE = re.compile(r"case (\w+) access (\w+) addr (0x[0-9a-f]+) size (\d+) perms (\S+) present "
                  r"(-?\d) last_perms (\S+) last_present (-?\d) -> (.*)$")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    exe = str(tmp_path_factory.mktemp("faults") / "faults")
    subprocess.run(["gcc", "-O1", "-o", exe, os.path.join(PROGRAMS, "faults.c")],
                   check=True)
    out = subprocess.run([exe], capture_output=True, text=True, timeout=60, check=True).stdout
    found, unsupported = {}, {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            name, kind, addr, size, perms, present, lperms, lpresent, outcome = m.groups()
            report = None
            if outcome != "ok":
                v = dict(zip(outcome.split()[::2], outcome.split()[1::2]))
                report = {k: int(x, 0) for k, x in v.items()}
            found[name] = dict(access=kind, addr=int(addr, 16), size=int(size),
                               pages=[(perms, present == "1"), (lperms, lpresent == "1")],
                               report=report)
        elif line.startswith("pkey "):
            unsupported["pkey"] = dict(zip(("key", "pkru"), (int(x, 0) for x in
                                                              line.split()[1::2])))
        elif line.startswith("case ") and " unsupported " in line:
            unsupported[line.split()[1]] = line.split(" unsupported ", 1)[1]
    return found, unsupported


def predicted(case):
    return predict_user_access(case["addr"], case["access"], case["size"], case["pages"],
                               host_paging_state())


@pytest.mark.parametrize("name", [
    "prot_none_read", "prot_none_write", "prot_none_exec", "prot_none_touched_read",
    "ro_touched_write", "ro_touched_read", "ro_untouched_write", "nx_touched_exec",
    "nx_untouched_exec", "text_write", "cross_page_read"])
def test_user_page_faults_match_the_cpu(cases, name):
    case = cases[0][name]
    p, cpu = predicted(case), case["report"]
    if cpu is None:
        assert p.ok, p.steps
        return
    assert not p.ok, p.steps
    assert (cpu["signo"], cpu["trapno"]) == (11, p.vector)
    assert cpu["err"] == p.error_code == p.hardware_error_code, p.steps
    assert cpu["cr2"] == p.cr2


def test_expected_error_codes_are_the_classic_ones(cases):
    # Written from SDM Figure 4-12 (P=1, W/R=2, U/S=4, I/D=16) for a CPU with NX.
    expected = {"prot_none_read": 0x4, "prot_none_write": 0x6, "prot_none_exec": 0x14,
                "prot_none_touched_read": 0x4, "ro_touched_write": 0x7,
                "ro_untouched_write": 0x6, "nx_touched_exec": 0x15, "text_write": 0x7,
                "cross_page_read": 0x4}
    for name, code in expected.items():
        assert cases[0][name]["report"]["err"] == code, name
    # The cross-page read faults on its second page: CR2 is that page's first byte.
    c = cases[0]["cross_page_read"]
    assert c["report"]["cr2"] == (c["addr"] + c["size"] - 1) & ~0xFFF


def test_demand_paging_before_a_fetch_fault_is_the_documented_step(cases):
    # A fetch from a never-touched rw- page: the CPU's first fault (P=0) is
    # resolved by Linux, the retry faults with P=1: 0x15, not 0x14.
    case = cases[0]["nx_untouched_exec"]
    assert case["pages"][0] == ("rw-p", False) and case["report"]["err"] == 0x15
    assert any("maps the page first" in s for s in predicted(case).steps)


@pytest.mark.parametrize("name", ["kernel_read", "kernel_write", "kernel_exec"])
def test_kernel_addresses_are_reported_with_prot_set(cases, name):
    case = cases[0][name]
    p, cpu = predicted(case), case["report"]
    assert cpu["trapno"] == 14 and cpu["err"] == p.error_code and cpu["cr2"] == case["addr"]
    # The documented change: PROT forced; every other bit is the CPU's.
    assert p.error_code == p.hardware_error_code | PF_PROT
    assert cpu["err"] & ~PF_PROT == p.hardware_error_code & ~PF_PROT
    assert any("X86_PF_PROT" in s for s in p.steps)


@pytest.mark.parametrize("name", ["noncanonical_read", "noncanonical_write"])
def test_non_canonical_addresses_raise_gp_not_pf(cases, name):
    case = cases[0][name]
    p, cpu = predicted(case), case["report"]
    assert (p.vector, p.error_code) == (13, 0)
    assert (cpu["trapno"], cpu["err"], cpu["code"]) == (13, 0, 0x80)   # SI_KERNEL
    # No page fault happened: the frame's cr2 is the previous fault's (stale).
    assert cpu["cr2"] != case["addr"]


def test_protection_keys(cases):
    found, unsupported = cases
    if "pkey_write" in unsupported:
        pytest.skip("this CPU or kernel has no protection keys (%s)" % unsupported["pkey_write"])
    from dataclasses import replace
    from ksinspect.access import check_page_access
    from ksinspect.live.fault_model import rights_from_maps
    key = unsupported["pkey"]
    state = replace(host_paging_state(), pke=True, pkru=key["pkru"])
    for name, code in (("pkey_write", 0x27), ("pkey_read", None)):   # P | W/R | U/S | PK
        case = found[name]
        rights = replace(rights_from_maps(*case["pages"][0]), pkey=key["key"])
        p = check_page_access(rights, case["addr"], case["access"], True, state)
        cpu = case["report"]
        assert (cpu and cpu["err"]) == (p.error_code and p.error_code.raw) == code
