"""A finding: something worth a look, a sentence with a stable code.

Every layer reports what looks wrong as data, never raised: a GDT slot or
an IDT gate (:mod:`ksinspect.tables`), a TSS (:mod:`ksinspect.task`), a
PEB, a loader list, a process list or a scanned ``_EPROCESS``
(:mod:`ksinspect.windows`). Each is a :class:`Finding`: its ``code`` is
stable for scripts (``anomaly-tss-busy``, ``list-loop``,
``module-unlinked``...), its ``message`` one sentence for a reader, and
``to_dict()`` gives ``{"code", "message"}``, so every command's JSON carries
findings alike.

A finding is also the ``str`` of its message: code written before findings
had codes (``"loops" in finding``, ``"Finding: " + finding``) keeps working,
and two findings are equal when their messages are. JSON goes through
``to_dict()``.
"""
from typing import Any, Iterable, List

__all__ = ["Finding", "finding_dicts"]


class Finding(str):
    """One finding: the message (this string itself) and its ``code``."""

    def __new__(cls, code: str, message: str) -> "Finding":
        self = super().__new__(cls, message)
        self.code = code
        return self

    @property
    def message(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return "Finding(%r, %r)" % (self.code, self.message)

    def __reduce__(self):
        return (Finding, (self.code, self.message))

    def within(self, prefix: str) -> "Finding":
        """The same finding, its message prefixed (``ImagePathName: ...``)."""
        return Finding(self.code, "%s: %s" % (prefix, self.message))

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


def finding_dicts(findings: Iterable[Any]) -> List[dict]:
    """``[{code, message}]`` for findings; a plain sentence (from a caller that
    made its own) gets the code ``other``."""
    return [f.to_dict() if hasattr(f, "to_dict") else {"code": "other", "message": str(f)}
            for f in findings]
