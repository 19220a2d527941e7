#!/usr/bin/env bash
# systemd-box-test.sh: tests systemd/edgeai.service with the built edgeaid under a real systemd
# (PID 1 in a throwaway container made by shared/tools/systemd-box), as installed on a device:
#
#   - systemd-analyze verify of the installed unit; sysusers.d and tmpfiles.d applied for real;
#   - a config with an unknown key: the start fails with exit status 78 and no restart;
#   - `systemctl start` succeeds (Type=notify: READY=1 arrived), StatusText is set, GET /health
#     answers 200, the socket has mode 0660 and group edgeai, journald holds structured entries;
#   - workflow code nodes under the unit's own hardening: the daemon finds /usr/bin/python3
#     (edgeaictl status), a Python and a JavaScript code node run, and Python code cannot read
#     the store in /var/lib/edgeai (landlock) nor open a socket (seccomp);
#   - D-Bus with the installed policy: org.edgeai.Daemon1 owned by user edgeai, edgeaictl --bus system
#     as root and as an edgeai-admin member works, another user is refused by the bus policy but
#     reads properties, and Reload over D-Bus re-reads the config (journal field F_METHOD=Reload);
#   - the audit trail: a refused API key and the D-Bus Reload are journal entries with F_AUDIT and
#     F_ACTION, listed by edgeaictl audit, and the refused key never reaches the journal;
#   - D-Bus RestoreBackup of a backup just taken: the daemon drains and execs itself in place (same
#     MainPID, no systemd restart) and the new image applies the staged restore (restore.previous-* kept);
#   - `systemctl reload` (SIGHUP) keeps the same process running;
#   - `systemctl stop` ends with the daemon's own exit status 0 (a drain, not a kill);
#   - with FAILPOINTS=inference-hang=return (the `fail` crate; needs the `failpoints` build) and WatchdogSec=3s,
#     systemd kills the daemon for a watchdog timeout and restarts it;
#   - socket activation (edgeai.socket, enabled with the unit): after `systemctl stop` the socket still
#     listens and a request starts the daemon, which serves systemd's socket (fd 3, named unix); a request
#     sent while a restart has no daemon running (an ExecStartPre= sleep widens the gap) and requests sent
#     during a plain `systemctl restart` all get answers; edgeai-tcp.socket passes the TCP port too, and a
#     TCP request starts a stopped daemon;
#   - A/B updates (docs/update.md) with signed bundles of the built edgeaid: a version that crashes at
#     start (FAILPOINTS=update-slot-crash) and one that hangs after READY (update-gate-hang, WatchdogSec=3s:
#     systemd's watchdog kills it) are each rolled back by the daemon's own next start, before the unit's
#     StartLimitBurst gives up; a healthy version commits itself, and the operator's rollback goes back.
#
# Inside the box the unit runs the host's build output and model through bind mounts
# (ExecStart= rewritten to /opt/edgeai-test/bin/edgeaid), with configs/edgeai.toml as
# /etc/edgeai/edgeai.toml and a conf.d drop-in for the test port and model path.
#
# Environment: EDGEAID  the binary (default <repo>/target/debug/edgeaid, or $CARGO_TARGET_DIR)
#              MODEL    the GGUF (default <repo>/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf)
# Needs root, systemd-nspawn (Debian: systemd-container) and systemd-box at
# <repo>/../shared/tools/systemd-box (or $SYSTEMD_BOX); without them it prints a SKIP line and
# exits 0, except under CI (CI set), where a missing piece is a failure.
# Prints one PASS/FAIL line per check, then "N passed, M failed"; exits 1 on any failure.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))
box=${SYSTEMD_BOX:-$repo/../shared/tools/systemd-box}

skip() {
  if [ -n "${CI:-}" ]; then echo "FAIL: systemd-box tests cannot run under CI: $*"; echo "0 passed, 1 failed"; exit 1; fi
  echo "SKIP: systemd-box tests: $*"; exit 0
}
[ -x "$box" ] || skip "$box not found"
[ "$(id -u)" -eq 0 ] || skip "need root"
command -v systemd-nspawn >/dev/null 2>&1 || skip "systemd-nspawn missing (apt-get install systemd-container)"

edgeaid=${EDGEAID:-${CARGO_TARGET_DIR:-$repo/target}/debug/edgeaid}
model=${MODEL:-$repo/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -x "$edgeaid" ] || { echo "FAIL: $edgeaid is missing; build first (make test builds it)"; echo "0 passed, 1 failed"; exit 1; }
edgeaictl=$(dirname "$edgeaid")/edgeaictl
[ -x "$edgeaictl" ] || { echo "FAIL: $edgeaictl is missing; build first (make test builds it)"; echo "0 passed, 1 failed"; exit 1; }
[ -f "$model" ] || { echo "FAIL: $model is missing; run scripts/fetch-model.sh"; echo "0 passed, 1 failed"; exit 1; }
edgeaid=$(realpath "$edgeaid")
model=$(realpath "$model")

passed=0 failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
indent() { sed 's/^/    /'; }

name=edgeai-test-$$
work=$(mktemp -d)
cleanup() {
  "$box" stop "$name" >/dev/null 2>&1 || true
  rm -rf -- "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_box() { "$box" exec "$name" "$@"; }
# `systemctl show -p PROP --value` inside the box.
prop() { in_box systemctl show -p "$1" --value edgeai 2>/dev/null; }
# Waits up to $1 seconds for the command to succeed.
wait_for() {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Status code of GET $1 on 127.0.0.1:$port (the box shares the host's network).
http_status() (
  exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
  printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$1" >&3
  IFS=' ' read -r -t 5 _ code _ <&3 || exit 1
  printf '%s\n' "$code"
)

port=$(free_port)
mkdir -p "$work/files"
sed 's|^ExecStart=/usr/bin/edgeaid$|ExecStart=/opt/edgeai-test/bin/edgeaid|' "$repo/systemd/edgeai.service" >"$work/files/edgeai.service"
grep -q '^ExecStart=/opt/edgeai-test/bin/edgeaid$' "$work/files/edgeai.service" \
  || { fail "systemd/edgeai.service has no ExecStart=/usr/bin/edgeaid line to rewrite"; echo "$passed passed, $failed failed"; exit 1; }
cat >"$work/files/50-box-test.toml" <<EOF
# systemd-box-test.sh: a free port and the bind-mounted model.
[server]
listen = "127.0.0.1:$port"
[model]
path = "/opt/edgeai-test/model/model.gguf"
[update]
commit_after_secs = 3
EOF
cat >"$work/files/99-bad.toml" <<'EOF'
[server]
no_such_key = 1
EOF
cat >"$work/files/update-crash.conf" <<'EOF'
[Service]
Environment=FAILPOINTS=update-slot-crash=return
EOF
cat >"$work/files/update-hang.conf" <<'EOF'
[Service]
Environment=FAILPOINTS=update-gate-hang=return
WatchdogSec=3s
EOF
cat >"$work/files/watchdog-test.conf" <<'EOF'
[Service]
Environment=FAILPOINTS=inference-hang=return
WatchdogSec=3s
EOF
cp "$repo/systemd/edgeai.socket" "$repo/systemd/edgeai-tcp.socket" "$work/files/"
cat >"$work/files/restart-gap.conf" <<'EOF'
[Service]
ExecStartPre=/bin/sleep 3
EOF
cat >"$work/files/tcp-port.conf" <<EOF
[Socket]
ListenStream=
ListenStream=127.0.0.1:$port
EOF
cp "$repo/configs/edgeai.toml" "$repo/systemd/edgeai.sysusers" "$repo/systemd/edgeai.tmpfiles" "$repo/systemd/org.edgeai.Daemon1.conf" "$work/files/"
cp "$repo/tests/fixtures/dsl/workflow-code-probe-py.yml" "$repo/tests/fixtures/dsl/workflow-code-probe-js.yml" "$work/files/"
chmod -R a+rX "$work"

echo "systemd-box: starting $name (edgeaid: $edgeaid, port $port)"
# SYSTEMD_SECCOMP=0 turns off systemd-nspawn's own seccomp filter around the container, which
# (systemd 252) refuses the landlock calls to everything inside; a gateway's PID 1 has no such
# outer filter. Units' own SystemCallFilter= still applies inside (checked below).
if ! out=$(SYSTEMD_SECCOMP=0 "$box" start "$name" \
  --bind "$work/files:/opt/edgeai-test/files" \
  --bind "$edgeaid:/opt/edgeai-test/bin/edgeaid" \
  --bind "$(realpath "$edgeaictl"):/opt/edgeai-test/bin/edgeaictl" \
  --bind "$model:/opt/edgeai-test/model/model.gguf" 2>&1); then
  fail "systemd-box start"; printf '%s\n' "$out" | indent
  echo "$passed passed, $failed failed"; exit 1
fi

# --- install, as a package would ---------------------------------------------------------------
# shellcheck disable=SC2016 # $f expands inside the box
if out=$(in_box sh -ec '
  f=/opt/edgeai-test/files
  install -D -m 0644 $f/edgeai.service /etc/systemd/system/edgeai.service
  install -D -m 0644 $f/edgeai.socket /etc/systemd/system/edgeai.socket
  install -D -m 0644 $f/edgeai-tcp.socket /etc/systemd/system/edgeai-tcp.socket
  install -D -m 0644 $f/edgeai.sysusers /etc/sysusers.d/edgeai.conf
  install -D -m 0644 $f/edgeai.tmpfiles /etc/tmpfiles.d/edgeai.conf
  install -D -m 0644 $f/edgeai.toml /etc/edgeai/edgeai.toml
  install -D -m 0644 $f/50-box-test.toml /etc/edgeai/conf.d/50-box-test.toml
  # /usr is the host'"'"'s, read-only: the policy goes where the admin'"'"'s copies go; dbus
  # reloads it after systemd-sysusers (below), as a policy naming an unknown user is ignored.
  install -D -m 0644 $f/org.edgeai.Daemon1.conf /etc/dbus-1/system.d/org.edgeai.Daemon1.conf
  systemctl daemon-reload
  systemctl enable edgeai' 2>&1); then
  # Enabled, the unit stays loaded while stopped, so its exit status stays visible.
  pass "unit, sysusers.d, tmpfiles.d, config and D-Bus policy installed in the box; unit enabled"
else
  fail "installing into the box"; printf '%s\n' "$out" | indent
fi

if out=$(in_box systemd-analyze verify /etc/systemd/system/edgeai.service /etc/systemd/system/edgeai.socket \
  /etc/systemd/system/edgeai-tcp.socket 2>&1) && [ -z "$out" ]; then
  pass "systemd-analyze verify (inside the box)"
else
  fail "systemd-analyze verify (inside the box)"; printf '%s\n' "$out" | indent
fi

if out=$(in_box systemd-sysusers 2>&1) && in_box getent passwd edgeai >/dev/null && in_box getent group edgeai-admin >/dev/null \
  && out=$(in_box systemctl reload dbus 2>&1); then
  pass "systemd-sysusers creates user edgeai and group edgeai-admin; dbus reloads its policy"
else
  fail "systemd-sysusers"; printf '%s\n' "$out" | indent
fi

if out=$(in_box systemd-tmpfiles --create /etc/tmpfiles.d/edgeai.conf 2>&1) \
  && [ "$(in_box stat -c '%U:%G %a' /var/lib/edgeai/models)" = "edgeai:edgeai 750" ]; then
  pass "systemd-tmpfiles creates /var/lib/edgeai/models (edgeai:edgeai 0750)"
else
  fail "systemd-tmpfiles"; printf '%s\n' "$out" | indent
fi

# --- a bad config: exit 78, no restart (RestartPreventExitStatus=78) ----------------------------
in_box install -m 0644 /opt/edgeai-test/files/99-bad.toml /etc/edgeai/conf.d/99-bad.toml
in_box timeout 60 systemctl start edgeai >/dev/null 2>&1
sleep 3 # longer than RestartSec=2s: a restart would have happened by now
status=$(prop ExecMainStatus) restarts=$(prop NRestarts) state=$(prop ActiveState)
if [ "$status" = 78 ] && [ "$restarts" = 0 ] && [ "$state" = failed ]; then
  pass "an unknown config key fails the start with status 78 and no restart"
else
  fail "bad config: ExecMainStatus=$status NRestarts=$restarts ActiveState=$state (want 78, 0, failed)"
  in_box journalctl -u edgeai --no-pager -n 20 2>&1 | indent
fi
in_box rm -f /etc/edgeai/conf.d/99-bad.toml
in_box systemctl reset-failed edgeai >/dev/null 2>&1

# --- start: Type=notify returns only after READY=1 ----------------------------------------------
if out=$(in_box timeout 120 systemctl start edgeai 2>&1) && [ "$(prop ActiveState)" = active ]; then
  pass "systemctl start edgeai (READY=1 received)"
else
  fail "systemctl start edgeai"; printf '%s\n' "$out" | indent
  in_box journalctl -u edgeai --no-pager -n 40 2>&1 | indent
fi

status_text=$(prop StatusText)
if [ -n "$status_text" ]; then pass "StatusText is set: $status_text"; else fail "StatusText is empty"; fi

health() { [ "$(http_status /health 2>/dev/null)" = 200 ]; }
if wait_for 10 health; then
  pass "GET /health on 127.0.0.1:$port answers 200"
else
  fail "GET /health on 127.0.0.1:$port: status '$(http_status /health 2>&1)'"
fi

sock=$(in_box stat -c '%a %G' /run/edgeai/edgeai.sock 2>&1)
if [ "$sock" = "660 edgeai" ]; then
  pass "/run/edgeai/edgeai.sock has mode 0660, group edgeai"
else
  fail "/run/edgeai/edgeai.sock: '$sock' (want '660 edgeai')"
fi

# tracing-journald writes native entries: PRIORITY, plus TARGET (the module path, edgeaid::...)
# and CODE_FILE from tracing; plain stdout lines would have neither.
# (No grep -q in a pipe: under pipefail, its early exit fails the writer with SIGPIPE.)
structured() {
  local json
  json=$(in_box journalctl -u edgeai -o json --no-pager 2>/dev/null) || return 1
  [ "$(grep '"PRIORITY"' <<<"$json" | grep '"TARGET":"edgeaid' | grep -c '"CODE_FILE"')" -gt 0 ]
}
if wait_for 10 structured; then
  pass "journald has structured entries from edgeaid (PRIORITY, TARGET=edgeaid::..., CODE_FILE)"
else
  fail "no journal entry of edgeai with PRIORITY, TARGET=edgeaid::... and CODE_FILE"
  in_box journalctl -u edgeai -o json --no-pager -n 3 2>&1 | indent
fi

# --- code nodes under the unit's hardening (landlock + seccomp allowed by SystemCallFilter=) ------
landlock_abi='import ctypes; print(ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1), ctypes.get_errno())'
filtered=$(in_box systemd-run --wait --pipe -q -p SystemCallFilter=@system-service -p SystemCallErrorNumber=EPERM /usr/bin/python3 -c "$landlock_abi" 2>&1)
allowed=$(in_box systemd-run --wait --pipe -q -p SystemCallFilter=@system-service -p SystemCallErrorNumber=EPERM \
  -p "$(grep '^SystemCallFilter=.*landlock' "$repo/systemd/edgeai.service")" /usr/bin/python3 -c "$landlock_abi" 2>&1)
if [ "$filtered" = "-1 1" ] && [ "${allowed%% *}" -ge 1 ] 2>/dev/null; then
  pass "units' seccomp filters apply in the box: @system-service refuses landlock (EPERM), the unit's extra SystemCallFilter= line allows it (ABI ${allowed%% *})"
else
  fail "landlock under @system-service: '$filtered' (want '-1 1'); with the unit's extra line: '$allowed' (want an ABI >= 1)"
fi
ctl() { in_box /opt/edgeai-test/bin/edgeaictl --socket /run/edgeai/edgeai.sock "$@"; }
code_status=$(ctl --json status 2>&1)
if grep -q '"python": *"/usr/bin/python3' <<<"$code_status"; then
  pass "edgeaictl status: Python code nodes run with /usr/bin/python3 under the unit"
else
  fail "edgeaictl status does not show /usr/bin/python3 for code nodes"; printf '%s\n' "$code_status" | indent
  in_box journalctl -u edgeai --no-pager -n 20 2>&1 | indent
fi
# Runs the program $2 in probe app $1 (key $3); prints the run's JSON answer.
probe_run() {
  local body
  body=$(python3 -c 'import json, sys; print(json.dumps({"inputs": {"src": sys.argv[1]}, "response_mode": "blocking", "user": "box"}))' "$2")
  curl -s -m 30 "http://127.0.0.1:$port/v1/workflows/run" -H "Authorization: Bearer $3" -H 'Content-Type: application/json' -d "$body"
}
py_key="" js_key=""
if ctl apps import /opt/edgeai-test/files/workflow-code-probe-py.yml --id probe-py >/dev/null 2>&1 \
  && ctl apps import /opt/edgeai-test/files/workflow-code-probe-js.yml --id probe-js >/dev/null 2>&1; then
  py_key=$(ctl --json keys create --app probe-py 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
  js_key=$(ctl --json keys create --app probe-js 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
fi
ok_py=$(probe_run probe-py $'def main():\n    import json\n    return {"result": json.dumps([1, 2])}\n' "$py_key")
ok_js=$(probe_run probe-js 'function main() { return {result: JSON.stringify([1, 2])}; }' "$js_key")
if grep -q '"result": *"\[1, 2\]"' <<<"$ok_py" && grep -q '"result": *"\[1,2\]"' <<<"$ok_js"; then
  pass "a Python and a JavaScript code node run through POST /v1/workflows/run"
else
  fail "code node runs"; printf 'python: %s\njavascript: %s\n' "$ok_py" "$ok_js" | indent
fi
store_read=$(probe_run probe-py $'def main():\n    return {"result": open("/var/lib/edgeai/edgeai.db", "rb").read(16).decode("latin-1")}\n' "$py_key")
sock_open=$(probe_run probe-py $'def main():\n    import sys, importlib.machinery as m\n    sys.meta_path[:] = [m.BuiltinImporter, m.FrozenImporter, m.PathFinder]\n    return {"result": str(__import__("_socket").socket())}\n' "$py_key")
if grep -q '"status": *"failed"' <<<"$store_read" && grep -q 'Permission' <<<"$store_read" \
  && grep -q '"status": *"failed"' <<<"$sock_open" && ! grep -q 'SQLite' <<<"$store_read"; then
  pass "Python code cannot read the store (landlock) nor open a socket (seccomp) under the unit"
else
  fail "Python code escaped its sandbox under the unit"; printf 'store: %s\nsocket: %s\n' "$store_read" "$sock_open" | indent
fi

# --- D-Bus: org.edgeai.Daemon1 on the system bus, under the installed policy ---------------------
bus_ctl() { in_box /opt/edgeai-test/bin/edgeaictl --bus system "$@"; }
owner=$(in_box busctl --system status org.edgeai.Daemon1 2>&1 | sed -n 's/^UID=//p' | head -1)
bus_status=$(bus_ctl --json status 2>&1)
if [ "$owner" = "$(in_box id -u edgeai)" ] && grep -q '"state": *"ready"' <<<"$bus_status"; then
  pass "D-Bus: org.edgeai.Daemon1 is owned by user edgeai; edgeaictl --bus system status as root answers ready"
else
  fail "D-Bus: owner uid '$owner' (want edgeai's), status: $bus_status"
  in_box journalctl -u edgeai --no-pager -n 20 2>&1 | grep -i 'd-bus' | indent
fi
in_box useradd -M -N -G edgeai-admin operator >/dev/null 2>&1
in_box useradd -M -N visitor >/dev/null 2>&1
# setpriv, not runuser: the box has no PAM session setup.
as_user() { local u=$1; shift; in_box setpriv --reuid="$u" --regid=users --init-groups "$@"; }
as_operator=$(as_user operator /opt/edgeai-test/bin/edgeaictl --bus system apps list 2>&1)
as_visitor=$(as_user visitor /opt/edgeai-test/bin/edgeaictl --bus system apps list 2>&1); visitor_code=$?
visitor_reads=$(as_user visitor busctl --system get-property org.edgeai.Daemon1 /org/edgeai/Daemon1 org.edgeai.Daemon1 State 2>&1)
if grep -q '^probe-py ' <<<"$as_operator" && [ "$visitor_code" = 77 ] && grep -q 'AccessDenied' <<<"$as_visitor" \
  && [ "$visitor_reads" = 's "ready"' ]; then
  pass "D-Bus policy: an edgeai-admin member lists the apps; another user is refused by the bus (exit 77) but reads State"
else
  fail "D-Bus policy: operator: $as_operator / visitor (exit $visitor_code): $as_visitor / visitor reads State: $visitor_reads"
fi
# No --bus and no --socket: an installed edgeaictl finds the daemon on the system bus by itself
# (reload works over D-Bus only, so an answer proves the route).
bus_reload=$(in_box /opt/edgeai-test/bin/edgeaictl --json reload 2>&1)
reload_logged=$(in_box journalctl -u edgeai -o json --no-pager 2>/dev/null | grep -c '"F_METHOD":"Reload"')
if grep -q '"apps_served"' <<<"$bus_reload" && [ "$reload_logged" -ge 1 ]; then
  pass "edgeaictl reload (no flags: the system bus by default) re-reads the config, and the journal names the D-Bus call"
else
  fail "D-Bus Reload: $bus_reload; journal entries with F_METHOD=Reload: $reload_logged"
  in_box journalctl -u edgeai -o json --no-pager 2>/dev/null | grep 'D-Bus call' | tail -2 | indent
fi

# --- The audit trail: journal fields (F_AUDIT, F_ACTION) and the store, through edgeaictl audit --------
bad_key=app-box-not-a-real-key-0123456789
bad_code=$(curl -s -o /dev/null -w '%{http_code}' -m 10 "http://127.0.0.1:$port/v1/parameters" -H "Authorization: Bearer $bad_key")
audit_journaled() {
  in_box journalctl -u edgeai -o json --no-pager 2>/dev/null | grep '"F_AUDIT":"auth_failure"' | grep -q '"F_ACTION":"GET /v1/parameters"'
}
wait_for 10 audit_journaled; refusal_journaled=$?
reload_audited=$(in_box journalctl -u edgeai -o json --no-pager 2>/dev/null | grep '"F_AUDIT":"admin"' | grep -c '"F_ACTION":"D-Bus Reload"')
secret_in_journal=$(in_box journalctl -u edgeai --no-pager -o json 2>/dev/null | grep -c "$bad_key")
audit_listed=$(in_box /opt/edgeai-test/bin/edgeaictl --socket /run/edgeai/edgeai.sock audit 2>&1)
if [ "$bad_code" = 401 ] && [ "$refusal_journaled" = 0 ] && [ "$reload_audited" -ge 1 ] && [ "$secret_in_journal" = 0 ] \
  && grep -q 'auth_failure.*GET /v1/parameters' <<<"$audit_listed" && grep -q 'admin.*D-Bus Reload' <<<"$audit_listed"; then
  pass "audit: a refused key and the D-Bus Reload are journal entries with F_AUDIT and F_ACTION and rows of edgeaictl audit; the key is not in the journal"
else
  fail "audit: bad key answered $bad_code, refusal journaled: $refusal_journaled, Reload entries: $reload_audited, secret in journal: $secret_in_journal; edgeaictl audit: $audit_listed"
fi

# --- RestoreBackup: the daemon drains and execs itself in place (same MainPID, RELOADING=1 then the new
# image's READY=1; no systemd restart), and the new image applies the staged restore ----------------
pid=$(prop MainPID) restarts=$(prop NRestarts)
restore_out=$(bus_ctl backup create /var/tmp/edgeai-restore.tar 2>&1 && bus_ctl backup restore /var/tmp/edgeai-restore.tar 2>&1)
restore_restarted() {
  [ "$(prop NRestarts)" = "$restarts" ] && [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" = "$pid" ] \
    && in_box journalctl -u edgeai --no-pager 2>/dev/null | grep -q 'restore applied: serving the restored state' \
    && in_box journalctl -u edgeai --no-pager 2>/dev/null | grep -q 'restarting in place: exec the installed binary'
}
if grep -q 'applied now' <<<"$restore_out" && wait_for 90 restore_restarted && [ "$(in_box systemctl is-failed edgeai 2>&1)" != failed ] \
  && in_box sh -c 'ls -d /var/lib/edgeai/restore.previous-*' >/dev/null 2>&1; then
  pass "D-Bus RestoreBackup: the daemon restarts in place (same MainPID $pid, NRestarts $restarts), the new image applies the restore"
else
  fail "D-Bus RestoreBackup: $restore_out / NRestarts=$(prop NRestarts) (was $restarts) ActiveState=$(prop ActiveState) MainPID=$(prop MainPID) (was $pid)"
  in_box journalctl -u edgeai --no-pager -n 20 2>&1 | indent
fi

# --- reload: SIGHUP must not kill it ------------------------------------------------------------
pid=$(prop MainPID)
if in_box timeout 60 systemctl reload edgeai >/dev/null 2>&1 && sleep 1 \
  && [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" = "$pid" ]; then
  pass "systemctl reload keeps the daemon running (same MainPID)"
else
  fail "systemctl reload: ActiveState=$(prop ActiveState) MainPID=$(prop MainPID) (was $pid)"
fi

# --- stop: the daemon's own exit 0 within TimeoutStopSec ----------------------------------------
if out=$(in_box timeout 120 systemctl stop edgeai 2>&1); then
  code=$(prop ExecMainCode) status=$(prop ExecMainStatus) result=$(prop Result)
  # ExecMainCode 1 = CLD_EXITED: it exited by itself rather than dying of the signal.
  if [ "$code" = 1 ] && [ "$status" = 0 ] && [ "$result" = success ]; then
    pass "systemctl stop: edgeaid exited with status 0"
  else
    fail "systemctl stop: ExecMainCode=$code ExecMainStatus=$status Result=$result (want 1, 0, success)"
    in_box journalctl -u edgeai --no-pager -n 20 2>&1 | indent
  fi
else
  fail "systemctl stop edgeai"; printf '%s\n' "$out" | indent
fi

# --- watchdog: a hung inference thread stops WATCHDOG=1, systemd kills and restarts ------------
in_box install -D -m 0644 /opt/edgeai-test/files/watchdog-test.conf /etc/systemd/system/edgeai.service.d/watchdog-test.conf
in_box systemctl daemon-reload
in_box systemctl reset-failed edgeai >/dev/null 2>&1
in_box timeout 120 systemctl start edgeai >/dev/null 2>&1
restarted() {
  local log
  [ "$(prop NRestarts)" -ge 1 ] 2>/dev/null || return 1
  log=$(in_box journalctl -u edgeai --no-pager 2>/dev/null) || return 1
  grep -q 'Watchdog timeout' <<<"$log"
}
if wait_for 30 restarted; then
  pass "watchdog: a hung inference thread gets a watchdog timeout and a restart (NRestarts=$(prop NRestarts))"
else
  fail "watchdog: NRestarts=$(prop NRestarts), no 'Watchdog timeout' restart within 30 s (is edgeaid built with --features failpoints?)"
  in_box journalctl -u edgeai --no-pager -n 20 2>&1 | indent
fi
in_box systemctl stop edgeai >/dev/null 2>&1

# --- socket activation: edgeai.socket holds the socket across stops and restarts -----------------
in_box rm -f /etc/systemd/system/edgeai.service.d/watchdog-test.conf
in_box systemctl daemon-reload
in_box systemctl reset-failed edgeai >/dev/null 2>&1
# GET $1 with curl over the unix socket, inside the box; prints the HTTP status.
sock_get() { in_box curl -s -o /dev/null -w '%{http_code}' -m 90 --unix-socket /run/edgeai/edgeai.sock "http://edgeai$1"; }
# The journal's JSON entries "serving the $1 (unix|TCP) socket systemd passed".
adopted() { in_box journalctl -u edgeai -o json --no-pager 2>/dev/null | grep "serving the $1 socket systemd passed"; }
socket_state="$(in_box systemctl is-enabled edgeai.socket 2>&1) $(in_box systemctl is-active edgeai.socket 2>&1)"
state=$(prop ActiveState)
if [ "$socket_state" = "enabled active" ] && [ "$state" != active ] && in_box test -S /run/edgeai/edgeai.sock; then
  pass "after systemctl stop edgeai, edgeai.socket (enabled with the unit) still listens on /run/edgeai/edgeai.sock"
else
  fail "after stop: edgeai.socket '$socket_state' (want 'enabled active'), edgeai $state, /run/edgeai: $(in_box ls -l /run/edgeai 2>&1)"
fi
before=$(adopted unix | wc -l)
code=$(sock_get /health)
last=$(adopted unix | tail -1)
if [ "$code" = 200 ] && [ "$(prop ActiveState)" = active ] && [ "$(adopted unix | wc -l)" -gt "$before" ] \
  && grep -q '"F_FD":"3"' <<<"$last" && grep -q '"F_NAME":"unix"' <<<"$last"; then
  pass "a request to the stopped service starts it and gets 200; the daemon serves systemd's socket (fd 3, named unix)"
else
  fail "request to the stopped service: status '$code', edgeai $(prop ActiveState), last adoption: $last"
  in_box journalctl -u edgeai --no-pager -n 20 2>&1 | indent
fi

# A restart with a gap: ExecStartPre= sleeps 3 s, so no daemon runs when the request is sent.
in_box install -D -m 0644 /opt/edgeai-test/files/restart-gap.conf /etc/systemd/system/edgeai.service.d/restart-gap.conf
in_box systemctl daemon-reload
old_pid=$(prop MainPID)
in_box systemctl restart --no-block edgeai
in_gap() { [ "$(prop SubState)" = start-pre ]; }
if wait_for 30 in_gap; then
  code=$(sock_get /health) new_pid=$(prop MainPID)
  if [ "$code" = 200 ] && [ "$new_pid" != "$old_pid" ] && [ "$new_pid" != 0 ]; then
    pass "a request sent while the restarting service had no daemon (in ExecStartPre=) waited in the backlog; the new daemon answered 200"
  else
    fail "request during the restart gap: status '$code', MainPID $old_pid -> $new_pid"
    in_box journalctl -u edgeai --no-pager -n 20 2>&1 | indent
  fi
else
  fail "the restart never reached ExecStartPre= (SubState=$(prop SubState))"
fi
in_box rm -f /etc/systemd/system/edgeai.service.d/restart-gap.conf
in_box systemctl daemon-reload
in_box timeout 120 systemctl start edgeai >/dev/null 2>&1

# A plain restart while a client keeps sending, one request after another: all are answered.
# shellcheck disable=SC2016 # expands inside the box
in_box sh -c 'end=$(($(date +%s) + 8)); while [ "$(date +%s)" -lt $end ]; do
  curl -s -o /dev/null -w "%{http_code}\n" -m 90 --unix-socket /run/edgeai/edgeai.sock http://edgeai/health; sleep 0.05; done' \
  >"$work/codes" 2>&1 &
client=$!
sleep 2
old_pid=$(prop MainPID)
in_box timeout 120 systemctl restart edgeai >/dev/null 2>&1
wait "$client"
total=$(wc -l <"$work/codes") ok=$(grep -c '^200$' "$work/codes")
if [ "$total" -gt 0 ] && [ "$ok" = "$total" ] && [ "$(prop MainPID)" != "$old_pid" ]; then
  pass "systemctl restart while a client sends over the unix socket: all $total requests answered 200"
else
  fail "requests during systemctl restart: $ok of $total answered 200 (MainPID $old_pid -> $(prop MainPID)); codes: $(sort "$work/codes" | uniq -c | tr '\n' ' ')"
fi

# The TCP port through edgeai-tcp.socket (off by default), moved to the test's port by a drop-in.
in_box install -D -m 0644 /opt/edgeai-test/files/tcp-port.conf /etc/systemd/system/edgeai-tcp.socket.d/tcp-port.conf
in_box systemctl daemon-reload
in_box timeout 120 systemctl stop edgeai >/dev/null 2>&1
tcp_on=$(in_box systemctl enable --now edgeai-tcp.socket 2>&1; in_box systemctl is-active edgeai-tcp.socket 2>&1)
before=$(adopted TCP | wc -l)
# curl waits for the daemon to start (http_status gives up after 5 s).
code=$(curl -s -o /dev/null -w '%{http_code}' -m 90 "http://127.0.0.1:$port/health" 2>&1)
last=$(adopted TCP | tail -1)
if [ "$code" = 200 ] && [ "$(prop ActiveState)" = active ] && [ "$(adopted TCP | wc -l)" -gt "$before" ] \
  && grep -q '"F_NAME":"tcp"' <<<"$last" && [ "$(sock_get /health)" = 200 ]; then
  pass "edgeai-tcp.socket: a TCP request starts the stopped service, which serves systemd's TCP socket (named tcp) and the unix one"
else
  fail "edgeai-tcp.socket: enable: $tcp_on; GET /health over TCP: '$code'; edgeai $(prop ActiveState); last adoption: $last"
  in_box journalctl -u edgeai --no-pager -n 20 2>&1 | indent
fi
in_box systemctl disable --now edgeai-tcp.socket >/dev/null 2>&1
in_box timeout 120 systemctl stop edgeai >/dev/null 2>&1

# --- A/B update under the real systemd (docs/update.md): the start limit, Restart= and the watchdog are --
# systemd's own. A new version that crashes at start, and one that hangs after READY (the watchdog kills
# it), are each rolled back by the daemon's own next start within StartLimitBurst; a healthy one commits.
# Bundles of the same edgeaid at versions the manifest names, signed with a throwaway key the box trusts.
bundles_made=1
( "$edgeaictl" keys gen-signing --out "$work/files/sign" >/dev/null \
  && for v in 99.1.0 99.2.0 99.3.0; do
    "$edgeaictl" bundle create --version "$v" --compatible "edgeai-$(uname -m)" --binary "$edgeaid" "$work/files/$v.bundle" >/dev/null \
      && "$edgeaictl" bundle sign --key "$work/files/sign" "$work/files/$v.bundle" >/dev/null || exit 1
  done ) 2>"$work/bundle.err" || bundles_made=0
chmod -R a+rX "$work/files"
in_box install -D -m 0644 /opt/edgeai-test/files/sign.pub /etc/edgeai/trust.d/box-test.pub
upd() { in_box /opt/edgeai-test/bin/edgeaictl --socket /run/edgeai/edgeai.sock --timeout 5m update "$@"; }
# `update status --json`: the field $1 ("running", or "state.<key>").
ustat() {
  upd status --json 2>/dev/null | python3 -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = (v or {}).get(k)
print("" if v is None else v)' "$1"
}
# Starts the service afresh (start-limit counter reset, as after a boot) with the drop-in $1 (or none).
start_fresh() {
  in_box rm -f /etc/systemd/system/edgeai.service.d/update-crash.conf /etc/systemd/system/edgeai.service.d/update-hang.conf
  [ -z "$1" ] || in_box install -D -m 0644 "/opt/edgeai-test/files/$1" "/etc/systemd/system/edgeai.service.d/$1"
  in_box systemctl daemon-reload
  in_box timeout 120 systemctl stop edgeai >/dev/null 2>&1
  in_box systemctl reset-failed edgeai >/dev/null 2>&1
  in_box timeout 120 systemctl start edgeai >/dev/null 2>&1
  wait_for 60 health
}
# start_fresh $1, then installs bundle $2 and prints edgeaictl's answer.
start_and_install() {
  start_fresh "$1"
  upd install "/opt/edgeai-test/files/$2.bundle" 2>&1
}
# Inside the box: GET /health over the unix socket every 20 ms until the file $1 exists (at most 180 s);
# prints the requests, the failed ones and the slowest answer (the longest a client waited across a switch).
cat >"$work/files/poll.py" <<'EOF'
import json, os, socket, sys, time
end, n, bad, slowest = time.monotonic() + 180, 0, 0, 0.0
while time.monotonic() < end and not os.path.exists(sys.argv[1]):
    t = time.monotonic()
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect("/run/edgeai/edgeai.sock")
        s.sendall(b"GET /health HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        s.close()
        ok = data.startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    n += 1
    bad += not ok
    slowest = max(slowest, time.monotonic() - t) if ok else slowest
    time.sleep(0.02)
print(json.dumps({"requests": n, "failed": bad, "slowest_s": round(slowest, 3)}))
EOF
chmod a+r "$work/files/poll.py"
rolled_back_from() {
  [ "$(ustat state.status)" = rolled-back ] && [ "$(ustat state.failed_version)" = "$1" ] && [ "$(prop ActiveState)" = active ] && health
}
if [ "$bundles_made" = 1 ]; then
  # 1. Crashes at start (SIGABRT before main does anything): the exec in place is attempt 1, systemd's
  #    restarts 1 and 2 are attempts 2 and 3, restart 3 rolls back.
  out=$(start_and_install update-crash.conf 99.1.0)
  if wait_for 90 rolled_back_from 99.1.0 && [ "$(ustat running)" = factory ] \
    && [ "$(prop NRestarts)" = 3 ] && [ "$(prop Result)" = success ] \
    && ustat state.last_error | grep -q '3 starts of 99.1.0'; then
    pass "update: a version that crashes at start is rolled back by the 4th start, inside StartLimitBurst (NRestarts=$(prop NRestarts)): $(ustat state.last_error)"
  else
    fail "update crash loop: install said '$out'; status $(ustat state.status), failed_version '$(ustat state.failed_version)', running '$(ustat running)', edgeai $(prop ActiveState)/$(prop Result), NRestarts=$(prop NRestarts)"
    in_box journalctl -u edgeai --no-pager -n 30 2>&1 | indent
  fi
  # 2. Hangs after READY: the self-test stops the inference thread, pings stop, systemd's watchdog aborts it, 3 times.
  since=$(in_box date '+%Y-%m-%d %H:%M:%S')
  out=$(start_and_install update-hang.conf 99.2.0)
  timeouts() { in_box journalctl -u edgeai --since "$since" --no-pager 2>/dev/null | grep -c 'Watchdog timeout'; }
  if wait_for 150 rolled_back_from 99.2.0 && [ "$(ustat running)" = factory ] && [ "$(timeouts)" -ge 3 ] \
    && [ "$(prop Result)" = success ]; then
    pass "update: a version that hangs after READY gets $(timeouts) watchdog timeouts and is rolled back by the next start; the factory serves"
  else
    fail "update hang: install said '$out'; status $(ustat state.status), failed_version '$(ustat state.failed_version)', watchdog timeouts $(timeouts), edgeai $(prop ActiveState)/$(prop Result)"
    in_box journalctl -u edgeai --no-pager -n 30 2>&1 | indent
  fi
  # 3. A healthy version: restarted in place (same MainPID, no systemd restart), a client polling /health
  #    across the switch waits in the backlog and is never refused, the health gate commits it; the
  #    operator's rollback goes back.
  start_fresh ""
  pid=$(prop MainPID) restarts=$(prop NRestarts)
  rm -f "$work/files/poll.stop"
  in_box python3 /opt/edgeai-test/files/poll.py /opt/edgeai-test/files/poll.stop >"$work/poll.json" 2>&1 &
  poller=$!
  sleep 1
  out=$(upd install /opt/edgeai-test/files/99.3.0.bundle 2>&1)
  good() { [ "$(ustat state.status)" = good ] && [ "$(ustat state.version)" = 99.3.0 ] && [ "$(prop ActiveState)" = active ]; }
  wait_for 90 good; committed=$?
  # The commit comes after the switch, so the poll covered it.
  touch "$work/files/poll.stop"
  wait "$poller"
  polled=$(cat "$work/poll.json")
  if [ "$committed" = 0 ] && [ "$(ustat running)" != factory ] \
    && [ "$(prop MainPID)" = "$pid" ] && [ "$(prop NRestarts)" = "$restarts" ] && grep -q '"failed": 0' <<<"$polled" \
    && in_box journalctl -u edgeai --no-pager 2>/dev/null | grep -q 'update: committed; the version is good'; then
    pass "update: a healthy version is installed, restarted in place (MainPID $pid kept, no systemd restart) and commits itself (slot $(ustat running)); /health polled across the switch: $polled"
    upd rollback >/dev/null 2>&1
    if wait_for 60 rolled_back_from 99.3.0 && [ "$(ustat running)" = factory ]; then
      pass "update: the operator's rollback of the committed version restarts into the factory binary"
    else
      fail "update rollback: status $(ustat state.status), running '$(ustat running)', edgeai $(prop ActiveState)"
    fi
  else
    fail "update install: said '$out'; status $(ustat state.status), version '$(ustat state.version)', running '$(ustat running)', edgeai $(prop ActiveState), MainPID $(prop MainPID) (was $pid), NRestarts $(prop NRestarts) (was $restarts), polled $polled"
    in_box journalctl -u edgeai --no-pager -n 30 2>&1 | indent
  fi
  in_box rm -f /etc/systemd/system/edgeai.service.d/update-crash.conf /etc/systemd/system/edgeai.service.d/update-hang.conf
  in_box systemctl daemon-reload
else
  fail "update: could not make the test bundles: $(cat "$work/bundle.err")"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
