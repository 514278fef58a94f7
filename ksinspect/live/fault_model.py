"""What a user-mode access does on this Linux x86-64 machine: the CPU's checks
(:mod:`ksinspect.access`) run over the rights Linux gave the page, with the
steps Linux's page-fault path takes before a signal is sent.

The processor's side is :func:`ksinspect.access.check_page_access` on a
:class:`~ksinspect.access.PageRights` built from what user space can see of
a page: its ``/proc/PID/maps`` permissions and the present bit of
``/proc/PID/pagemap``. Two Linux facts turn those into the hardware's view:

* a PROT_NONE page has its present bit clear in the hardware entry even when
  pagemap reports it present (arch/x86/include/asm/pgtable_types.h:
  _PAGE_PROTNONE stands in for _PAGE_PRESENT), so the CPU sees P=0;
* a page that is not present yet is demand-paged when the VMA allows the
  access: ``access_error()`` in arch/x86/mm/fault.c checks only
  VM_WRITE for writes and that the VMA is accessible otherwise, so an
  instruction fetch from a readable but non-executable page first gets the
  page mapped (without execute permission) and then faults again with P=1.

Then what Linux documents it changes in the delivered error code:
``__bad_area_nosemaphore()`` in arch/x86/mm/fault.c sets X86_PF_PROT for
every user access to an address at or above TASK_SIZE_MAX ("pretend that
user-mode accesses to kernel addresses are always protection faults"), so
the kernel's page tables do not leak through the error code. A #GP (a
non-canonical address) arrives with error code 0 and si_code SI_KERNEL; the
signal frame's cr2 is the thread's last page-fault address
(arch/x86/kernel/signal.c copies current->thread.cr2), stale for a #GP.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..access import (AccessKind, Fault, PageRights, PagingState, check_page_access,
                      check_segment_access)
from ..x86.control import CpuMode

PF_PROT = 1
TASK_SIZE_MAX_4LEVEL = (1 << 47) - 4096      # arch/x86/include/asm/page_64_types.h
TASK_SIZE_MAX_5LEVEL = (1 << 56) - 4096


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> List[str]:
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def host_paging_state() -> PagingState:
    """CR0.WP, CR4.SMEP/SMAP/PKE and EFER.NXE as Linux sets them on this CPU:
    Linux enables each whenever /proc/cpuinfo keeps the feature flag (WP always;
    NX as "nx", SMEP "smep", SMAP "smap", PKE "ospke")."""
    flags = set(cpu_flags())
    return PagingState(wp=True, smep="smep" in flags, smap="smap" in flags,
                       pke="ospke" in flags, nxe="nx" in flags, ac=False, pkru=None,
                       ia32e=True, pae=True)


def rights_from_maps(perms: str, present: bool, source: str = "") -> PageRights:
    """The hardware rights of a user page from its maps permissions (``rw-p``)
    and pagemap present bit. PROT_NONE pages are not present to the CPU."""
    accessible = any(c in perms[:3] for c in "rwx")
    return PageRights(present=bool(present) and accessible, writable="w" in perms[:3],
                      user=True, nx="x" not in perms[:3],
                      source=source or "maps %s, pagemap present %d" % (perms, int(present)))


@dataclass(frozen=True)
class UserFault:
    """The outcome Linux delivers for one user access."""

    ok: bool
    vector: Optional[int]
    error_code: Optional[int]      # as delivered in the signal frame
    hardware_error_code: Optional[int]
    cr2: Optional[int]
    steps: Tuple[str, ...]


def _vma_allows(perms: str, access: AccessKind) -> bool:
    """access_error() for a not-present page (arch/x86/mm/fault.c)."""
    if access is AccessKind.WRITE:
        return "w" in perms[:3]
    return any(c in perms[:3] for c in "rwx")


def predict_user_access(address: int, access, size: int, pages: List[Tuple[str, bool]],
                        state: PagingState, address_bits: int = 48) -> UserFault:
    """What a CPL-3 access of ``size`` bytes at ``address`` ends in.

    Args:
        pages: (maps permissions, pagemap present) of the first and, if the
            access crosses a page boundary, the last page; ``("----", False)``
            for an address with no mapping (a kernel address).
        state: the machine's paging controls (:func:`host_paging_state`).
    """
    access = AccessKind(access) if not isinstance(access, AccessKind) else access
    steps: List[str] = []
    seg = check_segment_access(None, address, access, size, 3, CpuMode.LONG_64BIT,
                               "cs" if access is AccessKind.EXECUTE else "ds", loaded=True,
                               base=0, address_bits=address_bits)
    steps += [str(s) for s in seg.steps]
    if not seg.ok:
        return UserFault(False, seg.fault.vector, seg.error_code, seg.error_code, None,
                         tuple(steps))
    last = address + size - 1
    starts = [address] + ([last & ~0xFFF] if last >> 12 != address >> 12 else [])
    task_size = TASK_SIZE_MAX_5LEVEL if address_bits == 57 else TASK_SIZE_MAX_4LEVEL
    for va, (perms, present) in zip(starts, pages):
        rights = rights_from_maps(perms, present)
        result = check_page_access(rights, va, access, True, state)
        if result.fault is not None and not rights.present and perms != "----" and \
                _vma_allows(perms, access):
            steps.append("Linux maps the page first (access_error() lets a not-present %s "
                         "of a %s VMA through) and the access is retried" % (
                             access.value, perms))
            mapped = PageRights(True, "w" in perms[:3], True, "x" not in perms[:3],
                                source="after demand paging")
            result = check_page_access(mapped, va, access, True, state)
        steps += [str(s) for s in result.steps]
        if result.fault is not None:
            hardware = result.error_code.raw
            delivered = hardware
            if va >= task_size:
                delivered |= PF_PROT
                steps.append("Linux sets X86_PF_PROT for user accesses at or above "
                             "TASK_SIZE_MAX (%#x): delivered %#x" % (task_size, delivered))
            return UserFault(False, Fault.PF.vector, delivered, hardware, result.cr2,
                             tuple(steps))
    return UserFault(True, None, None, None, None, tuple(steps))
