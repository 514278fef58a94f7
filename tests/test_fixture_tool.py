"""tools/make_qemu_fixture.py's page selection for trimmed cores, on crafted
cores (tests/builders/image_builder.py, tests/builders/pagetable_builder.py): the TSS an IDT
task gate names is kept (the i386 double-fault task, SDM vol. 3A §6.15), and
with PTI the user CR3's tables are too."""
import os
import struct
import sys

from builders.image_builder import EM_386, build_elf_core, qemu_cpu_state
from builders.pagetable_builder import PageTableBuilder

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tools"))
import make_qemu_fixture as tool  # noqa: E402

IDT_VA, GDT_VA, TSS_VA, DF_TSS_VA = 0xFF400000, 0xFF401000, 0xFF406000, 0xFF405F98
IDT_PA, GDT_PA, TSS_PA, DF_PA = 0x20000, 0x21000, 0x22000, 0x23000


def tss_desc(base, limit, type_):
    lo = (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | type_ << 40 | 1 << 47 \
        | ((limit >> 16) & 0xF) << 48 | ((base >> 24) & 0xFF) << 56
    return lo


def i386_core(task_gate=True):
    b = PageTableBuilder("32")
    for va, pa in ((IDT_VA, IDT_PA), (GDT_VA, GDT_PA), (TSS_VA, TSS_PA),
                   (DF_TSS_VA & ~0xFFF, DF_PA)):
        b.map(va, pa, user=False)
    gdt = [0] * 32
    gdt[0x80 >> 3] = tss_desc(TSS_VA, 0x67, 0xB)
    gdt[0xF8 >> 3] = tss_desc(DF_TSS_VA, 0x67, 0x9)
    b.write_phys(GDT_PA, b"".join(struct.pack("<Q", d) for d in gdt))
    idt = bytearray(256 * 8)
    if task_gate:   # vector 8: task gate (type 5, P=1) to selector 0xF8
        struct.pack_into("<II", idt, 8 * 8, 0xF8 << 16, 0x8500)
    b.write_phys(IDT_PA, bytes(idt))
    b.write_phys(TSS_PA, b"\0" * 0x68)
    b.write_phys(DF_PA, b"\0" * 0x1000)
    state = qemu_cpu_state()
    state["cr"] = [0x80050033, 0, 0, b.cr3, 0x690]
    state["gdt"] = dict(selector=0, limit=0xFF, flags=0, base=GDT_VA)
    state["idt"] = dict(selector=0, limit=0x7FF, flags=0, base=IDT_VA)
    state["tr"] = dict(selector=0x80, limit=0x67, flags=0x8B00, base=TSS_VA)
    return tool.ElfCore(build_elf_core(b.runs(), qemu_state=state, machine=EM_386))


def test_the_double_fault_tss_page_is_kept():
    kept, mode, missing = tool.select_pages(i386_core())
    assert mode == "2level" and not missing
    assert kept[DF_PA] == {"task-gate-tss"}
    assert "tss" in kept[TSS_PA] and "idt" in kept[IDT_PA] and "gdt" in kept[GDT_PA]


def test_without_a_task_gate_nothing_more_is_kept():
    kept, _, _ = tool.select_pages(i386_core(task_gate=False))
    assert DF_PA not in kept


def test_pti_keeps_the_user_pgd_tables():
    user = PageTableBuilder("4level", table_base=0x200000)
    user.map(0x400000, 0x30000)
    user.map(0xFFFFFE0000000000, 0x31000, user=False)
    kernel = PageTableBuilder("4level", table_base=0x100000)
    kernel.pages[0x101000] = bytearray(4096)       # keep the page after the PGD for the user PGD
    kernel.map(0x400000, 0x30000)
    kernel.pages[0x101000] = bytearray(dict(user.runs())[user.cr3])
    runs = dict(user.runs())
    runs.update(dict(kernel.runs()))
    state = qemu_cpu_state()
    state["cr"] = [0x80050033, 0, 0, kernel.cr3, 0x750EF0]
    core = tool.ElfCore(build_elf_core(sorted(runs.items()), qemu_state=state))
    with_pti, _, _ = tool.select_pages(core, pti=True)
    without, _, _ = tool.select_pages(core, pti=False)
    extra = set(with_pti) - set(without)
    # The user PGD and the tables only it reaches (cpu_entry_area's, here).
    assert 0x101000 in extra and len(extra) >= 4
    assert all("page-table (PTI user CR3)" in with_pti[pa] for pa in extra)
