#!/usr/bin/env bash
# On the GPU machine (after unpack.sh install/join): run `btp experiment` in the background so a run
# outlives the call that started it, watch it, and bring its results back.
#
#   experiment.sh smoke                      judge (bubblewrap) + generator + GPU sanity check
#   experiment.sh start NAME CONFIG [ARGS]   start `python -m services.pipeline.experiments.command --config CONFIG ARGS`
#   experiment.sh wait SECONDS               wait while a run is alive (at most SECONDS), then `status`
#   experiment.sh status                     log tails; packs results into $OUT/experiments.tgz when $OUT is set
#   experiment.sh restore TGZ                unpack a saved experiments.tgz: the next start resumes from it
#
# Results live in $BTP_DATA_DIR/experiments/<name>/ (phases, buffers, results.*); checkpoints are not packed.
set -euo pipefail
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export BTP_DATA_DIR=${BTP_DATA_DIR:-/tmp/btp}
export BTP_GENERATOR_MAX_BATCH_PROMPTS=${BTP_GENERATOR_MAX_BATCH_PROMPTS:-64}
export PYTHONUNBUFFERED=1
logs=$BTP_DATA_DIR/logs
mkdir -p "$logs"

alive() { pgrep -f "^python3 -m services[.]pipeline[.]experiments[.]command" >/dev/null; }  # not the calling shell, whose command line names it too

status() {
  for f in "$logs"/*.log; do
    [ -e "$f" ] || continue
    echo "== $f"
    tail -n "${TAIL:-12}" "$f"
  done
  nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv,noheader || true
  if alive; then echo "RUNNING"; else echo "IDLE"; fi
  if [ -n "${OUT:-}" ] && [ -d "$BTP_DATA_DIR/experiments" ]; then
    tar czf "$OUT/experiments.tgz" -C "$BTP_DATA_DIR" --exclude='*/checkpoints' experiments logs
    ls -la "$OUT/experiments.tgz"
  fi
}

case "${1:-status}" in
  smoke)
    python3 - <<'PY'
from contextlib import ExitStack
import torch
from services.common.schemas.judge import CheckTests, JudgeRequest
from services.pipeline.connect import embedded_judge
from services.pipeline.settings import Settings

print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
with ExitStack() as stack:
    judge = embedded_judge(stack, Settings())
    tests = CheckTests(entry_point="f", code="def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(2) == 4\n")
    good = judge.judge(JudgeRequest(program="def f(x):\n    return 2 * x\n", tests=tests))
    bad = judge.judge(JudgeRequest(program="import socket\nsocket.create_connection(('1.1.1.1', 53), 2)\ndef f(x):\n    return x\n", tests=tests))
    print("judge good", good.verdict, good.pass_rate, "| network program", bad.verdict, bad.pass_rate)
PY
    ;;
  start)
    name=$2 config=$3
    shift 3
    setsid nohup python3 -m services.pipeline.experiments.command --config "$config" "$@" >"$logs/$name.log" 2>&1 </dev/null &
    sleep "${SETTLE:-45}"
    status
    ;;
  wait)
    end=$((SECONDS + ${2:-300}))
    while alive && [ "$SECONDS" -lt "$end" ]; do sleep 10; done
    status
    ;;
  status) status ;;
  restore)
    tar xzf "$2" -C "$BTP_DATA_DIR"
    ls "$BTP_DATA_DIR/experiments"
    ;;
  *) sed -n 2,12p "$0"; exit 2 ;;
esac
