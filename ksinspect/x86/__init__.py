"""x86 value types: selectors, descriptors and gates, paging entries, DR6 and DR7.

Each value keeps its raw bits, decodes them once through the C core, and
can describe itself: ``str()`` in one line, ``explain()`` field by field
with the manual section, ``to_dict()`` for JSON, ``_repr_html_()`` in Jupyter.

The names below are imported from their modules when first asked for
(PEP 562): a command that needs paging entries does not pay for the debug
registers, descriptors and privilege checks (tens of ms of enums and
dataclasses at start).
"""
import importlib

_HOME = {
    "_batch": ("DecodedBatch",),
    "_bits": ("Drawable", "flag_names"),
    "debugreg": ("DR6", "DR7", "Breakpoint", "BreakpointSlot", "Condition", "encode_dr7"),
    "descriptor": ("DescriptorAnomaly", "DescriptorKind", "DescriptorMode", "Gate",
                   "SegmentDescriptor", "decode_descriptor_table"),
    "paging_entry": ("LEVEL_NAMES", "PAT_DEFAULT", "MemoryType", "PagingEntry", "PagingMode",
                     "PteAnomaly", "decode_paging_entries"),
    "privilege": ("PrivilegeCheck", "check_call_gate", "check_code_transfer", "check_data_load",
                  "check_stack_load"),
    "selector": ("Selector", "TableIndicator"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    value = getattr(importlib.import_module("." + module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_MODULE_OF))
