"""Fleet triage: ksinspect's checks over many memory images, in this process or
on a Dask cluster (DESIGN.md: above ``windows/`` and ``live/``, below the CLI).

``triage_image(path, options)`` is the work for one image: a plain, picklable
function that returns a :class:`TriageRecord` and never raises for a bad
image. ``triage(paths, client=None, ...)`` runs it over many images and
yields the records as they complete: serially with ``workers=0`` (Dask is
not imported), on a local cluster it starts (``workers=N``), or on a
``distributed.Client`` given (an existing cluster). ``summarize(records)``
counts images by finding, the slowest images and the errors.
"""
from .engine import DEFAULT_RETRIES, Engine, triage
from .image import triage_image
from .record import (CODES, SCHEMA, VOLATILE_FIELDS, TimeLimitReached, TriageFinding,
                     TriageOptions, TriageRecord)
from .summary import Summary, summarize

__all__ = ["CODES", "DEFAULT_RETRIES", "Engine", "SCHEMA", "Summary", "TimeLimitReached",
           "TriageFinding", "TriageOptions", "TriageRecord", "VOLATILE_FIELDS", "summarize",
           "triage", "triage_image"]
