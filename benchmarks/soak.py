"""Soak: many headless iterations with `--hooks all` on a small model, watched from outside.

    python benchmarks/soak.py [--steps 10000] [--every 1000]

Runs `modscope run SCRIPT --steps N --hooks all --json` (stdout to /dev/null) in a subprocess
and samples, while it runs, its resident memory, thread count and open file descriptors from
/proc. Prints one row per sample and the growth from the first sample after warm-up to the last:
memory must stay flat (bounded histories and events), and threads and descriptors must not grow
(no handle, thread or file leak). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

SCRIPT = textwrap.dedent(
    """
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(inplace=True), nn.Dropout(0.1),
        nn.Linear(32, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 4),
    )
    inputs = torch.randn(8, 16)
    target = torch.randn(8, 4)

    def loss_fn(output):
        return nn.functional.mse_loss(output, target)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    """
)


def proc_facts(pid: int) -> tuple[float, int, int] | None:
    """(RSS in MiB, threads, open descriptors) of a running process, or None once it ended."""
    try:
        status = open(f"/proc/{pid}/status").read()  # noqa: SIM115 (read once, closed by GC)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # a zombie: it has ended
        return None
    rss_kib = int(fields["VmRSS"].split()[0])
    return rss_kib / 1024, int(fields["Threads"]), fds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "soak_model.py")
        with open(script, "w") as f:
            f.write(SCRIPT)
        command = [sys.executable, "-m", "modscope", "run", script, "--steps", str(args.steps)]
        command += ["--hooks", "all", "--json"]
        started = time.perf_counter()
        with open(os.devnull, "w") as sink:
            proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.PIPE, text=True)
            samples: list[tuple[float, float, int, int]] = []
            while proc.poll() is None:
                facts = proc_facts(proc.pid)
                if facts is not None:
                    samples.append((time.perf_counter() - started, *facts))
                time.sleep(args.every)
            err = proc.stderr.read() if proc.stderr else ""
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        print(err, file=sys.stderr)
        return proc.returncode
    print(f"{args.steps:,} iterations with --hooks all in {elapsed:.1f} s")
    print(f"{'t (s)':>7} {'RSS MiB':>9} {'threads':>8} {'fds':>5}")
    for t, rss, threads, fds in samples:
        print(f"{t:7.1f} {rss:9.1f} {threads:8d} {fds:5d}")
    warm = samples[len(samples) // 4 :] if len(samples) >= 4 else samples
    if len(warm) >= 2:
        first, last = warm[0], warm[-1]
        print(
            f"after warm-up: RSS {last[1] - first[1]:+.1f} MiB, threads {last[2] - first[2]:+d}, "
            f"fds {last[3] - first[3]:+d}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
