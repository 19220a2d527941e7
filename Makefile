# edgeai developer entry points; `make help` lists them. Both `make run` and `make test` work
# in a fresh clone on Debian 12 with only Rust installed: scripts/setup.sh installs the rest.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

CARGO ?= cargo
# Where cargo puts its output; honours CARGO_TARGET_DIR like cargo itself does.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/debug
# Config for `make check-config` (`make check-config CONFIG=/etc/edgeai/edgeai.toml`).
CONFIG ?= configs/dev.toml
# The test build turns on the test-only fail points (the `fail` crate, set through FAILPOINTS: a
# hung inference thread, a slow model load, a failed decode). Build and test use the same feature
# set, so cargo builds everything once and the edgeaid that the end-to-end tests start is the one
# with fail points.
TEST_FEATURES := --features edgeai-daemon/failpoints

.PHONY: help setup build run test fuzz fuzz-setup verify-units box-test bench check-config clean-run dist-docs

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{ printf "  make %-13s %s\n", $$1, $$2 }'

setup: ## install missing Debian packages, the test venv and the default model
	@scripts/setup.sh

build: setup ## build edgeaid and edgeaictl (debug)
	$(CARGO) build --bins

# `exec` replaces the recipe's shell with the daemon, so Ctrl-C reaches it directly (the
# terminal signals the whole foreground group) and a SIGTERM sent to make is forwarded to it
# by make; either way edgeaid drains and exits cleanly.
run: build ## build and start edgeaid in the foreground with configs/dev.toml
	mkdir -p run
	exec $(BIN)/edgeaid --config configs/dev.toml

test: setup ## run every test (the README's and CI's test command)
	$(CARGO) build --workspace --bins $(TEST_FEATURES)
	$(MAKE) verify-units
	$(CARGO) test --workspace --no-fail-fast $(TEST_FEATURES)
	$(MAKE) box-test

# Two fuzzers run the same targets (daemon/src/fuzzing.rs, daemon/src/api/fuzzing.rs):
#  - a stable mutation loop as plain #[test]s (daemon/src/fuzz.rs, daemon/src/api/fuzz_tests.rs):
#    `make test` runs each for 3 s (EDGEAI_FUZZ_SEED=N replays a run; a panic prints its input);
#  - coverage-guided cargo-fuzz (libFuzzer + AddressSanitizer, fuzz/), nightly only: `make fuzz`
#    runs it first when nightly and cargo-fuzz are there (scripts/fuzz.sh; else it says why and
#    skips it), then the stable loop, FUZZ_SECS seconds each target. Never in `make test` or CI.
FUZZ_SECS ?= 300
fuzz: ## fuzz longer: cargo-fuzz targets (if nightly), then the stable loop, FUZZ_SECS (300) s each
	scripts/fuzz.sh $(FUZZ_SECS)
	EDGEAI_FUZZ_SECS=$(FUZZ_SECS) $(CARGO) test -p edgeai-daemon --lib $(TEST_FEATURES) fuzz_ -- --nocapture

fuzz-setup: ## install cargo-fuzz for `make fuzz` (needs the nightly toolchain)
	cargo +nightly --version
	cargo +nightly fuzz --version 2>/dev/null || $(CARGO) install cargo-fuzz --locked

# systemd-analyze verify fails when ExecStart= does not exist, and a development machine has
# no /usr/bin/edgeaid. So the unit (with edgeai.socket, which it requires, and the optional
# edgeai-tcp.socket beside it) is checked twice:
#   1. a copy with ExecStart= rewritten (sed) to the built binary, verified where it lies;
#   2. the pristine file, verified with --root= in a scratch root that holds what the unit
#      refers to: usr/bin/edgeaid (the built binary), /bin/kill (ExecReload=) and the host's
#      unit directory (for sysinit.target and friends).
# verify exits 0 on unknown keys and bad values (it only logs them), so any output at all
# fails the check. sysusers.d is applied to the scratch root too, and tmpfiles.d after it
# when running as root (it chowns to the new user). `systemd-analyze security` guards the
# hardening: an exposure above 2.5 fails (the unit scores 1.5).
verify-units: ## systemd-analyze verify the unit and its sockets; check sysusers.d and tmpfiles.d
	@test -x $(BIN)/edgeaid || { echo "verify-units: $(BIN)/edgeaid is missing; run make build first" >&2; exit 1; }
	@scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; \
	check() { local what=$$1; shift; local out; \
	  if out=$$("$$@" 2>&1) && [ -z "$$out" ]; then echo "PASS: $$what"; \
	  else echo "FAIL: $$what"; printf '%s\n' "$$out" | sed 's/^/    /'; return 1; fi; }; \
	mkdir -p "$$scratch/copy"; \
	sed 's|^ExecStart=/usr/bin/edgeaid|ExecStart=$(abspath $(BIN))/edgeaid|' systemd/edgeai.service >"$$scratch/copy/edgeai.service"; \
	cp systemd/edgeai.socket systemd/edgeai-tcp.socket "$$scratch/copy/"; \
	check "systemd-analyze verify (ExecStart=$(BIN)/edgeaid; edgeai.socket, edgeai-tcp.socket)" \
	  systemd-analyze verify --man=no "$$scratch/copy/edgeai.service" "$$scratch/copy/edgeai.socket" "$$scratch/copy/edgeai-tcp.socket"; \
	root=$$scratch/root; units=/usr/lib/systemd/system; [ -d $$units ] || units=/lib/systemd/system; \
	mkdir -p "$$root/usr/bin" "$$root/usr/lib/systemd" "$$root/etc"; ln -s usr/bin "$$root/bin"; \
	cp $(BIN)/edgeaid "$$root/usr/bin/edgeaid"; cp /bin/kill "$$root/usr/bin/kill"; \
	cp -a "$$units" "$$root/usr/lib/systemd/system"; \
	install -m 0644 systemd/edgeai.service systemd/edgeai.socket systemd/edgeai-tcp.socket "$$root/usr/lib/systemd/system/"; \
	check "systemd-analyze verify --root (pristine edgeai.service, edgeai.socket, edgeai-tcp.socket)" \
	  systemd-analyze verify --man=no --root="$$root" /usr/lib/systemd/system/edgeai.service \
	    /usr/lib/systemd/system/edgeai.socket /usr/lib/systemd/system/edgeai-tcp.socket; \
	if score=$$(systemd-analyze security --offline=true --threshold=25 --no-pager "$$scratch/copy/edgeai.service" 2>&1); \
	then echo "PASS: systemd-analyze security: $$(printf '%s\n' "$$score" | grep -o 'exposure level.*')"; \
	else echo "FAIL: systemd-analyze security"; printf '%s\n' "$$score" | grep -v '✓' | sed 's/^/    /'; exit 1; fi; \
	install -D -m 0644 systemd/edgeai.sysusers "$$root/usr/lib/sysusers.d/edgeai.conf"; \
	install -D -m 0644 systemd/edgeai.tmpfiles "$$root/usr/lib/tmpfiles.d/edgeai.conf"; \
	systemd-sysusers --root="$$root" >/dev/null 2>&1 || { echo "FAIL: systemd-sysusers"; systemd-sysusers --root="$$root"; exit 1; }; \
	for name in edgeai edgeai-admin; do grep -q "^$$name:" "$$root/etc/group" || { echo "FAIL: sysusers: no group $$name"; exit 1; }; done; \
	grep -q '^edgeai:' "$$root/etc/passwd" || { echo "FAIL: sysusers: no user edgeai"; exit 1; }; \
	echo "PASS: systemd-sysusers creates user edgeai and groups edgeai, edgeai-admin"; \
	if [ "$$(id -u)" -eq 0 ]; then \
	  check "systemd-tmpfiles --create" systemd-tmpfiles --root="$$root" --create; \
	  uid=$$(awk -F: '$$1 == "edgeai" { print $$3 }' "$$root/etc/passwd"); \
	  got=$$(stat -c '%u %a' "$$root/var/lib/edgeai/models"); \
	  [ "$$got" = "$$uid 750" ] || { echo "FAIL: tmpfiles: /var/lib/edgeai/models has uid/mode $$got, expected $$uid 750"; exit 1; }; \
	  echo "PASS: systemd-tmpfiles creates /var/lib/edgeai/models (edgeai, 0750)"; \
	  got=$$(stat -c '%u %a' "$$root/run/edgeai"); \
	  [ "$$got" = "$$uid 750" ] || { echo "FAIL: tmpfiles: /run/edgeai has uid/mode $$got, expected $$uid 750"; exit 1; }; \
	  echo "PASS: systemd-tmpfiles creates /run/edgeai for edgeai.socket (edgeai, 0750)"; \
	else echo "SKIP: systemd-tmpfiles check (needs root to chown)"; fi

box-test: ## test the unit under a real systemd (needs root and systemd-nspawn, else SKIP)
	EDGEAID=$(abspath $(BIN))/edgeaid scripts/systemd-box-test.sh

# llama.cpp's own llama-server, for the side-by-side phase (`bench --only server`), is built
# once into .cache/llama-server (about 12 minutes on 2 cores); when it cannot be built the script
# prints why and the bench skips that column. The ceiling and uds-load bins are the HTTP phase's
# bare hyper + SQLite server / instant upstream and its unix-socket load generator.
bench: setup ## run the benchmark (release build); writes bench-results/bench*.json
	$(CARGO) build --release -p edgeai-daemon
	$(CARGO) build --release -p edgeai-tests --bins
	scripts/build-llama-server.sh || echo "bench: no llama-server (reason above); its column is skipped" >&2
	$(CARGO) run --release -p edgeai-tests --bin bench
	$(CARGO) run --release -p edgeai-tests --bin bench -- --only ttft
	$(CARGO) run --release -p edgeai-tests --bin bench -- --only server
	$(CARGO) run --release -p edgeai-tests --bin bench -- --only http
	$(CARGO) run --release -p edgeai-tests --bin bench -- --only replay
	$(CARGO) run --release -p edgeai-tests --bin update-bench

check-config: build ## check CONFIG (default configs/dev.toml) with edgeaid --check-config
	$(BIN)/edgeaid --check-config --config $(CONFIG)

# The man pages and shell completions of edgeaictl, generated from its clap definition, where
# the packaging installs them from: man/man1/*.1 and completions/{edgeaictl.bash,_edgeaictl,
# edgeaictl.fish}. edgeaid has no man page: its clap definition lives in the daemon crate, which
# would need clap_mangen just for this (`edgeaid --help` documents it).
DIST := $(TARGET_DIR)/dist
dist-docs: ## write edgeaictl's man pages and bash/zsh/fish completions under target/dist/
	$(CARGO) build -p edgeaictl
	rm -rf $(DIST)/man/man1 $(DIST)/completions
	mkdir -p $(DIST)/completions
	$(BIN)/edgeaictl man --dir $(DIST)/man/man1 >/dev/null
	$(BIN)/edgeaictl completions bash >$(DIST)/completions/edgeaictl.bash
	$(BIN)/edgeaictl completions zsh >$(DIST)/completions/_edgeaictl
	$(BIN)/edgeaictl completions fish >$(DIST)/completions/edgeaictl.fish
	@echo "dist-docs: $$(ls $(DIST)/man/man1 | wc -l) man pages in $(DIST)/man/man1, completions in $(DIST)/completions"

clean-run: ## remove run/ (the dev store, socket and demo key)
	rm -rf run
