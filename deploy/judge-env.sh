#!/usr/bin/env bash
# Make a named interpreter environment for the judge: a virtualenv of the sandbox's own interpreter with
# the packages programs may import, then point the judge at it.
#   bash deploy/judge-env.sh scientific numpy sympy          # -> $BTP_DATA_DIR/judge-envs/scientific
#   BTP_JUDGE_ENVIRONMENTS='{"scientific": "<that folder>"}' btp serve judge
# Programs ask for it with "environment": "scientific" on a judge request or a test spec. The folder is
# mounted read-only into containers of its own; the isolation is the same as for the bare interpreter.
set -euo pipefail
name="${1:?usage: judge-env.sh NAME PACKAGE...}"
shift
[ "$#" -gt 0 ] || { echo "usage: judge-env.sh NAME PACKAGE..." >&2; exit 2; }
python="${BTP_JUDGE_PYTHON:-/usr/bin/python3}"   # the interpreter the sandbox runs (judge setting `python`)
dest="${BTP_DATA_DIR:-$HOME/.cache/btp}/judge-envs/$name"
[ -x "$dest/bin/python" ] || "$python" -m venv "$dest"
"$dest/bin/python" -m pip install -q --disable-pip-version-check "$@"
chmod -R a+rX "$dest"   # sandboxed programs run as unprivileged uids
echo "judge environment '$name' in $dest"
echo "BTP_JUDGE_ENVIRONMENTS='{\"$name\": \"$dest\"}'"
