"""Builders of test inputs, written from the specifications (the ELF gABI,
LiME, QEMU's note, the Intel SDM's paging formats, the Windows layouts), not
from ksinspect: what they plant is the expected value.

* :mod:`.image_builder` -- raw, LiME and ELF cores with a QEMU CPU-state note;
* :mod:`.pagetable_builder` -- page tables in every x86 paging mode;
* :mod:`.windows_image_builder` -- a process's memory: PEB, TEB, loader list;
* :mod:`.eprocess_image_builder` -- a kernel image with EPROCESS lists;
* :mod:`.descriptors` -- segment descriptors and gates packed from their fields.

Test files import them as ``from builders.pagetable_builder import ...``
(pytest puts tests/ on sys.path).
"""
