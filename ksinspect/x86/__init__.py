"""x86 value types: selectors, descriptors and gates, paging entries, DR6 and DR7.

Each value keeps its raw bits, decodes them once through the C core, and
can describe itself: ``str()`` in one line, ``explain()`` field by field
with the manual section, ``to_dict()`` for JSON, ``_repr_html_()`` in Jupyter.
"""
from .debugreg import DR6, DR7, Breakpoint, BreakpointSlot, Condition, encode_dr7
from .descriptor import (DescriptorAnomaly, DescriptorKind, DescriptorMode, Gate,
                         SegmentDescriptor, decode_descriptor_table)
from .paging_entry import (LEVEL_NAMES, PAT_DEFAULT, MemoryType, PagingEntry, PagingMode,
                           PteAnomaly, decode_paging_entries)
from .privilege import (PrivilegeCheck, check_call_gate, check_code_transfer, check_data_load,
                        check_stack_load)
from .selector import Selector, TableIndicator

__all__ = [
    "Breakpoint", "BreakpointSlot", "Condition", "DR6", "DR7", "DescriptorAnomaly",
    "DescriptorKind", "DescriptorMode", "Gate", "LEVEL_NAMES", "MemoryType", "PAT_DEFAULT",
    "PagingEntry", "PagingMode", "PrivilegeCheck", "PteAnomaly", "SegmentDescriptor", "Selector",
    "TableIndicator", "check_call_gate", "check_code_transfer", "check_data_load",
    "check_stack_load", "decode_descriptor_table", "decode_paging_entries", "encode_dr7",
]
