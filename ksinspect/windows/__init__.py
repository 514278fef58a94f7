"""Windows structures: layouts per build as data, a typed Struct view, and decoders
of the process structures (PEB, TEB, loader lists, process parameters)."""
from .layout import Field, Layout, StructLayout
from .layout_files import available_layouts, load_isf, load_layout
from .struct import Struct, read_struct

__all__ = ["Field", "Layout", "Struct", "StructLayout", "available_layouts", "load_isf",
           "load_layout", "read_struct"]
