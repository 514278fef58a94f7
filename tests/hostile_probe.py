"""Run the ksinspect command line as a hostile-input case: ``python
tests/hostile_probe.py ARGS...`` behaves exactly like ``ksinspect ARGS...``
(same entry point, same exit status, same streams) and, at exit, writes
this process's peak RSS (VmHWM, in KiB) to the file named by
$KSI_PROBE_PEAK, so a test can bound the memory a case used. With
$KSI_PROBE_READY (a descriptor), one byte is written there when the
interpreter has started and the entry point is imported, just before it runs."""
import atexit
import os
import sys


def _write_peak() -> None:
    target = os.environ.get("KSI_PROBE_PEAK")
    if not target:
        return
    try:
        with open("/proc/self/status") as fh:
            peak = fh.read().split("VmHWM:")[1].split()[0]
        with open(target, "w") as out:
            out.write(peak)
    except (OSError, IndexError):
        pass


atexit.register(_write_peak)
sys.argv[0] = "ksinspect"
from ksinspect._entry import main  # noqa: E402  (after the exit hook, by design)

if os.environ.get("KSI_PROBE_READY"):
    # The interpreter's own start-up (and the console script's one import)
    # is over: what follows is ksinspect's (for the Ctrl-C test).
    os.write(int(os.environ["KSI_PROBE_READY"]), b"r")
sys.exit(main())
