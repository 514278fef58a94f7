"""Fleet triage throughput: images per second in this process and on a local
Dask cluster of 1 and 2 worker processes, the scheduler's cost per image,
and peak RSS per worker. Not a test.

    python bench/triage.py [--copies N] [--full CORE.elf.xz ...]

N copies of each shipped guest (tests/data/qemu/*/core-trimmed.elf.xz) are
laid out in a temporary folder, one folder per guest so ``symbols_dir``
finds each kallsyms, then triaged with ``workers=0``, 1 and 2 (the cluster's
start-up is timed apart from the run). The scheduler's cost is the time per
task of a no-op task over the same number of paths on the same cluster.
``--full`` adds the per-step times of whole guest cores (e.g. the 151 MB
cores tools/make_qemu_fixture.py leaves in ~/.cache/ksinspect-fixtures/work/),
decompressed once to a temporary ELF first, so the costing in the README can
say which steps scale with the image's size and which with its page tables.
"""
import argparse
import hashlib
import lzma
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ksinspect.triage import TriageOptions, triage, triage_image      # noqa: E402
from ksinspect.triage.engine import Engine                            # noqa: E402

QEMU = os.path.join(ROOT, "tests", "data", "qemu")
PROFILES = ("x86_64-4level", "x86_64-5level", "i386-pae", "i386-2level")


def lay_out(folder, copies):
    paths = []
    for i in range(copies):
        for profile in PROFILES:
            target = os.path.join(folder, "c%03d" % i, profile)
            os.makedirs(target)
            path = os.path.join(target, "core.elf.xz")
            shutil.copy(os.path.join(QEMU, profile, "core-trimmed.elf.xz"), path)
            paths.append(path)
    return paths


def peak_rss_kib():
    """This process's peak resident set (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_seconds():
    """User + system CPU time of this process so far."""
    t = os.times()
    return t.user + t.system


def noop(path):
    return os.path.getsize(path)


def run_cluster(workers, paths, options):
    started = time.perf_counter()
    with Engine(workers=workers) as engine:
        startup = time.perf_counter() - started
        client = engine.client
        # Warm each worker (imports, kallsyms cache) like the serial run's first pass.
        list(engine.run(paths[:len(PROFILES) * workers], options))
        workers_before = client.run(cpu_seconds)
        client_before = cpu_seconds()
        started = time.perf_counter()
        records = list(engine.run(paths, options))
        wall = time.perf_counter() - started
        client_cpu = cpu_seconds() - client_before
        workers_cpu = sum(v - workers_before.get(w, 0.0)
                          for w, v in client.run(cpu_seconds).items())
        started = time.perf_counter()
        futures = client.map(noop, paths, pure=False)
        client.gather(futures)
        per_task = (time.perf_counter() - started) / len(paths)
        del futures
        rss = client.run(peak_rss_kib)
    return records, wall, startup, per_task, rss, workers_cpu, client_cpu


def full_cores(cores):
    options = TriageOptions(symbols_dir=None)
    with tempfile.TemporaryDirectory(prefix="ksinspect-bench-") as folder:
        for core in cores:
            plain = os.path.join(folder, os.path.basename(core).replace(".xz", ""))
            with lzma.open(core) as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            size = os.path.getsize(plain)
            triage_image(plain, options)              # page cache warm
            record = triage_image(plain, options)
            started = time.perf_counter()
            with open(plain, "rb") as fh:
                digest = hashlib.sha256()
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            hash_s = time.perf_counter() - started
            steps = " ".join("%s=%.3f" % kv for kv in sorted(record.timings.items()))
            print("full-core %s: %d MB, %.3f s, paging entries read %d, ranges %d; steps: %s; "
                  "sha256 of the file %.3f s (%.0f MB/s)" % (
                      os.path.basename(os.path.dirname(core)) or core, size >> 20,
                      record.seconds, record.paging["entries_read"], record.paging["ranges"],
                      steps, hash_s, size / hash_s / 1e6))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=25,
                        help="copies of each of the 4 shipped guests (default 25: 100 images)")
    parser.add_argument("--full", nargs="*", default=(), metavar="CORE",
                        help="whole guest cores (.elf.xz) to time step by step")
    args = parser.parse_args(argv)
    options = TriageOptions(symbols_dir=QEMU)
    with tempfile.TemporaryDirectory(prefix="ksinspect-bench-") as folder:
        paths = lay_out(folder, args.copies)
        n = len(paths)
        list(triage(paths[:len(PROFILES)], options=options))       # warm: kallsyms cache
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        serial = list(triage(paths, options=options))
        serial_wall = time.perf_counter() - started
        serial_cpu = cpu_seconds()
        image_seconds = statistics.mean(r.seconds for r in serial)
        print("workers=0: %d images in %.2f s: %.1f images/s (%.1f ms per image, CPU %.1f ms); "
              "peak RSS %d MiB" % (n, serial_wall, n / serial_wall, 1000 * image_seconds,
                                   1000 * (serial_cpu - cpu_before) / n, peak_rss_kib() >> 10))
        rates = {}
        for workers in (1, 2):
            records, wall, startup, per_task, rss, workers_cpu, client_cpu = run_cluster(
                workers, paths, options)
            assert sorted(r.comparable()["path"] for r in records) == sorted(paths)
            rates[workers] = n / wall
            busy = sum(r.seconds for r in records)
            print("workers=%d: %d images in %.2f s: %.1f images/s; %.1f ms per image on a "
                  "worker (serial %.1f); images in progress on average %.2f; cluster start-up "
                  "%.2f s; scheduler cost %.2f ms per task (no-op task round trip); peak RSS "
                  "per worker %s MiB; CPU per image: workers %.1f ms, client and scheduler "
                  "%.1f ms" % (
                      workers, n, wall, rates[workers], 1000 * busy / n, 1000 * image_seconds,
                      busy / wall, startup, 1000 * per_task,
                      "/".join(str(v >> 10) for v in sorted(rss.values())),
                      1000 * workers_cpu / n, 1000 * client_cpu / n))
        load = os.getloadavg()[0]
        print("triage-images-per-s serial=%.1f w1=%.1f w2=%.1f scaling-1-to-2=%.2fx "
              "(load average %.1f on %d cores)" % (n / serial_wall, rates[1], rates[2],
                                                   rates[2] / rates[1], load, os.cpu_count()))
    if args.full:
        full_cores(args.full)


if __name__ == "__main__":
    main()
