#!/usr/bin/env bash
# TEST-ONLY: build every image docker-compose.yml names on a machine WITHOUT an image registry.
#   1. debian:bookworm from debootstrap (docker import), when missing;
#   2. stand-ins tagged python:3.11-slim, postgres:16, redis:7, nginx:1.27 built from it (deploy/compose-test/images),
#      when missing;
#   3. btp:latest from the plain deploy/Dockerfile, with the CPU torch wheel served by a local index on
#      127.0.0.1 (the host's pip finds the +cpu wheel; a plain `torch` would be a multi-GB CUDA build) and
#      `docker build --network host` so pip reaches the package index through the host's proxy/CA.
# Users with a registry just run `docker compose up --build`; nothing here is needed there.
# Env: BTP_COMPOSE_TEST_WORK (scratch folder, default /var/tmp/btp-compose-test), REBUILD=1 (stand-ins too).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${BTP_COMPOSE_TEST_WORK:-/var/tmp/btp-compose-test}
mkdir -p "$work"
has() { docker image inspect "$1" >/dev/null 2>&1; }
stamp() { date +%s; }

if ! has debian:bookworm; then
  echo "== debian:bookworm (debootstrap)"
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb
  tar -C "$work/rootfs" -c . | docker import - debian:bookworm
  rm -rf "$work/rootfs"
fi

cp /etc/ssl/certs/ca-certificates.crt "$here/images/python/host-ca-certificates.crt"
for pair in python:python:3.11-slim redis:redis:7 postgres:postgres:16 nginx:nginx:1.27; do
  dir=${pair%%:*}; tag=${pair#*:}
  if [ "${REBUILD:-0}" = 1 ] || ! has "$tag"; then
    echo "== stand-in $tag"
    docker build -q -t "$tag" "$here/images/$dir"
  fi
done

echo "== local index with the CPU torch wheel"
idx="$work/torch-index"
mkdir -p "$idx/files"
if ! ls "$idx"/files/torch-2.13.0* >/dev/null 2>&1; then
  pip download --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
    --platform manylinux2014_x86_64 --platform any "torch==2.13.0" -d "$idx/files"
fi
python3 - "$idx" <<'PY'
import pathlib, re, sys
idx = pathlib.Path(sys.argv[1])
for f in sorted((idx / "files").glob("*.whl")):
    name = re.sub(r"[-_.]+", "-", f.name.split("-")[0]).lower()
    d = idx / "simple" / name
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "index.html", "a") as out:
        out.write(f'<a href="../../files/{f.name}">{f.name}</a>\n')
PY
port=${BTP_TORCH_INDEX_PORT:-18765}
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$idx" >"$work/torch-index.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$idx/simple"' EXIT
sleep 1

echo "== btp:latest from deploy/Dockerfile"
start=$(stamp)
docker build --network host --build-arg "TORCH_INDEX=http://127.0.0.1:$port/simple" \
  -f "$root/deploy/Dockerfile" -t btp:latest "$root"
took=$(( $(stamp) - start ))
size=$(docker image inspect -f '{{.Size}}' btp:latest)
echo "btp:latest built in ${took}s, $(( size / 1000000 )) MB" | tee "$work/build-result.txt"
