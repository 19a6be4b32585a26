#!/bin/sh
# TEST-ONLY: like the official redis image, run redis-server with protected mode off and no config file.
set -eu
if [ "${1:-}" = "redis-server" ]; then
  shift
  exec redis-server --protected-mode no --bind "* -::*" "$@"
fi
exec "$@"
