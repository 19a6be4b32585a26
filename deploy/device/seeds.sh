#!/usr/bin/env bash
# On the GPU machine (after unpack.sh install/stash/join): the Results II runs of docs/results.md, many
# `btp experiment` processes side by side on one GPU (one per seed and recipe group), in the background.
#
#   seeds.sh start     MBPP 5 seeds x {p2value-rank, rejection} + the same-seed repeat, CodeIO 5 seeds x 4 recipes
#   seeds.sh check     the judge environment: a small CodeIO import with numpy
#   seeds.sh next      what Results II did not run yet (10 processes): 5 rounds + HumanEval transfer for
#                      p2value-rank and rejection (5 seeds), the possibility modes (5 seeds), k = 1 and 5
#                      (5 seeds); with the Gemma pieces stashed and joined, also the Gemma learning-rate sweep
#   seeds.sh wait S    wait while any runs (at most S seconds), then pack phases/logs into $OUT/results.tgz
#
# Each experiment's shared phases (CodeIO import, beam buffer, base evaluation) run in its seed-0 process;
# the others start with --no-shared and wait for them. The CodeIO judge environment is the image's own
# virtualenv (/opt/torch/.venv: numpy, sympy, scipy ...), mounted read-only into the judge's containers.
set -euo pipefail
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export BTP_DATA_DIR=${BTP_DATA_DIR:-/tmp/btp}
export BTP_GENERATOR_MAX_BATCH_PROMPTS=${BTP_GENERATOR_MAX_BATCH_PROMPTS:-64}
export BTP_JUDGE_WORKERS=${BTP_JUDGE_WORKERS:-2} BTP_JUDGE_ENVIRONMENT_WORKERS=${BTP_JUDGE_ENVIRONMENT_WORKERS:-2}
export BTP_JUDGE_ENVIRONMENTS=${BTP_JUDGE_ENVIRONMENTS:-"{\"scientific\": \"$(dirname "$(dirname "$(command -v python3)")")\"}"}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
M=docs/results/exp-mbpp-smollm2-seeds.json
C=docs/results/exp-codeio-smollm2.json
logs=$BTP_DATA_DIR/logs
mkdir -p "$logs"

launch() {  # NAME CONFIG ARGS...
  local name=$1 config=$2
  shift 2
  setsid nohup python3 -m services.pipeline.experiments.command --config "$config" "$@" >"$logs/$name.log" 2>&1 </dev/null &
  sleep 2  # staggered: the processes open the shared SQLite buffers at different moments
}
alive() { pgrep -f "^python3 -m services[.]pipeline[.]experiments[.]command" >/dev/null; }  # not the calling shell, whose command line names it too

pack() {
  for f in "$logs"/*.log; do echo "== $f"; tail -n "${TAIL:-3}" "$f"; done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true
  uptime
  if alive; then echo RUNNING; else echo IDLE; fi
  [ -n "${OUT:-}" ] && tar czf "$OUT/results.tgz" -C "$BTP_DATA_DIR" --exclude='*/checkpoints' \
    --exclude='*/buffer-own-*' experiments logs && ls -la "$OUT/results.tgz"
  return 0
}

case "${1:-}" in
  start)
    echo "judge environments: $BTP_JUDGE_ENVIRONMENTS"
    python3 -c "from pathlib import Path; from services.models.prepare import model_dir; \
print(model_dir('SmolLM2-135M-Instruct', data_dir=Path('$BTP_DATA_DIR')))"
    launch codeio-s0-a $C --only p2value-rank,alpha-0 --seeds 0
    launch mbpp-s0 $M --only p2value-rank,rejection --seeds 0
    for s in 1 2 3 4; do launch "mbpp-s$s" $M --no-shared --only p2value-rank,rejection --seeds "$s"; done
    launch mbpp-repeat $M --no-shared --only p2value-rank-repeat,rejection-repeat --seeds 0
    for i in $(seq 60); do [ -e "$BTP_DATA_DIR/experiments/exp-codeio-smollm2/tasks.json" ] && break; sleep 5; done
    launch codeio-s0-b $C --no-shared --only rejection,failed-only --seeds 0
    for s in 1 2 3 4; do
      launch "codeio-s$s-a" $C --no-shared --only p2value-rank,alpha-0 --seeds "$s"
      launch "codeio-s$s-b" $C --no-shared --only rejection,failed-only --seeds "$s"
    done
    sleep 20
    pack
    ;;
  next)
    R=docs/results/exp-mbpp-smollm2-rounds5.json P=docs/results/exp-mbpp-smollm2-possibility.json
    launch rounds5-s0 $R --seeds 0
    launch possibility-s0 $P --seeds 0
    launch k1-s0 docs/results/exp-mbpp-smollm2-k1.json
    launch k5-s0 docs/results/exp-mbpp-smollm2-k5.json
    for s in 1 2 3 4; do launch "rounds5-s$s" $R --no-shared --seeds "$s"; done
    launch possibility-s1-4 $P --no-shared --seeds 1,2,3,4
    if [ -e /tmp/btp-models/gemma-3-270m-q4_k_m.gguf ]; then
      launch gemma-lr docs/results/exp-mbpp-gemma-lr.json
    fi
    sleep 20
    pack
    ;;
  check)  # the judge environment works: a numpy program passes there and fails without it
    echo "judge environments: $BTP_JUDGE_ENVIRONMENTS"
    python3 - <<'PY'
from contextlib import ExitStack
from services.common.schemas.judge import CallCase, CallTests, JudgeRequest
from services.pipeline.connect import embedded_judge
from services.pipeline.settings import Settings

program = "import numpy as np\ndef f(xs):\n    return int(np.sum(np.array(xs)))\n"
with ExitStack() as stack:
    judge = embedded_judge(stack, Settings())
    for env in ("scientific", None):
        tests = CallTests(kind="call", fn_name="f", cases=[CallCase(args=[[1, 2, 3]], expected=6)], environment=env)
        r = judge.judge(JudgeRequest(program=program, tests=tests))
        print("environment", env, r.verdict, r.pass_rate)
PY
    ;;
  wait)
    end=$((SECONDS + ${2:-300}))
    while alive && [ "$SECONDS" -lt "$end" ]; do sleep 10; done
    pack
    ;;
  *) sed -n 2,10p "$0"; exit 2 ;;
esac
