#!/usr/bin/env bash
# TEST-ONLY: the docker-compose stack for real on a machine without an image registry (issue 16):
# start dockerd if none runs, build the images (build-images.sh), then run tests/deploy/test_compose_stack.py
# (every service healthy, the README's curl round, `btp run` in the stack, containers killed mid-round,
# scaled judges and trainer workers; then deploy/docker-stack.yml on a single-node swarm, test_swarm_stack.py).
# Measured times land in $BTP_DOCKER_RESULTS
# (default /tmp/btp-compose-results.json).
#   bash deploy/compose-test/run.sh            # needs root, Docker 20.10+ and docker-compose 1.29 or `docker compose`
#   SKIP_BUILD=1 bash deploy/compose-test/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null && [ ! -x /usr/sbin/dockerd ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io docker-compose
  fi
  # the judge-node seccomp profile (deploy/swarm/judge-node-seccomp.json) so that judges run as swarm
  # services too (tests/deploy/test_swarm_stack.py); compose's judge sets its own (unconfined)
  mkdir -p /etc/docker && cp deploy/swarm/judge-node-seccomp.json /etc/docker/seccomp-judge-node.json
  echo "== starting dockerd (log: /var/log/btp-dockerd.log)"
  nohup "$(command -v dockerd || echo /usr/sbin/dockerd)" --seccomp-profile /etc/docker/seccomp-judge-node.json \
    >/var/log/btp-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  bash deploy/compose-test/build-images.sh
fi
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
BTP_DOCKER_TESTS=1 "$py" -m pytest -p no:cacheprovider -x -v tests/deploy/test_compose_stack.py \
  tests/deploy/test_swarm_stack.py "$@"
