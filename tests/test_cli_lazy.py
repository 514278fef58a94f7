"""The command line imports only the command module it runs (issue 14: the
first row of `ksinspect maps` within 0.2 s; importing every command module
took 0.4-0.7 s). The table of names in ksinspect.cli must say what each
module's register() really adds."""
import argparse
import importlib
import subprocess
import sys

import pytest

from ksinspect import cli


class _Recorder:
    def __init__(self, sub):
        self.sub, self.names = sub, []

    def add_parser(self, name, **kwargs):
        self.names.append(name)
        return self.sub.add_parser(name, **kwargs)


@pytest.mark.parametrize("module,names", cli.COMMANDS)
def test_the_table_names_what_each_module_registers(module, names):
    sub = argparse.ArgumentParser().add_subparsers()
    recorder = _Recorder(sub)
    importlib.import_module("ksinspect.commands." + module).register(
        recorder, argparse.ArgumentParser(add_help=False))
    assert tuple(recorder.names) == names


def test_the_table_covers_every_command_module():
    import importlib
    import pkgutil
    import ksinspect.commands as commands
    # A command module is one that registers subcommands (options and
    # examples are shared helpers).
    modules = {m.name for m in pkgutil.iter_modules(commands.__path__)
               if not m.name.startswith("_") and hasattr(
                   importlib.import_module("ksinspect.commands." + m.name), "register")}
    assert modules == {module for module, _names in cli.COMMANDS}


def _subcommands(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def test_a_named_command_builds_only_its_module():
    assert _subcommands(cli.build_parser(["--debug", "maps", "x.elf"])) == [
        "vtop", "maps", "ptov", "read"]
    everything = [name for _module, names in cli.COMMANDS for name in names]
    for argv in ([], ["--help"], ["--version"], ["nosuch", "maps"], ["--", "maps"], None):
        assert _subcommands(cli.build_parser(argv)) == everything


def test_maps_imports_neither_other_commands_nor_xml(tmp_path):
    # A raw image of one page table that maps nothing: the command runs to
    # its end; what it imported on the way is printed by the child.
    image = tmp_path / "zero.raw"
    image.write_bytes(bytes(0x2000))
    code = ("import sys; from ksinspect.cli import main; "
            "status = main(['maps', sys.argv[1], '--cr3', '0x1000', '--paging-mode', '4level']); "
            "print(sorted(m for m in sys.modules if m.startswith(('ksinspect.commands', "
            "'ksinspect.live', 'ksinspect.windows', 'ksinspect.triage', 'xml', 'http', 'email', "
            "'ksinspect.memory.kdump', 'ksinspect.memory.minidump', 'ksinspect.x86.'))), "
            "file=sys.stderr); "
            "sys.exit(status)")
    proc = subprocess.run([sys.executable, "-c", code, str(image)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    imported = eval(proc.stderr.strip().splitlines()[-1])
    # Of the values, only the paging entries (ksinspect.x86 imports its
    # modules when a name of theirs is asked for).
    assert imported == ["ksinspect.commands", "ksinspect.commands._args",
                        "ksinspect.commands.examples", "ksinspect.commands.options", "ksinspect.commands.paging",
                        "ksinspect.x86._batch", "ksinspect.x86._bits",
                        "ksinspect.x86.paging_entry"]


def test_the_value_package_gives_every_name_it_lists():
    import ksinspect.x86 as x86
    # The list as it stood when the package imported every module eagerly
    # (with what other layers share: DecodedBatch, Drawable, flag_names).
    assert x86.__all__ == sorted([
        "Breakpoint", "BreakpointSlot", "Condition", "DR6", "DR7", "DecodedBatch",
        "DescriptorAnomaly", "Drawable",
        "DescriptorKind", "DescriptorMode", "Gate", "LEVEL_NAMES", "MemoryType", "PAT_DEFAULT",
        "PagingEntry", "PagingMode", "PrivilegeCheck", "PteAnomaly", "SegmentDescriptor",
        "Selector", "TableIndicator", "check_call_gate", "check_code_transfer",
        "check_data_load", "check_stack_load", "decode_descriptor_table",
        "decode_paging_entries", "encode_dr7", "flag_names"])
    for name in x86.__all__:
        home = importlib.import_module("ksinspect.x86." + x86._MODULE_OF[name])
        assert getattr(x86, name) is getattr(home, name)
    with pytest.raises(AttributeError):
        x86.no_such_name
