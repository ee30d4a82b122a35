"""What capturing a script's prints costs, as a ratio to what the same prints cost plain `python`.

    python benchmarks/prints.py [--lines N] [--progress N] [--repeat R] [--value]

A script prints N short lines at import (2,000,000 lines of 2 bytes: 4 MB), then defines a tiny
model. Four processes are measured in alternating rounds: `python SCRIPT` and `modscope run
SCRIPT --steps 1 --json`, each with N lines and with none; stdout and stderr go to a file, as
with `> log 2>&1`. What the prints add is the difference between the two of a kind, and the
figure is modscope's added cost over python's (the CPU time of each process, user + system,
which a busy neighbour on a shared machine disturbs less than the wall clock; the wall clock's
ratio is printed too). The same for a progress line: N updates `print(..., end="\\r")`, which
modscope shows once, in its last state. `--value` prints only the lines ratio, as
`value X` (a row of run_all.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

SCRIPT = """\
import os
import torch
N = int(os.environ["PRINTS"])
{loop}
model = torch.nn.Linear(2, 2)
inputs = torch.ones(2)
"""
LINES = 'for _ in range(N):\n    print("x")'
PROGRESS = 'for i in range(N):\n    print(f"step {i + 1}/{N}", end="\\r")\nprint()'


@dataclass(frozen=True)
class Cost:
    """One process: its wall-clock seconds and its CPU seconds (user + system)."""

    wall: float
    cpu: float


def measure(argv: list[str], prints: int) -> Cost:
    env = dict(os.environ, PRINTS=str(prints), OMP_NUM_THREADS="1")
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            tail = out.read()[-2000:].decode(errors="replace")
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{tail}")
    return Cost(wall, usage.ru_utime + usage.ru_stime)


@dataclass(frozen=True)
class Ratio:
    """modscope's added cost over python's for one kind of print, from the medians."""

    python_added: Cost
    modscope_added: Cost

    @property
    def cpu(self) -> float:
        return self.modscope_added.cpu / max(self.python_added.cpu, 1e-3)

    @property
    def wall(self) -> float:
        return self.modscope_added.wall / max(self.python_added.wall, 1e-3)


def compare(script: str, prints: int, repeat: int) -> Ratio:
    """Alternating rounds of the four processes; the medians' differences."""
    py = sys.executable
    argvs = {
        "python": [py, script],
        "modscope": [py, "-m", "modscope", "run", script, "--steps", "1", "--json"],
    }
    costs: dict[tuple[str, int], list[Cost]] = {}
    for _ in range(repeat):
        for name, argv in argvs.items():
            for n in (0, prints):
                costs.setdefault((name, n), []).append(measure(argv, n))

    def added(name: str) -> Cost:
        with_prints, without = costs[(name, prints)], costs[(name, 0)]
        return Cost(
            statistics.median(c.wall for c in with_prints)
            - statistics.median(c.wall for c in without),
            statistics.median(c.cpu for c in with_prints)
            - statistics.median(c.cpu for c in without),
        )

    return Ratio(added("python"), added("modscope"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=2_000_000, help="lines printed (2,000,000)")
    parser.add_argument(
        "--progress", type=int, default=200_000, help="progress updates (200,000; 0: none)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--value", action="store_true", help="print only `value <lines ratio>`")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kinds = [("lines", LINES, args.lines)]
        if not args.value and args.progress:
            kinds.append(("progress", PROGRESS, args.progress))
        for kind, loop, count in kinds:
            script = os.path.join(tmp, f"{kind}.py")
            with open(script, "w") as f:
                f.write(SCRIPT.format(loop=loop))
            ratio = compare(script, count, args.repeat)
            if args.value:
                print(f"value {ratio.cpu:.3f}")
                return
            p, m = ratio.python_added, ratio.modscope_added
            print(
                f"{count:,} {kind} at import: python +{p.cpu:.2f} s CPU (+{p.wall:.2f} s wall), "
                f"modscope run +{m.cpu:.2f} s CPU (+{m.wall:.2f} s wall): "
                f"x{ratio.cpu:.2f} CPU, x{ratio.wall:.2f} wall"
            )
    print(f"medians of {args.repeat} alternating rounds; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
