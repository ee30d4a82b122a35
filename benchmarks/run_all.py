"""One table of what modscope costs, as ratios to baselines measured side by side in this run.

    python benchmarks/run_all.py [--quick] [--repeat N]

Every measurement is a fresh process (so its peak RSS is its own), and the commands run in turn,
`--repeat` rounds of all of them (alternating, so a load that comes and goes hits each alike); each
figure is the median of its rounds. Workloads (`workloads.py`): an MLP of 1.36 M parameters (60
steps) and 3,300 blocks of Linear(140, 140) + LayerNorm + ReLU: 13,201 modules, 66.1 M parameters (2
steps), the same count of modules around one Embedding(125,000, 512) (64 M of its 64.1 M parameters,
SGD, 2 steps) and a GPT-2-shaped LM of 23.5 M parameters (2 steps). The per-step rows
(`record_floor.py`) are measured inside one process per workload, alternating a plain iteration, a
`run` step and the floor of an exact record: the step's ratio, and what `run` adds to a step over
what the floor costs. The observe-hooks row is measured inside one process on one model, in
alternating rounds (`_hooks_ratio_worker`): the no-op hooks' cost it divides by is small, far below
what separate processes vary by. The prints row is `prints.py`'s figure (2,000,000 lines printed at
import; 200,000 with `--quick`). `--quick` uses 20 MLP steps, 330 blocks and one round: for trying
it, its figures are not the goals'. The machine and its load average are printed with the table:
compare ratios from one table, never milliseconds across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import os
import platform
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workloads  # noqa: E402  (a sibling file: benchmarks/ is no package)


@dataclass(frozen=True)
class Measured:
    """One process: wall seconds, peak resident set in bytes, and the figure it printed itself
    (its iterations' seconds, or a ratio it measured)."""

    wall: float
    peak_rss: int
    inner: float | None
    figures: dict[str, float] = field(default_factory=dict)
    """Other figures it printed, by name (`figure NAME VALUE` lines)."""


def measure(argv: Sequence[str], env: dict[str, str]) -> Measured:
    """Run `argv` to its end; its own peak RSS comes from `wait4`, not from the whole tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    # modscope's `check` and `run` exit 1 with findings; any other process must exit 0.
    if proc.returncode not in ((0, 1) if "modscope" in argv else (0,)):
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    inner = None
    figures: dict[str, float] = {}
    for line in out.decode().splitlines():
        if line.startswith(("iterations ", "value ")):
            inner = float(line.split()[1])
        elif line.startswith("figure "):
            _, name, value = line.split()
            figures[name] = float(value)
    return Measured(wall, _peak.pop(), inner, figures)


_peak: list[int] = []


def _popen_with_rusage() -> None:
    """Make `subprocess.Popen` reap children with `os.wait4`, keeping each one's peak RSS."""

    def try_wait(self: subprocess.Popen[bytes], wait_flags: int) -> tuple[int, int]:
        pid, status, usage = os.wait4(self.pid, wait_flags)
        if pid == self.pid:
            _peak.append(usage.ru_maxrss * 1024)  # kilobytes on Linux
        return pid, status

    subprocess.Popen._try_wait = try_wait  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Row:
    """A line of the table: a figure computed from the medians of the processes it `uses`."""

    label: str
    uses: tuple[str, ...]
    value: Callable[..., float]
    unit: str = "x"
    goal: float | None = None

    def verdict(self, value: float) -> str:
        if self.goal is None:
            return ""
        return "ok" if value <= self.goal else "OVER"


def wall(a: Measured, b: Measured) -> float:
    return a.wall / b.wall


def peak(a: Measured, b: Measured) -> float:
    return a.peak_rss / b.peak_rss


def own_figure(m: Measured) -> float:
    """What the process measured itself (its `iterations` or `value` line)."""
    return m.inner or 0.0


def figure(name: str) -> Callable[[Measured], float]:
    """What the process printed as `figure NAME VALUE`."""

    def value(m: Measured) -> float:
        return m.figures.get(name, math.nan)

    return value


def commands(tmp: str, quick: bool) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """Every process to measure, by name, with its environment changes."""
    blocks, mlp_steps = (330, 20) if quick else (3300, 60)
    mlp = os.path.join(tmp, "mlp.py")
    many = os.path.join(tmp, "many.py")
    with open(mlp, "w") as f:
        f.write(workloads.MLP)
    with open(many, "w") as f:
        f.write(workloads.many(blocks, 140))
    embedding = os.path.join(tmp, "embedding.py")
    with open(embedding, "w") as f:
        f.write(workloads.embedding(12_500 if quick else 125_000, 512, blocks))
    gpt = os.path.join(tmp, "gpt.py")
    with open(gpt, "w") as f:
        f.write(workloads.gpt(50_257, 320, 6, 5))
    floor = os.path.join(HERE, "record_floor.py")
    rounds = "3" if quick else "5"
    py, me = sys.executable, os.path.abspath(__file__)
    modscope = [py, "-m", "modscope"]
    mlp_n, many_n = str(mlp_steps), "2"
    cmds = {
        "plain mlp": [py, mlp],
        "run mlp": [*modscope, "run", mlp, "--steps", mlp_n, "--json"],
        "run --hooks all mlp": [
            *modscope,
            "run",
            mlp,
            "--steps",
            mlp_n,
            "--json",
            "--hooks",
            "all",
        ],
        "plain embedding": [py, embedding],
        "run embedding": [*modscope, "run", embedding, "--steps", "2", "--json"],
        "plain gpt": [py, gpt],
        "run gpt": [*modscope, "run", gpt, "--steps", "2", "--json"],
        "per-step mlp": [py, floor, mlp, "--rounds", rounds],
        "per-step many": [py, floor, many, "--rounds", rounds],
        "per-step embedding": [py, floor, embedding, "--rounds", rounds],
        "per-step gpt": [py, floor, gpt, "--rounds", rounds],
        "plain many": [py, many],
        "run many": [*modscope, "run", many, "--steps", many_n, "--json"],
        "run --hooks all many": [
            *modscope,
            "run",
            many,
            "--steps",
            many_n,
            "--json",
            "--hooks",
            "all",
        ],
        "hooks ratio many": [py, me, "--worker", "hooks-ratio", many, "1", "5"],
        "build many": [py, many],
        "tree many": [*modscope, "tree", many],
        "torchinfo many": [py, me, "--worker", "torchinfo", many],
        "build+1 step many": [py, many],
        "check many": [*modscope, "check", many],
        "first paint many": [py, me, "--worker", "first-paint", many],
        "prints ratio": [
            py,
            os.path.join(HERE, "prints.py"),
            "--value",
            "--repeat",
            "1",
            "--lines",
            "200000" if quick else "2000000",
        ],
    }
    envs = {
        "plain mlp": {"STEPS": mlp_n},
        "plain many": {"STEPS": many_n},
        "plain embedding": {"STEPS": "2"},
        "plain gpt": {"STEPS": "2"},
        "build many": {"STEPS": "0"},
        "build+1 step many": {"STEPS": "1"},
    }
    return cmds, envs


PER_STEP = [
    ("mlp", "MLP"),
    ("many", "13k modules"),
    ("embedding", "64M embedding + 13k"),
    ("gpt", "GPT-2 shape 23.5M"),
]
"""The workloads measured per step (`record_floor.py`), by command name and label."""

ROWS = [
    Row("run vs plain loop, MLP: wall", ("run mlp", "plain mlp"), wall, goal=1.05),
    Row("run vs plain loop, MLP: peak RSS", ("run mlp", "plain mlp"), peak),
    Row("run vs plain loop, 13k modules: wall", ("run many", "plain many"), wall, goal=1.25),
    Row("run vs plain loop, 13k modules: peak RSS", ("run many", "plain many"), peak, goal=1.35),
    Row(
        "run vs plain loop, 64M embedding + 13k: wall",
        ("run embedding", "plain embedding"),
        wall,
        goal=1.25,
    ),
    Row(
        "run vs plain loop, 64M embedding + 13k: peak RSS",
        ("run embedding", "plain embedding"),
        peak,
        goal=1.35,
    ),
    Row("run vs plain loop, GPT-2 shape 23.5M: wall", ("run gpt", "plain gpt"), wall),
    Row("run vs plain loop, GPT-2 shape 23.5M: peak RSS", ("run gpt", "plain gpt"), peak),
    *[
        row
        for name, label in PER_STEP
        for row in (
            Row(f"run step / plain step, {label}", (f"per-step {name}",), figure("per_step")),
            Row(
                f"run's added step time / floor's, {label}",
                (f"per-step {name}",),
                figure("over_floor"),
                goal=1.5,
            ),
        )
    ],
    Row("run --hooks all vs plain loop, MLP: wall", ("run --hooks all mlp", "plain mlp"), wall),
    Row(
        "run --hooks all vs plain loop, 13k modules: wall",
        ("run --hooks all many", "plain many"),
        wall,
    ),
    Row(
        "run --hooks all vs plain loop, 13k modules: peak RSS",
        ("run --hooks all many", "plain many"),
        peak,
    ),
    Row(
        "observe hooks' added cost / no-op hooks', 13k modules",
        ("hooks ratio many",),
        own_figure,
        goal=2.0,
    ),
    Row("tree vs building the model, 13k modules", ("tree many", "build many"), wall, goal=1.1),
    Row("tree vs torchinfo.summary, 13k modules", ("tree many", "torchinfo many"), wall, goal=1.0),
    Row(
        "check vs building + one plain step, 13k modules",
        ("check many", "build+1 step many"),
        wall,
    ),
    Row(
        "prints at import, 4 MB: modscope's added CPU / python's",
        ("prints ratio",),
        own_figure,
        goal=2.0,
    ),
    Row(
        "app first paint after the model is built, 13k modules",
        ("first paint many",),
        own_figure,
        unit="s",
        goal=1.0,
    ),
]


def machine() -> str:
    """The CPU, cores, memory and load average, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB; load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models, one round")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 3; quick 1)")
    parser.add_argument(
        "--threads",
        default="1",
        help="OMP_NUM_THREADS of every process (default 1: on a shared machine, OpenMP workers "
        "waiting for a core make small ops many times slower, at random)",
    )
    parser.add_argument("--only", help="measure only the rows whose label contains this")
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    _popen_with_rusage()
    _compile_modscope()
    print(f"machine: {machine()}; OMP_NUM_THREADS={args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        cmds, envs = commands(tmp, args.quick)
        rows = [r for r in ROWS if args.only is None or args.only in r.label]
        if importlib.util.find_spec("torchinfo") is None:
            print("torchinfo is not installed: its row is left out")
            del cmds["torchinfo many"]
        rows = [r for r in rows if all(name in cmds for name in r.uses)]
        wanted = {name for r in rows for name in r.uses} if args.only else set(cmds)
        runs: dict[str, list[Measured]] = {name: [] for name in cmds if name in wanted}
        for round_ in range(repeat):
            for name, argv in cmds.items():
                if name not in wanted:
                    continue
                env = dict(os.environ, OMP_NUM_THREADS=args.threads, **envs.get(name, {}))
                runs[name].append(measure(argv, env))
            print(f"round {round_ + 1}/{repeat} done", file=sys.stderr)
    medians = {name: _median(ms) for name, ms in runs.items()}
    print(f"medians of {repeat} alternating rounds")
    if args.quick:
        print("quick: the MLP runs 20 steps, and '13k modules' is 330 blocks (1,321 modules)")
    print(f"{'measurement':58s} {'value':>8s} {'goal':>8s}")
    for row in rows:
        value = row.value(*(medians[name] for name in row.uses))
        goal = f"<= {row.goal:g}{row.unit}" if row.goal is not None else ""
        shown = f"{value:.2f}{row.unit}" if row.unit == "x" else f"+{value:.2f} s"
        print(f"{row.label:58s} {shown:>8s} {goal:>8s} {row.verdict(value)}")
    print("baselines (median wall, peak RSS):")
    for name, m in medians.items():
        inner = f", its own figure {m.inner:.3f}" if m.inner is not None else ""
        inner += "".join(f", {n} {v:.3f}" for n, v in sorted(m.figures.items()))
        print(f"  {name:24s} {m.wall:7.2f} s  {m.peak_rss / 2**20:7.0f} MiB{inner}")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _compile_modscope() -> None:
    """Byte-compile modscope first, as an installed package is: with PYTHONDONTWRITEBYTECODE
    set (as on the development machine) an editable checkout is otherwise compiled anew by
    every measured process, a cost no user pays (torch, the baseline's import, is compiled)."""
    import compileall

    import modscope

    compileall.compile_dir(os.path.dirname(modscope.__file__), quiet=1)


def _median(ms: list[Measured]) -> Measured:
    inner = [m.inner for m in ms if m.inner is not None]
    names = {name for m in ms for name in m.figures}
    return Measured(
        statistics.median(m.wall for m in ms),
        int(statistics.median(m.peak_rss for m in ms)),
        statistics.median(inner) if inner else None,
        {n: statistics.median(m.figures[n] for m in ms if n in m.figures) for n in names},
    )


# -- workers: each runs in its own process ---------------------------------------------------


def _hooks_ratio_worker(script: str, steps: int, rounds: int) -> None:
    """The observe hooks' added cost over the no-op hooks', measured in one process on one
    model, in alternating rounds of `steps` iterations (iteration time only; the ratio of the
    medians of what each adds): a Session's iterations with observing hooks on every module
    against the same Session's without, over plain iterations with `workloads`' no-op hooks
    against plain ones. Separate processes would compare a small no-op cost with run-to-run
    noise many times larger. The time is the process's CPU time, which a busy neighbour on
    a shared machine disturbs less than the wall clock (the work is on one thread)."""
    from modscope.core.session import Session
    from modscope.report.run_command import attach_specs, parse_specs

    names = runpy.run_path(script, run_name="bench")
    model, optimizer = names["model"], names["optimizer"]
    inputs, loss_fn = names["inputs"], names["loss_fn"]
    session = Session.from_objects(model, inputs=inputs, loss_fn=loss_fn, optimizer=optimizer)
    clock = time.process_time

    def plain() -> float:
        start = clock()
        for _ in range(steps):
            optimizer.zero_grad()
            loss_fn(model(inputs)).backward()
            optimizer.step()
        return clock() - start

    def noop() -> float:
        with workloads.noop_hooks_on(model, names["_noop_hooks"]):
            return plain()

    def observed(hooks: bool) -> float:
        if hooks:
            attach_specs(session, parse_specs([], True))
        start = clock()
        for _ in range(steps):
            session.run_iteration()
        took = clock() - start
        session.hooks.detach_all()
        return took

    plain(), observed(False)  # warm-up: first-call costs, the diff's baseline copy
    noop_added, observe_added = [], []
    for _ in range(rounds):
        base, with_noop = plain(), noop()
        bare, with_hooks = observed(False), observed(True)
        noop_added.append(with_noop - base)
        observe_added.append(with_hooks - bare)
        print(
            f"round: plain {base:.3f} s, no-op {with_noop:.3f} s, session {bare:.3f} s, "
            f"observing {with_hooks:.3f} s",
            file=sys.stderr,
        )
    # The ratio of the medians: a median of per-round ratios swings with the small, noisy
    # no-op cost it divides by.
    ratio = statistics.median(observe_added) / max(statistics.median(noop_added), 1e-9)
    print(f"value {ratio:.6f}")
    session.close()


def _torchinfo_worker(script: str) -> None:
    """Build the model as the script does, then print torchinfo's summary of one forward."""
    import torchinfo

    names = runpy.run_path(script, run_name="bench")
    print(torchinfo.summary(names["model"], input_data=names["inputs"], verbose=0))


def _first_paint_worker(script: str) -> None:
    """Seconds from the model built (the script loaded) to the app's tree painted."""
    from bench_tui_tree import first_paint

    paint, _, _ = asyncio.run(first_paint(script))
    print(f"iterations {paint:.6f}")


def worker(argv: list[str]) -> None:
    kind, script, *rest = argv
    if kind == "hooks-ratio":
        _hooks_ratio_worker(script, int(rest[0]), int(rest[1]))
    elif kind == "torchinfo":
        _torchinfo_worker(script)
    elif kind == "first-paint":
        _first_paint_worker(script)
    else:
        raise SystemExit(f"unknown worker {kind!r}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        main()
