"""Far CALL/JMP through call gates, task gates and TSSs, and INT n through the IDT
(ksinspect.transfer), against the SDM's rules (vol. 2A CALL/INT n pseudo-code;
vol. 3A §5.8.4 Table 5-1, §5.8.5 Figure 5-13, §6.12.1, §6.13 Figure 6-7, §7.3
Table 7-1, §7.7). Descriptors are packed here from the SDM's formats (Figures
3-8, 5-8, 5-9, 6-2, 7-3); the expected faults and error codes are the ones the
pseudo-code names."""
import struct

import pytest

from ksinspect.access import Fault
from ksinspect.x86.control import CpuMode
from ksinspect.transfer.gates import far_transfer, interrupt
from ksinspect.transfer.values import ProcessorState, SystemTables, Transfer

from builders.descriptors import gate_qword, segment_qword


def seg(base, limit, type_, dpl, s=1, p=1, db=1, g=0, l=0):
    """An 8-byte descriptor (Figure 3-8)."""
    return struct.pack("<Q", segment_qword(base, limit, type_, s, dpl, p, l=l, db=db, g=g))


def gate(selector, offset, type_, dpl, params=0, p=1):
    """A legacy gate (Figures 5-8, 6-2)."""
    return struct.pack("<Q", gate_qword(offset, selector, type_, dpl, p, byte4=params))


# GDT: 1 code0, 2 data0 (stack), 3 code3, 4 data3, 5 call gate DPL3 -> code0 (2 params),
# 6 call gate DPL0, 7 not-present gate, 8 TSS (current, busy), 9 TSS (available),
# 10 TSS limit 0x60, 11 task gate -> 9, 12 gate to a data segment, 13 conforming code0
MEM = bytearray(0x10000)
TSS_CUR, TSS_NEW, TSS_SMALL = 0x1000, 0x2000, 0x3000
GDT = b"".join([
    b"\0" * 8, seg(0, 0xFFFFF, 0xB, 0, g=1), seg(0, 0xFFFFF, 0x3, 0, g=1),
    seg(0, 0xFFFFF, 0xB, 3, g=1), seg(0, 0xFFFFF, 0x3, 3, g=1),
    gate(0x08, 0x12345678, 0xC, 3, params=2), gate(0x08, 0x1000, 0xC, 0),
    gate(0x08, 0x1000, 0xC, 3, p=0), seg(TSS_CUR, 0x67, 0xB, 0, s=0, db=0),
    seg(TSS_NEW, 0x67, 0x9, 3, s=0, db=0), seg(TSS_SMALL, 0x60, 0x9, 3, s=0, db=0),
    gate(0x48, 0, 0x5, 3), gate(0x10, 0x1000, 0xC, 3), seg(0, 0xFFFFF, 0xF, 0, g=1)])
struct.pack_into("<IH", MEM, TSS_CUR + 4, 0x9000, 0x10)          # ESP0, SS0 (Figure 7-2)
struct.pack_into("<I", MEM, TSS_NEW + 0x1C, 0x5000)             # CR3
struct.pack_into("<II", MEM, TSS_NEW + 0x20, 0x401000, 0x202)   # EIP, EFLAGS
struct.pack_into("<I", MEM, TSS_NEW + 0x38, 0x7FF0)             # ESP
for off, value in ((0x48, 0x23), (0x4C, 0x1B), (0x50, 0x23), (0x54, 0x23)):
    struct.pack_into("<H", MEM, TSS_NEW + off, value)
struct.pack_into("<II", MEM, 0x8000, 0xAAAA0000, 0xBBBB1111)    # the caller's two parameters
IDT = b"".join(gate(0x08, 0xC0000000 + v, 0xE if v != 0x80 else 0xF, 3 if v in (3, 0x80) else 0)
               for v in range(256))


def tables(long_mode=False):
    return SystemTables(GDT, len(GDT) - 1, IDT, len(IDT) - 1,
                        lambda a, n, cr3_value=None: bytes(MEM[a:a + n]), long_mode=long_mode)


def user(mode=CpuMode.PROTECTED, cpl=3):
    from ksinspect.x86.descriptor import SegmentDescriptor
    ss = SegmentDescriptor.from_bytes(seg(0, 0xFFFFF, 0x3, 3, g=1), "legacy")
    return ProcessorState(mode=mode, cpl=cpl, cs=0x1B, eip=0x401234, ss=0x23, esp=0x8000,
                          ss_descriptor=ss, eflags=0x202, tr=0x40, tr_base=TSS_CUR,
                          tr_limit=0x67, tr_type=0xB)


def test_call_gate_to_ring0_switches_stack_and_copies_parameters():
    # §5.8.5 Figure 5-13: the new stack from SS0:ESP0 gets SS, ESP, the parameters, CS, EIP.
    r = far_transfer(tables(), user(), 0x2B, 0)
    assert r.ok and (r.new_cs, r.new_eip, r.new_cpl) == (0x08, 0x12345678, 0)
    assert (r.new_ss, r.new_esp) == (0x10, 0x9000 - 4 * (4 + 2)) and r.stack_switch
    assert [(p.name, p.value) for p in r.pushed] == [
        ("SS", 0x23), ("ESP", 0x8000), ("param1", 0xBBBB1111), ("param0", 0xAAAA0000),
        ("CS", 0x1B), ("EIP", 0x401234)]
    # The parameters keep their order on the new stack: param0 lowest, just above EIP/CS.
    assert r.pushed[3].address == 0x9000 - 16
    assert r.to_dict()["stack_switch"] and "Figure" not in str(r)



def test_the_notebook_view_lists_each_check_and_each_push_escaped():
    # The view once imported a module that does not exist (ksinspect.transfer.views).
    import xml.etree.ElementTree as ET
    r = far_transfer(tables(), user(), 0x2B, 0)
    root = ET.fromstring(r._repr_html_())
    text = "".join(root.itertext())
    assert str(r) in text and "param0" in text and "%#x" % 0xAAAA0000 in text
    tables_shown = root.findall(".//table")
    assert len(tables_shown) == 2           # the checks, then what was pushed
    assert len(tables_shown[0].findall(".//tbody/tr")) == len(r.steps)
    assert len(tables_shown[1].findall(".//tbody/tr")) == len(r.pushed) == 6


@pytest.mark.parametrize("sel, cpl, fault, code", [
    (0x33, 3, Fault.GP, 0x30),          # gate DPL 0 < CPL 3 -> #GP(gate selector)
    (0x3B, 3, Fault.NP, 0x38),          # gate not present -> #NP(gate selector)
    (0x63, 3, Fault.GP, 0x10),          # the gate names a data segment -> #GP(code selector)
    (0x00, 3, Fault.GP, 0),             # null selector -> #GP(0)
    (0x7B, 3, Fault.GP, 0x78),          # index beyond the GDT limit
    (0x23, 3, Fault.GP, 0x20),          # a data segment as target
    (0x4B, 3, Fault.GP, 0x48),          # ... the task gate is fine, see below; TSS DPL 3 ok
])
def test_faults_and_error_codes(sel, cpl, fault, code):
    r = far_transfer(tables(), user(cpl=cpl), sel, 0)
    if sel == 0x4B:
        assert r.ok and r.path == "task switch"
        return
    assert (r.fault, r.error_code) == (fault, code), r.explain()


def test_jmp_through_gate_to_more_privileged_code_is_refused():
    # Table 5-1: JMP needs DPL == CPL for nonconforming code.
    r = far_transfer(tables(), user(), 0x2B, 0, Transfer.JMP)
    assert (r.fault, r.error_code) == (Fault.GP, 0x08)


def test_task_switch_call_nests_and_limit_below_0x67_is_ts():
    r = far_transfer(tables(), user(), 0x5B, 0)       # task gate -> TSS 0x48
    assert r.ok and (r.new_cs, r.new_eip, r.new_esp, r.new_cpl) == (0x1B, 0x401000, 0x7FF0, 3)
    assert r.new_eflags & 1 << 14 and r.task_switch.nested
    j = far_transfer(tables(), user(), 0x4B, 0, Transfer.JMP)
    assert j.ok and not j.new_eflags & 1 << 14 and not j.task_switch.nested
    small = far_transfer(tables(), user(), 0x53, 0)
    assert (small.fault, small.error_code) == (Fault.TS, 0x50)
    busy = far_transfer(tables(), user(cpl=0), 0x40, 0)
    assert (busy.fault, busy.error_code) == (Fault.GP, 0x40)


def test_ia32e_refuses_task_switches():
    # §7.7: no task switching in IA-32e mode: a far CALL to a TSS or task gate is #GP(sel).
    r = far_transfer(tables(long_mode=True), user(mode=CpuMode.COMPATIBILITY), 0x4B, 0)
    assert (r.fault, r.error_code) == (Fault.GP, 0x48)


def test_int_n_privilege_check_and_stack_switch():
    # §6.12.1.1: INT n at CPL 3 through a DPL-0 gate: #GP(vector*8 + 2).
    r = interrupt(tables(), user(), 0x0D)
    assert (r.fault, r.error_code) == (Fault.GP, 0x0D * 8 + 2)
    # An exception (EXT=1) is not DPL-checked; #GP pushes its error code (Figure 6-4).
    e = interrupt(tables(), user(), 0x0D, Transfer.EXCEPTION, error_code=0x40)
    assert e.ok and [p.name for p in e.pushed] == ["SS", "ESP", "EFLAGS", "CS", "EIP",
                                                   "error code"]
    assert e.new_esp == 0x9000 - 24 and not e.new_eflags & 1 << 9      # interrupt gate: IF=0
    t = interrupt(tables(), user(), 0x80)
    assert t.ok and t.new_esp == 0x9000 - 20 and t.new_eflags & 1 << 9  # trap gate keeps IF


@pytest.mark.parametrize("profile", ["i386-pae", "i386-2level"])
def test_i386_guest_int80_enters_entry_INT80_32_on_the_tss_stack(profile):
    # Linux i386: vector 0x80 is a DPL-3 gate to entry_INT80_32 (the guest's kallsyms),
    # __KERNEL_CS = 0x60, __KERNEL_DS = 0x68; the stack switch lands 20 bytes below ESP0
    # (SS, ESP, EFLAGS, CS, EIP: §6.12.1 Figure 6-4). Vector 13 is DPL 0: #GP(13*8+2).
    import os
    from ksinspect.memory import open_image
    from ksinspect.symbols import SymbolTable
    from ksinspect.task import read_tss
    from ksinspect.transfer.image import simulate_interrupt
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "qemu", profile)
    symbols = SymbolTable.from_system_map(os.path.join(here, "kallsyms.txt.xz"))
    with open_image(os.path.join(here, "core-trimmed.elf.xz")) as memory:
        r = simulate_interrupt(memory, 0x80, cpl=3)
        esp0 = read_tss(memory).tss.fields["esp0"]
        gp = simulate_interrupt(memory, 0x0D, cpl=3)
    assert r.ok and r.new_eip == symbols.address_of("entry_INT80_32")
    assert (r.new_cs, r.new_ss, r.new_cpl, r.new_esp) == (0x60, 0x68, 0, esp0 - 20)
    assert (gp.fault, gp.error_code) == (Fault.GP, 0x6A)


def test_cli_far_call_json_and_bad_usage():
    # A far CALL at CPL 3 to the i386 double-fault TSS (GDT 0xF8, DPL 0): #GP(0xf8) (vol. 2A CALL).
    import json
    import os
    from conftest import run_cli as run
    image = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "qemu", "i386-pae",
                         "core-trimmed.elf.xz")
    status, out, _ = run("access", image, "0xf8:0", "--far-call", "--cpl", "3", "--json")
    d = json.loads(out)
    assert status == 0 and (d["fault"], d["error_code"], d["vector"]) == ("#GP", 0xF8, 13)
    status, _, err = run("access", image, "ds:0", "--far-call")
    assert status == 2 and len(err.splitlines()) == 1


def test_transfer_draws_itself_in_a_notebook():
    # _repr_html_ (notebook 06 displays a TransferResult): the checks and the pushed values.
    r = far_transfer(tables(), user(), 0x2B, 0)
    html = r._repr_html_()
    assert "<table" in html and "param0" in html and "§5.8.5" in html
