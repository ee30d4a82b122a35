#!/usr/bin/env bash
# The device check: `modscope tree` and `modscope run` on a model that lives on CUDA.
#   bash benchmarks/device/check.sh      (from the repository root, on a machine with a GPU)
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
script=benchmarks/device/cuda_model.py
out=${OUT:-/tmp}
fails=0
step() { echo "== $*"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
step tree; python3 -m modscope tree "$script" || fails=$((fails+1))
step tree --json; python3 -m modscope tree "$script" --json >"$out/tree.json" || fails=$((fails+1))
step run table; python3 -m modscope run "$script" --steps 3 || fails=$((fails+1))
step run --json; python3 -m modscope run "$script" --steps 5 --json --save-state "$out/ms.pt" >"$out/run.jsonl" || fails=$((fails+1))
step run --hooks all; python3 -m modscope run "$script" --steps 5 --hooks all --json --save-state "$out/all.pt" >"$out/all.jsonl" || fails=$((fails+1))
step plain loop; python3 "$script" 5 "$out/plain.pt" || fails=$((fails+1))
python3 - "$out" <<'PY' || fails=$((fails+1))
import json, sys, torch
out = sys.argv[1]
strict = lambda c: (_ for _ in ()).throw(ValueError(c))
tree = json.load(open(f"{out}/tree.json"), parse_constant=strict)
devices = {p["device"] for m in tree["modules"] for p in m["parameters"].values()}
assert devices == {"cuda:0"}, devices
for name in ("run", "all"):
    ev = [json.loads(l, parse_constant=strict) for l in open(f"{out}/{name}.jsonl")]
    steps = [e for e in ev if e["event"] == "step"]
    assert len(steps) == 5 and steps[0]["output"]["device"] == "cuda:0", name
    assert steps[-1]["grads"]["head.weight"] == steps[-1]["grads"]["embed.weight"]
    print(name, "loss", [round(s["loss"], 4) for s in steps], "hook events",
          sum(e["event"] == "hook" for e in ev))
plain = torch.load(f"{out}/plain.pt", weights_only=True)
for name in ("ms", "all"):
    got = torch.load(f"{out}/{name}.pt", weights_only=True)
    diff = [k for k in plain if not torch.equal(plain[k].cpu(), got[k].cpu())]
    print(name, "bit-identical to the plain loop:", not diff, diff[:5])
    assert not diff
PY
step timing
python3 - <<'PY'
import subprocess, sys, time
def t(argv):
    s = time.perf_counter(); subprocess.run(argv, check=True, capture_output=True); return time.perf_counter() - s
s = "benchmarks/device/cuda_model.py"
plain = t([sys.executable, s, "50", "/tmp/p.pt"])
run = t([sys.executable, "-m", "modscope", "run", s, "--steps", "50", "--json"])
allh = t([sys.executable, "-m", "modscope", "run", s, "--steps", "50", "--json", "--hooks", "all"])
print(f"50 steps whole process: plain {plain:.2f}s, run --json {run:.2f}s (x{run/plain:.2f}), --hooks all {allh:.2f}s (x{allh/plain:.2f})")
PY
echo "device check: $fails failed"
exit $((fails > 0))
