"""How soon `ksinspect maps IMAGE` prints its first row, against another tree.

    python bench/first_row.py IMAGE [--tree DIR ...] [--runs 10]

Runs `python -m ksinspect maps IMAGE` (a table) as a subprocess, the runs of
every tree interleaved so that each sees the same load, and prints per tree
the wall time to the first data row, the CPU the process had used by then
(/proc/PID/stat) and the whole run, best and median, beside `python -c pass`
(the interpreter's own start). A --tree is another copy of the package
(for example `git archive main ksinspect | tar -x -C DIR` with the built
`_core*.so` and `_percall*.so` copied in), imported through PYTHONPATH; the
installed ksinspect is always raced as "this tree". Bytecode is cached as an
installed package has it (see vs_peers.bytecode_env). Last line:

    first-row-s=W first-row-cpu-s=C python-start-s=P [TREE-first-row-s=...]

The image's format matters: this is the command line's start (imports,
open, the first chunk of the walk), not the walk.
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from vs_peers import bytecode_env, maps_cli, timed_process  # noqa: E402


def compile_tree(tree, env):
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(tree, "ksinspect")],
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--tree", action="append", default=[],
                        help="another copy of the package to race (its parent directory)")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)

    image = os.path.abspath(args.image)
    # Run from a directory holding no package: python -m puts the working
    # directory first on sys.path, ahead of PYTHONPATH.
    cwd = tempfile.gettempdir()
    env, how = bytecode_env()
    base_env = dict(env if env is not None else os.environ)
    envs = [("this tree", base_env)]
    for tree in args.tree:
        compile_tree(tree, base_env)
        envs.append((tree, dict(base_env, PYTHONPATH=os.path.abspath(tree))))
    results = {name: [] for name, _env in envs}
    starts = []
    for _ in range(args.runs):
        starts.append(timed_process([sys.executable, "-c", "pass"], base_env))
        for name, tree_env in envs:
            results[name].append(maps_cli(image, [], "table", tree_env, cwd))

    def best_median(values):
        values = sorted(v for v in values if v is not None)
        return (values[0], values[len(values) // 2]) if values else (float("nan"),) * 2

    print("ksinspect maps %s, %d runs each, interleaved; %s" % (image, args.runs, how))
    print("  python -c pass: best %.3f s, median %.3f s" % best_median(starts))
    last = []
    for name, runs in results.items():
        first = best_median(r[0] for r in runs)
        cpu = best_median(r[2] for r in runs)
        total = best_median(r[1] for r in runs)
        print("  %s: first row best %.3f s, median %.3f s; CPU by then best %.2f s, median "
              "%.2f s; whole table best %.2f s" % (name, first[0], first[1], cpu[0], cpu[1],
                                                   total[0]))
        if name == "this tree":
            last += ["first-row-s=%.3f" % first[0], "first-row-cpu-s=%.2f" % cpu[0],
                     "python-start-s=%.3f" % best_median(starts)[0]]
        else:
            last.append("%s-first-row-s=%.3f" % (os.path.basename(name.rstrip("/")), first[0]))
    print(" ".join(last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
