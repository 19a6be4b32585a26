#!/usr/bin/env bash
# TEST-ONLY: try the user-facing docker-compose.yml on a single-node Docker Swarm (`docker stack deploy`)
# and print what runs and what does not (docs/deploy.md, "Docker Swarm"). Needs the images of
# build-images.sh. Leaves the swarm again if this script created it.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
docker=${DOCKER:-docker}
created=0
if [ "$($docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  $docker swarm init --advertise-addr "$(hostname -I | awk '{print $1}')" >/dev/null && created=1
fi
export BTP_GENERATOR_PORT=28001 BTP_JUDGE_PORT=28002 BTP_BUFFER_PORT=28003 BTP_TRAINER_PORT=28004
echo "== $docker stack deploy -c docker-compose.yml btpswarm"
$docker stack deploy -c docker-compose.yml btpswarm 2>&1
for _ in $(seq 1 ${SWARM_WAIT_S:-150}); do sleep 1; done
echo "== services"
$docker stack services btpswarm
echo "== tasks"
$docker stack ps btpswarm --no-trunc --format '{{.Name}} {{.CurrentState}} {{.Error}}' | head -30
echo "== judge"
$docker service logs --tail 5 btpswarm_judge 2>&1 | cut -c1-400
for svc in buffer generator trainer; do
  port=$(eval echo "\$BTP_${svc^^}_PORT")
  echo "== $svc /health on :$port: $(curl -s -m 5 "127.0.0.1:$port/health")"
done
$docker stack rm btpswarm >/dev/null
sleep 10
if [ "$created" = 1 ]; then $docker swarm leave --force >/dev/null; fi
