"""The device check: modscope on models that live on CUDA, bit-identical to the plain loop.

    python3 benchmarks/device/check.py [OUTDIR]      (from the repository root, on a GPU machine)

Every part runs in its own process and is judged on its own; the summary at the end lists what
failed, and the exit status is 1 when anything did. Parts:
  cuda tests      the suite's CUDA-only tests (one transfer per step, no syncs while capturing)
  tree / run      tree --json (every parameter on cuda:0); run --json, --hooks all, --layers and
                  a tiny --memory-budget (sampled keys), each ending bit-identical to the plain
                  loop, which is itself run twice to show it is deterministic
  record/replay   run --record, then replay --json prints the same bytes
  break nan       --break nan on CUDA stops at step 3, forward, blocks.1.gate, exit 1; the
                  recording of it replays the same lines
  rewind          Session: 5 steps, rewind to 2, 3 steps again: bit-identical to 5 straight, and
                  "what if" compares every key identical
  real models     tiny GPT-2 (transformers), ResNet-18 and ViT (timm): tree, check, run --hooks
                  all bit-identical to the plain loop (cuDNN deterministic: by default its
                  convolution backward is not repeatable, so two plain runs already differ)
  torchrun        two ranks on one GPU (gloo) with --record: a recording per rank that replays
  app             the app driven by keys (textual's pilot) when textual is importable
  timing          50 steps, whole process: plain, run --json, run --hooks all
Runs on the CPU too (the models fall back to it), which is how it is tried before a device call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "/tmp/device-check"))
"""Where the app's screenshots go; everything else is written to a scratch folder, `WORK`."""
WORK = Path(tempfile.mkdtemp(prefix="modscope-device-"))
MODEL = str(HERE / "cuda_model.py")
NAN = str(HERE / "cuda_nan.py")
REAL = str(HERE / "cuda_real.py")
DDP = str(HERE / "cuda_ddp.py")
PATHS = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(PATHS),
    "PYTHONUNBUFFERED": "1",
    "HF_HUB_OFFLINE": "1",
}
DEVICE = "cuda:0" if torch.cuda.is_available() else "cpu"
failed: list[str] = []


def sh(
    *argv: str, ok: tuple[int, ...] = (0,), env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run argv (a `modscope` first word becomes `python -m modscope`); raise unless its exit
    status is in `ok`."""
    args = list(argv)
    if argv[0] == "modscope":
        args = [sys.executable, "-m", "modscope", *argv[1:]]
    elif argv[0] == "python3":
        args[0] = sys.executable
    p = subprocess.run(
        args, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=timeout
    )
    if p.returncode not in ok:
        raise AssertionError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    return p


def part(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            fn()
        except Exception as e:  # each part is judged alone
            failed.append(name)
            print(f"FAILED {name}: {type(e).__name__}: {e}", flush=True)
        else:
            print(f"ok {name} ({time.perf_counter() - start:.1f} s)", flush=True)
        return fn

    return wrap


def strict(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def lines(text: str) -> list[dict[str, Any]]:
    return [strict(line) for line in text.splitlines() if line.strip()]


def load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True, map_location="cpu")


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """The keys whose tensors differ (an empty list: bit-identical)."""
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    return [k for k in a if not torch.equal(a[k], b[k])]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    print(
        "python",
        sys.version.split()[0],
        "torch",
        torch.__version__,
        "device",
        DEVICE,
        torch.cuda.get_device_name() if torch.cuda.is_available() else "",
    )

    @part("cuda tests")
    def _() -> None:
        p = sh(
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=strict",
            "-k",
            "cuda",
            "tests/core/test_summary.py",
            "tests/core/test_batched_stats.py",
            ok=(0, 1, 2, 5),
        )
        print(p.stdout.strip().splitlines()[-1])
        assert p.returncode == 0, p.stdout[-3000:]
        assert "skipped" not in p.stdout.splitlines()[-1] or DEVICE == "cpu"

    plain = WORK / "plain.pt"

    @part("tree / run on a CUDA model")
    def _() -> None:
        tree = strict(sh("modscope", "tree", MODEL, "--json").stdout)
        devices = {p["device"] for m in tree["modules"] for p in m["parameters"].values()}
        assert devices == {DEVICE}, devices
        sh("python3", MODEL, "5", str(plain))
        sh("python3", MODEL, "5", str(WORK / "plain2.pt"))
        twice = same(load(plain), load(WORK / "plain2.pt"))
        assert twice == [], f"the plain loop itself is not deterministic: {twice[:5]}"
        variants = {
            "run": [],
            "hooks-all": ["--hooks", "all"],
            "layers": ["--layers"],
            "memory-budget": ["--memory-budget", "4K"],
        }
        for name, extra in variants.items():
            saved = WORK / f"{name}.pt"
            out = lines(
                sh(
                    "modscope",
                    "run",
                    MODEL,
                    "--steps",
                    "5",
                    "--json",
                    *extra,
                    "--save-state",
                    str(saved),
                ).stdout
            )
            steps = [e for e in out if e["event"] == "step"]
            assert [s["step"] for s in steps] == [1, 2, 3, 4, 5], name
            assert steps[0]["output"]["device"] == DEVICE, steps[0]["output"]
            assert steps[-1]["grads"]["head.weight"] == steps[-1]["grads"]["embed.weight"]
            if name == "layers":
                assert sum(e["event"] == "layers" for e in out) == 5
            if name == "memory-budget":
                assert steps[-1]["diff"].get("sampled"), "4K should sample the largest keys"
            if name == "hooks-all":
                assert sum(e["event"] == "hook" for e in out) > 0
            diff = same(load(plain), load(saved))
            print(
                f"  {name}: loss {[round(s['loss'], 4) for s in steps]}, bit-identical: {not diff}"
            )
            assert diff == [], diff[:5]

    @part("record / replay")
    def _() -> None:
        rec = WORK / "rec"
        run = sh(
            "modscope",
            "run",
            MODEL,
            "--steps",
            "4",
            "--json",
            "--layers",
            "--record",
            str(rec),
            "--record-tensors",
            "100000",
            "--save-state",
            str(WORK / "rec.pt"),
        )
        replay = sh("modscope", "replay", str(rec), "--json")
        assert replay.stdout == run.stdout, "replay --json differs from what run printed"
        print(f"  {len(run.stdout.splitlines())} lines replayed byte for byte")

    @part("break nan")
    def _() -> None:
        rec = WORK / "nanrec"
        p = sh(
            "modscope",
            "run",
            NAN,
            "--steps",
            "5",
            "--break",
            "nan",
            "--json",
            "--record",
            str(rec),
            ok=(1,),
        )
        out = lines(p.stdout)
        brk = out[-1]
        print("  ", {k: brk.get(k) for k in ("event", "step", "phase", "module", "condition")})
        assert brk["event"] == "break" and brk["step"] == 3 and brk["phase"] == "forward"
        assert brk["module"] == "blocks.1.gate", brk
        assert sh("modscope", "replay", str(rec), "--json", ok=(1,)).stdout == p.stdout
        readable = sh("modscope", "run", NAN, "--steps", "5", "--break", "nan", ok=(1,)).stdout
        print("\n".join("  " + line[:150] for line in readable.strip().splitlines()[-6:]))

    @part("rewind and what if")
    def _() -> None:
        code = f"""
import torch
from modscope.core.session import Session, SessionOptions
s = Session.load({MODEL!r}, options=SessionOptions(rewind=True))
for _ in range(5):
    assert s.run_iteration().error is None
straight = {{k: v.detach().cpu().clone() for k, v in s.model.state_dict().items()}}
s.rewind(2)
for _ in range(3):
    assert s.run_iteration().error is None
again = {{k: v.detach().cpu() for k, v in s.model.state_dict().items()}}
plain = torch.load({str(plain)!r}, weights_only=True, map_location="cpu")
bad = [k for k in plain
       if not torch.equal(plain[k], again[k]) or not torch.equal(straight[k], again[k])]
c = s.compare_timelines()
print("  rewound re-run bit-identical:", not bad, "| what if:", len(c.diff.changed), "differ,",
      len(c.diff.unchanged), "identical")
assert not bad and c.diff.changed == ()
s.close()
"""
        print(sh(sys.executable, "-c", code).stdout.rstrip())

    for kind in ("gpt2", "resnet", "vit"):

        @part(f"real model: {kind}")
        def _(kind: str = kind) -> None:
            # cuDNN's default convolution backward adds in a varying order: two plain runs of
            # ResNet-18 differ in 91 keys on an H100. Bit-identical needs a repeatable baseline.
            env = {**ENV, "DEVICE_MODEL": kind, "DEVICE_DETERMINISTIC": "1"}
            probe = "import timm" if kind != "gpt2" else "import transformers"
            if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode:
                print(f"  skipped: {probe} fails here")
                return
            tree = strict(sh("modscope", "tree", REAL, "--json", env=env).stdout)
            report = strict(sh("modscope", "check", REAL, "--json", "--steps", "2", env=env).stdout)
            errors = [f for f in report["findings"] if f["severity"] == "error"]
            assert report["steps_run"] == 2 and not errors, errors
            saved, ref = WORK / f"{kind}.pt", WORK / f"{kind}-plain.pt"
            out = lines(
                sh(
                    "modscope",
                    "run",
                    REAL,
                    "--steps",
                    "3",
                    "--hooks",
                    "all",
                    "--json",
                    "--save-state",
                    str(saved),
                    env=env,
                ).stdout
            )
            sh("python3", REAL, "3", str(ref), env=env)
            diff = same(load(ref), load(saved))
            kinds = sorted({f["kind"] for f in report["findings"]})
            keys = len(load(ref))
            print(
                f"  {len(tree['modules'])} modules; check: {kinds}; "
                f"{sum(e['event'] == 'hook' for e in out)} hook events; "
                f"bit-identical {keys - len(diff)}/{keys} keys"
            )
            assert diff == [], diff[:5]

    @part("torchrun, two ranks on one GPU")
    def _() -> None:
        rec = WORK / "ddprec"
        p = sh(
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29533",
            "-m",
            "modscope",
            "run",
            DDP,
            "--steps",
            "2",
            "--json",
            "--record",
            str(rec),
        )
        assert sorted(x.name for x in rec.iterdir()) == ["rank0", "rank1"]
        for rank in (0, 1):
            out = lines(sh("modscope", "replay", str(rec), "--json", "--rank", str(rank)).stdout)
            steps = [e for e in out if e["event"] == "step"]
            assert len(steps) == 2 and steps[0]["output"]["device"] == DEVICE, rank
        assert sh("modscope", "replay", str(rec), "--json").stdout == p.stdout

    @part("app")
    def _() -> None:
        if subprocess.run([sys.executable, "-c", "import textual"], env=ENV).returncode:
            print("  skipped: textual is not importable")
            return
        print(sh(sys.executable, str(HERE / "app_pilot.py"), MODEL, str(OUT)).stdout.rstrip())

    @part("timing")
    def _() -> None:
        def t(*argv: str) -> float:
            start = time.perf_counter()
            sh(*argv)
            return time.perf_counter() - start

        for _ in range(2):
            base = t("python3", MODEL, "50", str(WORK / "t.pt"))
            run = t("modscope", "run", MODEL, "--steps", "50", "--json")
            allh = t("modscope", "run", MODEL, "--steps", "50", "--json", "--hooks", "all")
            print(
                f"  50 steps, whole process: plain {base:.2f} s, run --json {run:.2f} s "
                f"(x{run / base:.2f}), --hooks all {allh:.2f} s (x{allh / base:.2f})"
            )

    print("device check:", "all passed" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
