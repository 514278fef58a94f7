"""Every teaching notebook runs top to bottom (nbclient), on the shipped data.

Notebook dependencies (nbclient, nbformat, ipykernel, matplotlib) are in the
``test`` extra; without them this module is skipped so a core-only suite still
runs. A cell that raises fails the test. Notebooks 01 and 04 also use the
live machine (LAR/LSL, modify_ldt, machine code in an executable page; 04
compiles tests/programs/watch.c and calls.c with gcc and sets hardware,
software and guard-page breakpoints with ptrace, and says why it skips that
part where it cannot) and need Linux on x86-64. Notebook 05 reads the shipped
Wine samples (tests/data/wine) and builds a synthetic EPROCESS image; it needs
no Wine.
"""
import glob
import os
import platform
import sys

import pytest

if os.environ.get("KSINSPECT_SANITIZED"):
    # tools/sanitize_test.py (CI's slowest step): the notebooks call library paths the unit tests already run on the sanitized core.
    pytest.skip("not run under the sanitizers: the notebooks call library paths the unit tests already run on the sanitized core", allow_module_level=True)

import json
import re

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOK_DIR = os.path.join(os.path.dirname(HERE), "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))


def _cells(path, kind):
    with open(path, encoding="utf-8") as fh:
        return ["".join(c["source"]) for c in json.load(fh)["cells"] if c["cell_type"] == kind]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_markdown_has_no_accidental_headings(path):
    # A wrapped line that starts with "#DB" is a heading to some Markdown
    # renderers (issue 18 item 26): a heading is "#" at column 0 and a space.
    for text in _cells(path, "markdown"):
        fenced = False
        for line in text.splitlines():
            if line.lstrip().startswith("```"):
                fenced = not fenced
            if not fenced and line.lstrip().startswith("#"):
                assert re.match(r"#{1,6} \S", line), line


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_a_displayed_value_is_not_printed_too(path):
    # display(x) shows the picture and a table of the fields; printing
    # x.explain() beside it lists the same fields a third time.
    for text in _cells(path, "code"):
        printed = set(re.findall(r"print\((\w+)\.explain\(\)\)", text))
        shown = set(re.findall(r"display\((\w+)\)", text))
        assert not printed & shown, text[:80]


nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

LIVE = {"01-selectors-and-descriptors.ipynb", "04-debug-registers-and-breakpoints.ipynb"}
ON_LINUX_X86_64 = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def test_the_notebooks_are_there():
    names = [os.path.basename(p) for p in NOTEBOOKS]
    for prefix in ("01-", "02-", "03-", "04-", "05-"):
        assert any(n.startswith(prefix) for n in names), prefix


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path):
    name = os.path.basename(path)
    if name in LIVE and not ON_LINUX_X86_64:
        pytest.skip("%s uses the live machine: needs Linux on x86-64" % name)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": NOTEBOOK_DIR}})
    client.execute()          # raises CellExecutionError if any cell fails
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    # the notebooks teach with pictures: each shows at least one diagram or figure
    rich = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type in ("display_data", "execute_result")
            and ({"text/html", "image/png", "image/svg+xml"} & set(o.get("data", {})))]
    assert rich
