"""The examples each subcommand's ``--help`` ends with, kept in one place.

Each runs as written from the root of a source tree on the data shipped in
tests/data (tests/test_cli_help.py runs every one and checks its exit
status), except where ``needs`` names what it needs instead: this machine
(``live``: Linux x86), a Windows host (or Wine), or an image no one can
ship (a Windows kernel's memory).
"""
from typing import Dict, NamedTuple, Optional, Tuple

Q4 = "tests/data/qemu/x86_64-4level/core-trimmed.elf.xz"
Q4_SYMBOLS = "tests/data/qemu/x86_64-4level/kallsyms.txt.xz"
QPAE = "tests/data/qemu/i386-pae/core-trimmed.elf.xz"
KDUMP = "tests/data/kdump/x86_64-4level/makedumpfile-lzo.kdump.xz"
DUMP = "tests/data/minidump/self.dmp.xz"
DUMP32 = "tests/data/minidump/self-x86.dmp.xz"
WINE = "tests/data/wine/peb_self-masquerade.lime.xz"

# What an example needs when it cannot run on the shipped data alone.
LIVE = "live"                   # this machine (Linux x86: ptrace, LAR/LSL, modify_ldt)
WINDOWS = "windows"             # a Windows host, or Wine through tools/winpython.py
WINDOWS_IMAGE = "windows-image"  # a Windows kernel's memory image (none ships)


class Example(NamedTuple):
    line: str                   # the command line, starting with "ksinspect"
    comment: str = ""
    needs: Optional[str] = None


EXAMPLES: Dict[str, Tuple[Example, ...]] = {
    "selector": (Example("ksinspect selector 33", "index 6 of the GDT, RPL 3"),),
    "desc": (Example("ksinspect desc 00af9b000000ffff", "Linux's __KERNEL_CS, IA-32e mode"),
             Example("ksinspect desc 81a08e0000100ae0 00000000ffffffff --json",
                     "a 16-byte interrupt gate")),
    "pte": (Example("ksinspect pte 80000000fee000e3 --paging-mode 4level --level 2",
                    "a 2 MiB page, NX, WB"),
            Example("ksinspect pte 000403e7 --paging-mode 32 --level 2",
                    "a 4 MiB page with PSE-36 bits")),
    "dr7": (Example("ksinspect dr7 d0402", "DR1: local, write, 4 bytes"),
            Example("ksinspect dr7 --set 0:write:4:global:0x7ffc1000 --set 1:execute:1",
                    "encode two breakpoints")),
    "dr6": (Example("ksinspect dr6 ffff4ff1", "B0 and BS"),),
    "cr0": (Example("ksinspect cr0 80050033", "PE MP ET NE WP AM PG"),),
    "cr4": (Example("ksinspect cr4 00750ef0 --json"),),
    "efer": (Example("ksinspect efer d01", "SCE LME LMA NXE"),),
    "rflags": (Example("ksinspect rflags 246", "PF ZF IF, IOPL 0"),),
    "pf": (Example("ksinspect pf 15", "protection violation, user instruction fetch"),),
    "cpu-mode": (Example("ksinspect cpu-mode 80000011 --cr4 20 --efer 500",
                         "IA-32e compatibility mode, 4-level paging"),),
    "live": (Example("ksinspect live", "this process's segment registers, GDT, LDT", LIVE),
             Example("ksinspect live --demo --json", "and an LDT entry written and loaded",
                     LIVE)),
    "gdt": (Example("ksinspect gdt %s" % Q4, "the GDT that GDTR names in a QEMU core"),
            Example("ksinspect gdt %s 8-30 --format csv" % Q4,
                    "only selectors 0x8..0x30, as WinDbg's dg 8 30")),
    "ldt": (Example("ksinspect ldt %s --base fffffe0000001000 --limit 7f" % Q4,
                    "any table's bytes as an LDT (here the GDT's: no shipped guest loads an "
                    "LDT)"),),
    "idt": (Example("ksinspect idt %s --symbols %s" % (Q4, Q4_SYMBOLS),
                    "each gate's handler named"),
            Example("ksinspect idt %s --json" % QPAE, "8-byte gates of a 32-bit kernel")),
    "info": (Example("ksinspect info %s" % Q4, "format, ranges, CPU state, paging mode"),
             Example("ksinspect info %s --json" % KDUMP, "a makedumpfile kdump")),
    "vtop": (Example("ksinspect vtop %s fffffe0000001000" % Q4,
                     "the walk, level by level, with PFNs and WinDbg !pte letters"),
             Example("ksinspect vtop %s idt_table+0x10 --symbols %s" % (Q4, Q4_SYMBOLS),
                     "an address given by symbol")),
    "maps": (Example("ksinspect maps %s --range ffffffff80000000-ffffffffc0000000" % Q4,
                     "the kernel image's mappings"),
             Example("ksinspect maps %s --format qemu" % QPAE,
                     "QEMU's own info mem text (info tlb with --pages)")),
    "ptov": (Example("ksinspect ptov %s 487c000" % Q4, "every linear address of a frame"),),
    "read": (Example("ksinspect read %s fffffe0000001000 40 --qwords" % Q4,
                     "the GDT's first descriptors, as WinDbg's dq"),
             Example("ksinspect read %s fffffe0000003004 18 --dps --symbols %s"
                     % (Q4, Q4_SYMBOLS), "the TSS's RSP0-RSP2, named as WinDbg's dps")),
    "layouts": (Example("ksinspect layouts --arch x86", "name, OS, arch, NT version"),),
    "peb": (Example("ksinspect peb %s" % DUMP, "a minidump: the PEB from its first thread"),
            Example("ksinspect peb %s --flat --address 0x67ff0000 --layout win7-sp1-x64"
                    % WINE, "a process memory sample captured under Wine")),
    "eprocess": (Example("ksinspect eprocess IMAGE --layout win7-sp1-x64 --address "
                         "fffffa8000c01000", "a Windows 7 x64 kernel's memory", WINDOWS_IMAGE),),
    "pslist": (Example("ksinspect pslist IMAGE --layout win10-22h2-x64",
                       "from PsInitialSystemProcess", WINDOWS_IMAGE),),
    "psscan": (Example("ksinspect psscan IMAGE --layout win10-22h2-x64 --json",
                       "+ physical, in_list, status", WINDOWS_IMAGE),),
    "threads": (Example("ksinspect threads %s" % DUMP, "TID, TEB, stack, registers"),
                Example("ksinspect threads %s --thread 0n36 --format csv" % DUMP32,
                        "one thread of a 32-bit process")),
    "teb": (Example("ksinspect teb %s --thread 0n36" % DUMP32, "a 32-bit process's TEB"),
            Example("ksinspect teb %s --flat --address 0x67fe0000" % WINE,
                    "a process memory sample: the layout from the PEB's version fields")),
    "modules": (Example("ksinspect modules %s" % DUMP, "WinDbg's lm"),),
    "break": (Example("ksinspect break --hw 0x1000:write:4 --count 1 -- /bin/true",
                      "a write watch while a program runs", LIVE),
              Example("ksinspect break --pid 4242 --hw 0x404028:rw:8 --timeout 10 --json",
                      "attach to a running process", "a process to attach to")),
    "events": (Example("ksinspect events -- notepad.exe", "CREATE_PROCESS, LOAD_DLL, ...",
                       WINDOWS),),
    "access": (Example("ksinspect access %s ds:ffffffff81000000 --cpl 3" % Q4,
                       "a user read of kernel text: #PF(0x5), CR2"),
               Example("ksinspect access %s 6b:0 --cpl 3" % QPAE,
                       "__KERNEL_DS loaded at CPL 3: #GP(0x68)")),
    "tss": (Example("ksinspect tss %s" % Q4, "RSP0, IST1-7, the I/O map, findings"),),
    "triage": (Example("ksinspect triage %s %s --workers 0 --format table" % (Q4, KDUMP),
                       "two images, in this process"),),
}


def epilog(command: str) -> Optional[str]:
    """The text ``--help`` ends with: the command's examples, one a line
    (kept as written by ksinspect.commands._args.HelpFormatter)."""
    examples = EXAMPLES.get(command)
    if not examples:
        return None
    lines = ["examples (from the source tree's root; the data is in tests/data):"]
    for e in examples:
        note = e.comment
        if e.needs == LIVE:
            note = (note + "; " if note else "") + "on this machine"
        elif e.needs is not None:
            note = (note + "; " if note else "") + "needs " + {
                WINDOWS: "Windows or Wine", WINDOWS_IMAGE: "a Windows kernel image"}.get(
                    e.needs, e.needs)
        if note:
            lines.append("  # " + note)
        lines.append("  " + e.line)
    return "\n".join(lines)
