"""The layer order of DESIGN.md (docs/architecture.md), enforced on every import in ksinspect/.

Imports are read with ``ast`` (those inside functions too: a lazy import
is still an arrow), so the checks need nothing imported:

* no import circles between modules (importing ``a.b.c`` also runs the
  package ``a.b``: that counts as an arrow to it);
* no arrow from a lower layer to an upper one (the ranks below are
  DESIGN.md's list, bottom first, with the views under the values they draw);
* only the layers docs/architecture.md allows touch the C boundary
  (``ksinspect._native``), each only the C concerns it owns there, and only
  the boundary loads the compiled core;
* no module imports another module's ``_private`` name, nor a private module
  (``x86/_bits.py``) of a package it is not in;
* every import names a module that exists (a lazy one fails only when it runs).

ALLOWED lists the exact edges that still break a rule, each with why; it
may only shrink (a listed edge that no longer exists fails the test too).
"""
import ast
import os
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ksinspect")

# DESIGN.md, bottom first. A module takes the rank of its longest listed prefix.
RANKS = {
    "ksinspect": 0,                 # the package itself: its version and nothing else
    "ksinspect._version": 0,
    "ksinspect.errors": 0,
    "ksinspect.findings": 0,        # what looks wrong, as data (every layer's)
    "ksinspect.modes": 0,           # the paging-mode facts: data, no imports
    "ksinspect.safe_text": 0,       # escaping hostile text
    "ksinspect.text_input": 0,      # bounded reading of text files
    "ksinspect._core": 1,           # the compiled C core ...
    "ksinspect._percall": 1,        # ... its per-call CPython glue (csrc/python/) ...
    "ksinspect._native": 1,         # ... and its one boundary package
    "ksinspect.views": 2,           # explanations, HTML, SVG: take values as arguments
    "ksinspect.x86": 3,             # the value types
    "ksinspect.symbols": 3,         # symbol tables (values the table walkers attach)
    "ksinspect.memory": 4,
    "ksinspect.paging": 5,
    "ksinspect.tables": 6,
    "ksinspect.table_source": 6,
    "ksinspect.access": 6,          # the whole path of an access (tables + paging)
    "ksinspect.task": 6,            # the TSS and task switches
    "ksinspect.linux_layout": 6,    # Linux's regions of an address space (paging + symbols)
    "ksinspect.transfer": 6,        # far CALL/JMP through gates, INT n, task switches
    "ksinspect.windows": 7,
    "ksinspect.live": 8,
    "ksinspect.render": 9,          # command-line output
    "ksinspect.triage": 9,          # one record per image, from every layer's checks
    "ksinspect.commands": 10,
    "ksinspect._entry": 10,
    "ksinspect.cli": 10,
    "ksinspect.__main__": 10,
}
# docs/architecture.md, "Who touches the C core": only the boundary imports the
# compiled module; the layers that decode in C may import any boundary module,
# memory/ and live/ only the one C concern each owns (the kdump page index; the
# instructions and system calls run on this CPU). The boundary package itself
# (its loader) comes with any of its modules.
COMPILED_USERS = ("ksinspect._native",)
NATIVE_USERS: Dict[str, Optional[Tuple[str, ...]]] = {
    "ksinspect._native": None,          # None: any boundary module
    "ksinspect.x86": None,
    "ksinspect.paging": None,
    "ksinspect.windows": None,
    "ksinspect.memory": ("ksinspect._native.kdump",),
    "ksinspect.live": ("ksinspect._native.live", "ksinspect._native.cpu_probe"),
}


def _touches_the_core_unapproved(importer: str, target: str) -> bool:
    """True when importer -> target reaches the C core against the rule above."""
    if target in COMPILED:
        return not importer.startswith(COMPILED_USERS)
    if target != "ksinspect._native" and not target.startswith("ksinspect._native."):
        return False
    layers = [p for p in NATIVE_USERS if importer == p or importer.startswith(p + ".")]
    if not layers:
        return True
    allowed = NATIVE_USERS[max(layers, key=len)]
    return allowed is not None and target != "ksinspect._native" and target not in allowed


# Edges that still break a rule at this commit (owned by other work in
# progress); the test fails when one disappears, so the list only shrinks.
ALLOWED: Dict[Tuple[str, str], str] = {}


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _modules() -> Dict[str, str]:
    found = {}
    for directory, _dirs, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                found[_module_name(path)] = path
    return found


MODULES = _modules()
COMPILED = ("ksinspect._core", "ksinspect._percall")     # count as modules


def _imports(module: str) -> Iterator[Tuple[str, Optional[str]]]:
    """(imported module, imported name or None) for every import statement."""
    path = MODULES[module]
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[:len(parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                full = "%s.%s" % (target, alias.name)
                if full in MODULES or full in COMPILED:
                    yield full, None
                else:
                    yield target, alias.name


def _known(target: str) -> Optional[str]:
    """The ksinspect module an import names (the compiled _core counts as one)."""
    if target in COMPILED:
        return target
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target if target in MODULES else None


def _private_module(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return last.startswith("_") and not last.startswith("__")


def _graph() -> Tuple[Dict[str, Set[str]], List[Tuple[str, str, str]], List[Tuple[str, str]]]:
    edges: Dict[str, Set[str]] = {m: set() for m in MODULES}
    private = []
    missing = []
    for module in MODULES:
        for target, name in _imports(module):
            if not target.startswith("ksinspect"):
                continue
            if target not in MODULES and target not in COMPILED:
                missing.append((module, target))     # imports a module that is not there
            found = _known(target)
            if found is None or found == module:
                continue
            edges[module].add(found)
            # Importing a.b.c runs the package a.b first: an arrow to each
            # package on the way that the importer is not itself inside.
            parts = found.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if not module.startswith(parent + ".") and module != parent:
                    edges[module].add(parent)
            if name and name.startswith("_") and not name.startswith("__"):
                private.append((module, found, name))
            # A private module (x86/_bits.py) is its package's own: importing it
            # from outside that package is importing a private name too.
            package = found.rsplit(".", 1)[0]
            if _private_module(found) and module != package and \
                    not module.startswith(package + "."):
                private.append((module, found, found.rsplit(".", 1)[-1]))
    return edges, private, missing


EDGES, PRIVATE, MISSING = _graph()


def rank(module: str) -> int:
    best = None
    for prefix, value in RANKS.items():
        # "ksinspect" is the package's own __init__ only, not a catch-all.
        if module == prefix or (prefix != "ksinspect" and module.startswith(prefix + ".")):
            if best is None or len(prefix) > len(best):
                best = prefix
    assert best is not None, "%s has no rank: add its layer to RANKS" % module
    return RANKS[best]


def _cycles() -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in EDGES.get(v, ()):
            if (v, w) in ALLOWED:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(EDGES):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    for module in MODULES:
        rank(module)


def test_no_import_circles():
    assert _cycles() == []


def test_no_arrow_points_up():
    upward = sorted((m, t) for m, targets in EDGES.items() for t in targets
                    if rank(t) > rank(m) and (m, t) not in ALLOWED)
    assert upward == [], "a lower layer imports an upper one"


def _core_edges() -> List[Tuple[str, str]]:
    return sorted((m, t) for m, targets in EDGES.items() for t in targets
                  if _touches_the_core_unapproved(m, t) and (m, t) not in ALLOWED)


def test_only_the_allowed_layers_touch_the_c_core():
    assert _core_edges() == []


def test_every_import_names_a_module_that_exists():
    """A lazy import of a module that is not there fails only when its line runs
    (transfer/values.py once imported ``.views.html``, ksinspect.transfer.views)."""
    assert MISSING == []


def test_no_module_imports_another_modules_private_names():
    assert [p for p in PRIVATE if (p[0], p[1]) not in ALLOWED] == []


def test_each_allowed_edge_still_exists():
    gone = [edge for edge in sorted(ALLOWED) if edge[1] not in EDGES[edge[0]]]
    assert gone == [], "gone: remove them from ALLOWED"


def _breaks_a_rule(importer: str, target: str) -> bool:
    if rank(target) > rank(importer):
        return True
    if _touches_the_core_unapproved(importer, target):
        return True
    if any((m, t) == (importer, target) for m, t, _name in PRIVATE):
        return True
    return any(importer in c and target in c for c in _cycles_with(importer, target))


def _cycles_with(importer: str, target: str) -> List[List[str]]:
    """The circles the edge importer -> target would close (ALLOWED aside)."""
    saved = dict(ALLOWED)
    try:
        del ALLOWED[(importer, target)]
        return _cycles()
    finally:
        ALLOWED.clear()
        ALLOWED.update(saved)


def test_each_allowed_edge_breaks_a_rule():
    """An edge that breaks no rule has no place in ALLOWED (it would hide a
    later change that makes it break one)."""
    idle = [edge for edge in sorted(ALLOWED) if not _breaks_a_rule(*edge)]
    assert idle == [], "these break no rule: remove them from ALLOWED"


def test_the_checks_can_fail():
    # The rules run on a graph with a planted upward arrow and circle.
    EDGES["ksinspect.x86.selector"].add("ksinspect.cli")
    EDGES["ksinspect.cli"].add("ksinspect.x86.selector")
    try:
        assert _cycles()
        assert any(rank(t) > rank(m) for m, ts in EDGES.items() for t in ts
                   if (m, t) not in ALLOWED)
    finally:
        EDGES["ksinspect.x86.selector"].discard("ksinspect.cli")
        EDGES["ksinspect.cli"].discard("ksinspect.x86.selector")


@pytest.mark.parametrize("importer, target", [
    ("ksinspect.tables", "ksinspect._native.segment"),      # a layer that owns no C concern
    ("ksinspect.commands.paging", "ksinspect._native"),
    ("ksinspect.render", "ksinspect._native.walk"),
    ("ksinspect.memory.image", "ksinspect._native.walk"),   # memory/ owns only the kdump index
    ("ksinspect.live.linux", "ksinspect._native.kdump"),    # live/ owns only this CPU's probes
    ("ksinspect.x86.selector", "ksinspect._core"),          # only the boundary loads the core
    ("ksinspect.live.cpu_probe", "ksinspect._percall"),
])
def test_the_core_rule_catches_a_new_edge(importer, target):
    EDGES[importer].add(target)
    try:
        assert _core_edges() == [(importer, target)]
    finally:
        EDGES[importer].discard(target)


def test_the_core_rule_is_met_by_the_edges_it_approves():
    """The C concerns memory/ and live/ own are real imports (the rule is not
    written for modules that do not reach C)."""
    assert "ksinspect._native.kdump" in EDGES["ksinspect.memory.kdump"]
    assert "ksinspect._native.live" in EDGES["ksinspect.live.linux"]
    assert "ksinspect._native.cpu_probe" in EDGES["ksinspect.live.cpu_probe"]
    for importer in ("ksinspect.memory.kdump", "ksinspect.live.linux", "ksinspect.live.cpu_probe"):
        assert not any(_touches_the_core_unapproved(importer, t) for t in EDGES[importer])


def test_only_the_layout_loader_reads_isf():
    """windows/layout.py is the model; windows/layout_files.py finds, loads and
    checks layout files, and is the one module that turns ISF into the model."""
    importers = sorted(m for m, targets in EDGES.items() if "ksinspect.windows.isf" in targets)
    assert importers == ["ksinspect.windows.layout_files"]
    assert not any(t.startswith("ksinspect.windows.layout_files")
                   for t in EDGES["ksinspect.windows.layout"])
