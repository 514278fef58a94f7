"""What a triage run found, across its images: images by finding, the slowest
images, the errors, the retries."""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Tuple

from .record import TriageRecord

SLOWEST = 5


@dataclass
class Summary:
    """Counts over the records of a run (built by :func:`summarize`).

    Attributes:
        images: records seen; failed: those with an ``error``.
        by_code: finding code -> the images that have it (paths, in order).
        slowest: (seconds, path) of the slowest images, slowest first.
        errors: (path, error) of each failed image.
        retried: (attempts, path) of each image a cluster ran more than once.
        seconds: the images' time summed (not the run's wall time).
    """

    images: int = 0
    failed: int = 0
    by_code: Dict[str, List[str]] = field(default_factory=OrderedDict)
    slowest: List[Tuple[float, str]] = field(default_factory=list)
    errors: List[Tuple[str, str]] = field(default_factory=list)
    retried: List[Tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, record: TriageRecord) -> None:
        self.images += 1
        self.seconds += record.seconds
        if record.error:
            self.failed += 1
            self.errors.append((record.path, record.error))
        for code in record.codes:
            self.by_code.setdefault(code, []).append(record.path)
        if record.attempts > 1:
            self.retried.append((record.attempts, record.path))
        self.slowest = sorted(self.slowest + [(record.seconds, record.path)],
                              reverse=True)[:SLOWEST]

    def to_dict(self) -> dict:
        return {"images": self.images, "failed": self.failed, "seconds": round(self.seconds, 6),
                "by_code": {code: len(paths) for code, paths in self.by_code.items()},
                "images_by_code": {code: list(paths) for code, paths in self.by_code.items()},
                "slowest": [{"seconds": s, "path": p} for s, p in self.slowest],
                "errors": [{"path": p, "error": e} for p, e in self.errors],
                "retried": [{"attempts": a, "path": p} for a, p in self.retried]}


def summarize(records: Iterable[TriageRecord]) -> Summary:
    summary = Summary()
    for record in records:
        summary.add(record)
    return summary
