"""Running :func:`~ksinspect.triage.image.triage_image` over many images.

Three engines behind one interface (:class:`Engine`):

* in this process (``workers=0``): one image after the other; Dask is not
  imported at all;
* a local Dask cluster that the engine starts (``workers=N``: N worker
  processes of one thread each, so N images at once) and closes;
* an existing Dask cluster: a ``distributed.Client`` given, or the address
  of its scheduler (``scheduler="tcp://host:8786"``).

Only paths cross the scheduler, never image bytes: each worker opens (mmaps)
the image itself, so the paths must be readable where the workers run. Dask
does the scheduling and the retries: a task whose worker dies is run again
by the scheduler (``distributed.scheduler.allowed-failures``, set to
``retries`` on a cluster started here), one that raises is resubmitted up to
``retries`` times (``Client.submit(retries=)``). ``attempts`` in a record is
how many times the cluster ran the task, read from the scheduler's own
counters when the result arrives.
"""
import contextlib
import os
import signal
import threading
import uuid
from dataclasses import replace
from typing import Any, Dict, Iterable, Iterator, List, Optional

from .. import __version__
from ..errors import KsinspectError, UnsupportedError
from .image import triage_image
from .record import TriageOptions, TriageRecord

#: Retries per image on a cluster: after a worker died under it or it raised.
DEFAULT_RETRIES = 2
#: How long a local cluster started here waits for a dead worker's nanny to bring
#: a new worker up before it forgets (and closes) that nanny. Dask's default,
#: 15 s, was shorter than a restart (Python, Dask and ksinspect imported afresh)
#: on a loaded 2-core machine, so one killed worker left the run with one fewer
#: for good. Read by Dask when the worker is lost, so kept while the cluster runs.
LOST_WORKER_TIMEOUT = "180s"
_KEY = "ksinspect-triage"


class ClusterError(KsinspectError, ConnectionError):
    """The Dask cluster cannot be reached or cannot run ksinspect's tasks."""


def unique_paths(paths: Iterable[Any]) -> List[str]:
    """Absolute paths, each once, in the order given (an image given twice is
    triaged once)."""
    return list(dict.fromkeys(os.path.abspath(os.fspath(p)) for p in paths))


def absolute_options(options: TriageOptions) -> TriageOptions:
    """The options with the folders and files they name made absolute, so that
    workers with another working directory read the same ones."""
    changes = {}
    if options.symbols_dir:
        changes["symbols_dir"] = os.path.abspath(options.symbols_dir)
    if options.layout and os.path.exists(options.layout):
        changes["layout"] = os.path.abspath(options.layout)
    return replace(options, **changes) if changes else options


def run_on_worker(path: str, options: TriageOptions) -> TriageRecord:
    """:func:`triage_image` with the worker that ran it named in the record."""
    record = triage_image(path, options)
    try:
        from distributed import get_worker
        address = get_worker().address
    except (ImportError, ValueError):
        address = "local"
    return replace(record, worker="%s pid %d" % (address, os.getpid()))


def _scheduler_attempts():
    """A function the scheduler runs (pickled by value, so the scheduler needs
    no ksinspect): per task, (runs cut short by a dying worker, retries used
    after an exception): the scheduler's ``suspicious`` and ``retries`` counters."""
    def attempts(dask_scheduler, keys, retries):
        out = {}
        for key in keys:
            ts = dask_scheduler.tasks.get(key)
            if ts is not None:
                out[key] = (ts.suspicious, max(retries - ts.retries, 0))
        return out
    return attempts


def _attempts(counters: Optional[tuple], died_last: bool) -> int:
    """How many times a task ran: each run a worker died under, each retried
    exception, and the last run unless it is one of those (KilledWorker)."""
    if counters is None:
        return 1
    suspicious, retried = counters
    return suspicious + retried + (0 if died_last else 1)


def _worker_versions():
    """A function each worker runs (by value): the ksinspect version it imports."""
    def version():
        try:
            import ksinspect
            return ksinspect.__version__
        except ImportError as exc:
            return "not importable: %s" % exc
    return version


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise UnsupportedError("a Dask cluster needs the fleet extra: pip install "
                               "\"ksinspect[fleet]\" (or run in this process with "
                               "--workers 0)") from None
    return distributed


def dask_available() -> bool:
    """Whether ``dask.distributed`` can be imported (without importing it)."""
    import importlib.util
    return importlib.util.find_spec("distributed") is not None


@contextlib.contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Start worker processes with SIGINT ignored (they inherit it): Ctrl-C in a
    terminal reaches the whole process group, and the run, not each worker,
    decides what it means. The CLI closes the cluster instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


class Engine:
    """Where the images are triaged; a context manager that closes what it started.

    Args:
        workers: 0 for this process; N for a local cluster of N worker
            processes; None for one per core (``os.cpu_count()``).
        scheduler: the address of an existing cluster's scheduler.
        client: an existing ``distributed.Client`` (not closed here).
        retries: see :data:`DEFAULT_RETRIES`.
        connect_timeout: seconds to reach an existing scheduler.
    """

    def __init__(self, workers: Optional[int] = 0, scheduler: Optional[str] = None,
                 client: Any = None, retries: int = DEFAULT_RETRIES,
                 connect_timeout: float = 10.0):
        if workers is not None and workers < 0:
            raise ValueError("workers %d is negative" % workers)
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.scheduler = scheduler
        self.client = client
        self.retries = retries
        self.connect_timeout = connect_timeout
        self._own_client = False
        self._cluster = None
        self._local = False
        self._pending: set = set()
        self._serial_running = 0
        self._threads: Dict[str, int] = {}
        self._config: Any = None

    @property
    def started_cluster(self) -> bool:
        """Whether this engine started (and so closes) a local cluster."""
        return self._local

    @property
    def serial(self) -> bool:
        return self.client is None and self.scheduler is None and self.workers == 0

    def describe(self) -> str:
        if self.serial:
            return "in this process"
        if self._local:
            return "on a local Dask cluster of %d worker processes" % self.workers
        return "on the Dask cluster at %s" % (self.scheduler or getattr(
            getattr(self.client, "scheduler", None), "address", "?"))

    # -- lifetime -------------------------------------------------------------------------------

    def __enter__(self) -> "Engine":
        if self.serial:
            return self
        if self.client is not None:         # the caller's client: checked, kept open
            self._check_workers()
            return self
        distributed = _import_distributed()
        self._own_client = True             # closed by close(), from here on
        if self.scheduler is not None:
            try:
                self.client = distributed.Client(self.scheduler, timeout=self.connect_timeout)
            except (OSError, TimeoutError) as exc:
                raise ClusterError("cannot reach the Dask scheduler at %s: %s" % (
                    self.scheduler, exc)) from None
        else:
            import dask
            import logging
            config = {"distributed.scheduler.allowed-failures": self.retries}
            from dask.utils import parse_timedelta
            key = "distributed.deploy.lost-worker-timeout"
            if parse_timedelta(dask.config.get(key, 0)) < parse_timedelta(LOST_WORKER_TIMEOUT):
                self._config = dask.config.set({key: LOST_WORKER_TIMEOUT})
            try:
                with dask.config.set(config), _children_ignore_sigint():
                    # The scheduler's HTTP server (health, metrics; the dashboard when
                    # bokeh is installed) on a free port: 8787 may be another cluster's.
                    self._cluster = distributed.LocalCluster(
                        n_workers=self.workers, threads_per_worker=1, processes=True,
                        dashboard_address=":0", worker_dashboard_address=None,
                        silence_logs=logging.CRITICAL)
                self._local = True
                self.client = distributed.Client(self._cluster)
            except BaseException:
                self.close()
                raise
        try:
            self._check_workers()
        except BaseException:
            self.close()
            raise
        return self

    def _check_workers(self) -> None:
        try:
            versions = self.client.run(_worker_versions())
            self._threads = dict(self.client.nthreads())
        except Exception as exc:    # noqa: BLE001 - any failure of the cluster itself
            raise ClusterError("the Dask cluster cannot run a function: %s" % exc) from None
        wrong = {w: v for w, v in versions.items() if v != __version__}
        if wrong:
            raise ClusterError("workers without ksinspect %s: %s" % (__version__, ", ".join(
                "%s (%s)" % (w, v) for w, v in sorted(wrong.items()))))

    def close(self) -> None:
        """Cancel what is still queued and close the client and cluster started here."""
        client = self.client
        if self._own_client:
            self.client = None          # a client given by the caller stays theirs
        if client is not None and self._pending:
            with contextlib.suppress(Exception):
                client.cancel(list(self._pending), force=True)
        self._pending = set()
        if self._own_client and client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            with contextlib.suppress(Exception):
                cluster.close(timeout=20)
        if self._config is not None:
            config, self._config = self._config, None
            config.__exit__(None, None, None)

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running ---------------------------------------------------------------------------------

    def running(self) -> int:
        """Images being processed now (as the scheduler sees them)."""
        if self.serial:
            return self._serial_running
        try:
            processing = self.client.processing()
        except Exception:   # noqa: BLE001 - a progress figure is not worth failing for
            return 0
        # The scheduler also counts tasks queued on a worker behind the running one.
        return sum(min(self._threads.get(worker, 1), sum(
            1 for k in keys if isinstance(k, tuple) and k[:1] == (_KEY,)))
            for worker, keys in processing.items())

    def run(self, paths: Iterable[Any], options: Optional[TriageOptions] = None
            ) -> Iterator[TriageRecord]:
        """Yield one record per distinct image, in the order they complete."""
        options = absolute_options(options or TriageOptions())
        todo = unique_paths(paths)
        if self.serial:
            for path in todo:
                self._serial_running = 1
                record = triage_image(path, options)
                self._serial_running = 0
                yield record
            return
        yield from self._run_dask(todo, options)

    def _run_dask(self, todo: List[str], options: TriageOptions) -> Iterator[TriageRecord]:
        from distributed import as_completed
        run = uuid.uuid4().hex[:12]
        futures = {}
        for i, path in enumerate(todo):
            future = self.client.submit(run_on_worker, path, options, key=(_KEY, run, i),
                                        retries=self.retries, pure=False)
            futures[future.key] = (future, path)
        self._pending = set(f for f, _ in futures.values())
        attempts_of = _scheduler_attempts()
        done = as_completed(list(self._pending), with_results=True, raise_errors=False)
        for batch in done.batches():
            keys = [future.key for future, _ in batch]
            try:
                attempts = self.client.run_on_scheduler(attempts_of, keys=keys,
                                                        retries=self.retries)
            except Exception:   # noqa: BLE001 - e.g. run_on_scheduler disabled
                attempts = {}
            for future, result in batch:
                path = futures[future.key][1]
                if isinstance(result, tuple) and len(result) == 3:
                    result = result[1]          # raise_errors=False: (type, value, traceback)
                died = type(result).__name__ == "KilledWorker"
                tries = _attempts(attempts.get(future.key), died)
                if isinstance(result, TriageRecord):
                    record = replace(result, attempts=tries)
                else:
                    why = ("the worker process running it died each time (KilledWorker)" if died
                           else ("%s: %s" % (type(result).__name__, result)).replace("\n", " "))
                    record = TriageRecord(path, error="the cluster could not run it after %d "
                                          "attempt(s): %s" % (tries, why), attempts=tries)
                self._pending.discard(future)
                future.release()
                yield record


def triage(paths: Iterable[Any], client: Any = None, options: Optional[TriageOptions] = None,
           workers: Optional[int] = 0, scheduler: Optional[str] = None,
           retries: int = DEFAULT_RETRIES) -> Iterator[TriageRecord]:
    """Triage many images; yield one :class:`TriageRecord` per image as each completes.

    Args:
        paths: image files (each distinct path once).
        client: a ``distributed.Client`` to run on (kept open).
        options: :class:`TriageOptions` shared by every image.
        workers: without a client: 0 runs in this process, N starts a local
            cluster of N worker processes (closed at the end), None one per core.
        scheduler: the address of an existing cluster's scheduler instead.
        retries: attempts after the first, per image, on a cluster.

    Raises:
        UnsupportedError: a cluster is asked for and Dask is not installed.
        ClusterError: the cluster cannot be reached or lacks ksinspect.
    """
    with Engine(workers, scheduler, client, retries) as engine:
        yield from engine.run(paths, options)


__all__ = ["ClusterError", "DEFAULT_RETRIES", "Engine", "dask_available", "run_on_worker",
           "triage", "unique_paths"]
