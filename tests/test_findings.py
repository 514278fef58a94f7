"""Findings (ksinspect.findings): a sentence with a stable code, one class
for the GDT/IDT/TSS findings and the Windows readers', so every command's
JSON carries findings in one ``{code, message}`` shape."""
import pickle

from ksinspect.tables import Finding as TableFinding
from ksinspect.findings import Finding, finding_dicts
from ksinspect.windows.strings import decode_utf16


def test_a_finding_is_its_message_with_a_code():
    f = Finding("list-loop", "load: list loops at 0x10")
    assert f == "load: list loops at 0x10" and "loops" in f and str(f) == f.message
    assert f.code == "list-loop"
    assert f.to_dict() == {"code": "list-loop", "message": "load: list loops at 0x10"}
    assert TableFinding is Finding          # one class, not two of one name
    assert f.within("module a.dll").to_dict() == {
        "code": "list-loop", "message": "module a.dll: load: list loops at 0x10"}
    copy = pickle.loads(pickle.dumps(f))
    assert copy.code == "list-loop" and copy == f


def test_plain_sentences_get_a_code_too():
    assert finding_dicts(["a", Finding("b", "c")]) == [
        {"code": "other", "message": "a"}, {"code": "b", "message": "c"}]


def test_string_findings_have_codes():
    # 0xD800 alone: an unpaired high surrogate (Unicode 15, §3.9 D71)
    _, findings = decode_utf16(b"\x00\xd8A")
    assert [f.code for f in findings] == ["string-odd-byte-count", "string-invalid-utf16"]
