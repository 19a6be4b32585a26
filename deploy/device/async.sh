#!/usr/bin/env bash
# On the GPU machine (after unpack.sh install/stash/join): async BTP against lockstep BTP in the setting of
# docs/results.md (SmolLM2-135M-Instruct, chat format, MBPP hash split: 199 train / 198 held-out tasks,
# beam k = 3, 192 new tokens, P2Value rank alpha 0.5, lr 1e-4, n = 16, 8 steps a round, 3 rounds), same
# seeds. Both run embedded on the one GPU; nvidia-smi samples GPU utilisation every 200 ms during each run.
#
#   async.sh run [SEEDS]     for each seed (default "0"): lockstep 3 rounds, then async with the same
#                            program budget (3 x 8 x 16 = 384 trained programs), publish every
#                            $PUBLISH_EVERY steps (default 8: one version per lockstep round, so both sample
#                            the same number of programs per trained program), max lag 1 version, 2 actors,
#                            held-out evaluation every 8 steps (one lockstep round's training)
#   async.sh summary         the table: wall time, GPU busy fraction (share of samples with utilisation > 0
#                            and mean utilisation), held-out pass rate against trained programs, and the
#                            wall time at which async first reaches lockstep's 3-round pass rate
#
# Results: $BTP_DATA_DIR/runs/{lock,async}-s<seed>/ (metrics, state, progress) and $OUT/async-results.json.
# A run takes ~10-20 minutes on an H100/H200; call `run` in the background through experiment.sh's pattern
# if the call limit is shorter:  setsid nohup bash deploy/device/async.sh run 0 >/tmp/btp/async.log 2>&1 &
set -euo pipefail
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export BTP_DATA_DIR=${BTP_DATA_DIR:-/tmp/btp}
export BTP_GENERATOR_MAX_BATCH_PROMPTS=${BTP_GENERATOR_MAX_BATCH_PROMPTS:-64}
export PYTHONUNBUFFERED=1
mkdir -p "$BTP_DATA_DIR/gpu"

COMMON=(--model SmolLM2-135M-Instruct --dataset mbpp --train-size 199 --test-size 198 --k 3
        --max-new-tokens 192 --prompt-format chat --scheme rank --alpha 0.5 --lr 1e-4 --n 16 --steps 8
        --rounds 3)

timed() {  # timed NAME CMD...: run CMD while sampling GPU utilisation; writes gpu/NAME.csv and gpu/NAME.seconds
  local name=$1
  shift
  nvidia-smi --query-gpu=timestamp,utilization.gpu --format=csv,noheader,nounits -lms 200 \
    >"$BTP_DATA_DIR/gpu/$name.csv" 2>/dev/null &
  local smi=$!
  local start=$SECONDS
  "$@" || { kill "$smi"; return 1; }
  echo $((SECONDS - start)) >"$BTP_DATA_DIR/gpu/$name.seconds"
  kill "$smi" 2>/dev/null || true
}

case "${1:-summary}" in
  run)
    for seed in ${2:-0}; do
      [ -e "$BTP_DATA_DIR/runs/lock-s$seed/state.json" ] && resume=(--resume "lock-s$seed") || resume=()
      timed "lock-s$seed" python3 -m services.pipeline.cli.main run --name "lock-s$seed" --seed "$seed" \
        "${COMMON[@]}" "${resume[@]}" --json >"$BTP_DATA_DIR/gpu/lock-s$seed.json"
      [ -e "$BTP_DATA_DIR/runs/async-s$seed/state.json" ] && resume=(--resume "async-s$seed") || resume=()
      timed "async-s$seed" python3 -m services.pipeline.cli.main run --async --name "async-s$seed" --seed "$seed" \
        "${COMMON[@]}" --publish-every "${PUBLISH_EVERY:-8}" --max-lag 1 --actors 2 "${resume[@]}" --json \
        >"$BTP_DATA_DIR/gpu/async-s$seed.json"
    done
    "$0" summary
    ;;
  summary)
    python3 - <<'PY'
import json, os
from pathlib import Path

data = Path(os.environ["BTP_DATA_DIR"])
out = {}
for secs in sorted((data / "gpu").glob("*.seconds")):
    name = secs.stem
    util = []
    for line in (data / "gpu" / f"{name}.csv").read_text().splitlines():
        try:
            util.append(float(line.split(",")[-1]))
        except ValueError:
            pass
    metrics = [json.loads(p.read_text()) for p in sorted((data / "runs" / name / "metrics").glob("round_*.json"),
                                                           key=lambda p: int(p.stem.split("_")[1]))]
    curve = []
    for m in metrics:
        if "eval" not in m:
            continue
        trained = m.get("trained_programs", m["round"] * 8 * 16)
        wall = m.get("wall_seconds")
        curve.append({"trained_programs": trained, "pass_rate": m["eval"]["pass_rate"],
                      "accuracy": m["eval"]["accuracy"], "wall_seconds": wall})
    eval_s = sum(m.get("eval_seconds") or 0 for m in metrics)
    out[name] = {"seconds": int(secs.read_text()), "eval_seconds": round(eval_s, 1),
                 "gpu_busy_fraction": sum(u > 0 for u in util) / max(1, len(util)),
                 "gpu_mean_utilisation": sum(util) / max(1, len(util)) / 100, "curve": curve}
for name, r in out.items():
    if name.startswith("async-"):
        lock = out.get("lock-" + name.split("-", 1)[1])
        if lock and lock["curve"]:
            target = lock["curve"][-1]["pass_rate"]
            hit = [c for c in r["curve"] if c["pass_rate"] >= target and c["wall_seconds"] is not None]
            r["seconds_to_lockstep_final"] = hit[0]["wall_seconds"] if hit else None
            r["lockstep_final_pass_rate"] = target
print(f"{'run':14} {'wall s':>7} {'eval s':>7} {'GPU busy':>8} {'GPU util':>8}  held-out pass rate by trained programs")
for name, r in out.items():
    curve = ", ".join(f"{c['trained_programs']}:{c['pass_rate']:.3f}" for c in r["curve"])
    print(f"{name:14} {r['seconds']:7d} {r['eval_seconds']:7.1f} {r['gpu_busy_fraction']:8.2f} "
          f"{r['gpu_mean_utilisation']:8.2f}  {curve}")
    if "seconds_to_lockstep_final" in r:
        print(f"{'':14} reaches lockstep's final {r['lockstep_final_pass_rate']:.3f} at {r['seconds_to_lockstep_final']} s")
text = json.dumps(out, indent=2)
(data / "async-results.json").write_text(text)
if os.environ.get("OUT"):
    Path(os.environ["OUT"], "async-results.json").write_text(text)
PY
    ;;
  *) sed -n 2,17p "$0"; exit 2 ;;
esac
