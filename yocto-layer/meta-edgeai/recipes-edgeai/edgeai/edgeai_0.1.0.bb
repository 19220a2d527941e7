SUMMARY = "edgeai: run LLM apps designed in Dify on an industrial edge gateway"
DESCRIPTION = "edgeaid, a resident daemon under systemd that serves Dify apps (chat, \
               completion, workflows, knowledge bases) and the OpenAI API from a local GGUF \
               model through llama.cpp, over a unix socket and TCP; and edgeaictl, its control \
               tool (D-Bus and the socket)."
SECTION = "console/network"
# The workspace's own licence (Cargo.toml [workspace.package] license); the repository has no
# separate licence file. The crates linked into the binaries (llama.cpp: MIT, SQLite: public
# domain, the Rust crates: mostly MIT or Apache-2.0) keep their own licences.
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=9;endline=9;md5=2507bd5f0713f05419cd2f22fa06fe62"

# bindgen (llama-cpp-sys-2's bindings) loads libclang; cmake builds llama.cpp.
DEPENDS = "clang-native cmake-native"

# The source: this layer lives in the edgeai repository itself, so by default the recipe clones
# the checkout the layer was read from (no network). A build that uses the layer without that
# checkout around it (or wants one download for several checkouts) sets EDGEAI_GIT_URI to a
# mirror of the repository, e.g. in local.conf:
#   EDGEAI_GIT_URI = "git://git.example.com/edgeai.git;protocol=https"
# SRCREV pins the commit; a release moves it (README, "Releases"). destsuffix=${BP} unpacks
# into the default S of both scarthgap (${WORKDIR}/${BP}) and wrynose (${UNPACKDIR}/${BP}).
EDGEAI_REPO_DIR := "${@os.path.normpath(os.path.join(d.getVar('THISDIR'), '../../../..'))}"
EDGEAI_GIT_URI ??= "git://${EDGEAI_REPO_DIR};protocol=file"
EDGEAI_GIT_BRANCH ??= "main"
SRC_URI = "${EDGEAI_GIT_URI};branch=${EDGEAI_GIT_BRANCH};destsuffix=${BP}"
SRCREV = "cddd82bc13f26d40548a3c05a2430a235730d5f8"

# Every crate of Cargo.lock as a crate:// URL with its sha256, so do_fetch downloads them all
# and cargo builds offline with --frozen (cargo.bbclass) from the vendored copies. Written by
# scripts/gen-crates-inc.py from the Cargo.lock at SRCREV, the same content as
# `bitbake -c update_crates edgeai` (tests/tests/yocto_layer.rs keeps them equal).
require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates features_check systemd useradd

# The units are systemd units and the daemon speaks sd_notify.
REQUIRED_DISTRO_FEATURES = "systemd"

# `bitbake -c update_crates edgeai` reads every Cargo.lock under CARGO_LOCK_SRC_DIR, which would
# take in fuzz/Cargo.lock too: fuzz/ is a separate cargo-fuzz workspace (nightly only) that this
# recipe never builds. So it reads a copy of the workspace's own Cargo.lock, and writes exactly
# what scripts/gen-crates-inc.py writes.
CARGO_LOCK_SRC_DIR = "${WORKDIR}/edgeai-cargo-lock"
do_update_crates[prefuncs] += "edgeai_stage_cargo_lock"
edgeai_stage_cargo_lock[doc] = "Copies the workspace's Cargo.lock alone for do_update_crates"
edgeai_stage_cargo_lock() {
    install -D -m 0644 ${S}/Cargo.lock ${CARGO_LOCK_SRC_DIR}/Cargo.lock
}

# The shipped crates (edgeaid, edgeaictl and their library), the whole workspace but the test
# harness and benchmark (edgeai-tests), which need the test models and a host to run on.
CARGO_BUILD_FLAGS += "--workspace --exclude edgeai-tests"

# bindgen runs libclang from clang-native but parses llama.cpp's headers for the target: with
# the target sysroot's headers (it adds --target from cargo's TARGET itself).
export LIBCLANG_PATH = "${STAGING_LIBDIR_NATIVE}"
export BINDGEN_EXTRA_CLANG_ARGS = "--sysroot=${STAGING_DIR_HOST}"

# llama.cpp's CPU kernels are compiled for the image's machine tune, never the build host's CPU.
#
# The C/C++ compiler that llama-cpp-sys-2 gives CMake is OE's target compiler wrapper, whose
# flags carry TUNE_CCARGS (-march/-mcpu of the machine). On top, ggml's x86 CPU backend is
# built for the GGML_<feature> options that are ON. The repository's .cargo/config.toml turns
# on the x86-64-v3 set (SSE4.2 AVX AVX2 FMA F16C BMI2) for host builds; cargo reads that file
# only when it runs inside the source tree (it runs in ${B} here), and an environment variable
# of the same name wins over its [env] anyway. So every one of them is exported here, ON or OFF,
# from the machine: ON where TUNE_FEATURES name a tune that has the feature
# (EDGEAI_GGML_AVX2_TUNES: the whole set; EDGEAI_GGML_SSE42_TUNES: SSE4.2 only), or where
# PACKAGECONFIG asks for a baseline above the tune (below), else OFF. Anything but x86-64
# (an aarch64 gateway) gets none of them: there llama-cpp-sys-2 builds ggml's ARM backend for
# its armv8-a baseline (NEON), under the tune's -mcpu.
#
# llama-cpp-sys-2 also turns on, after these, the features that the Rust target implies (OE's
# target spec takes the tune's cpu, e.g. corei7: SSE4.2), which this mapping turns on too.
#
# The daemon checks the CPU against exactly what was built: daemon/src/cpu.rs reads these same
# GGML_* variables at compile time (option_env!) and, first thing in main, refuses a CPU that
# lacks one of the features that are ON (exit 79, naming them) instead of dying of SIGILL. On
# aarch64 it requires nothing beyond the baseline.
#
# GGML_NATIVE stays OFF: llama-cpp-sys-2 would turn it on only for -C target-cpu=native in
# RUSTFLAGS, which do_compile refuses (edgeai_no_native_cpu below). OE's Rust target has the
# tune's cpu and features in its target spec, so the Rust code follows the tune as well.
EDGEAI_GGML_AVX2_TUNES ??= "x86-64-v3 skylake"
EDGEAI_GGML_SSE42_TUNES ??= "corei7"

def edgeai_ggml_features(d):
    if d.getVar('TARGET_ARCH') != 'x86_64':
        return set()
    tune = set((d.getVar('TUNE_FEATURES') or '').split())
    config = set((d.getVar('PACKAGECONFIG') or '').split())
    avx2_tunes = set((d.getVar('EDGEAI_GGML_AVX2_TUNES') or '').split())
    sse42_tunes = set((d.getVar('EDGEAI_GGML_SSE42_TUNES') or '').split())
    if tune & avx2_tunes or 'ggml-x86-64-v3' in config:
        return {'SSE42', 'AVX', 'AVX2', 'FMA', 'F16C', 'BMI2'}
    if tune & sse42_tunes or 'ggml-sse42' in config:
        return {'SSE42'}
    return set()

def edgeai_ggml(d, feature):
    return 'ON' if feature in edgeai_ggml_features(d) else 'OFF'

export GGML_NATIVE = "OFF"
export GGML_SSE42 = "${@edgeai_ggml(d, 'SSE42')}"
export GGML_AVX = "${@edgeai_ggml(d, 'AVX')}"
export GGML_AVX2 = "${@edgeai_ggml(d, 'AVX2')}"
export GGML_FMA = "${@edgeai_ggml(d, 'FMA')}"
export GGML_F16C = "${@edgeai_ggml(d, 'F16C')}"
export GGML_BMI2 = "${@edgeai_ggml(d, 'BMI2')}"

# llama.cpp build variants. The first two fields stay empty: wrynose's cargo.bbclass passes
# PACKAGECONFIG_CONFARGS to `cargo build`.
#   openmp          ggml's threads through OpenMP (libgomp from gcc-runtime; with the clang
#                   toolchain, the openmp recipe). Off: ggml's own thread pool, by removing
#                   llama-cpp-2's "openmp" feature from the workspace manifest (features are not
#                   in Cargo.lock, so --frozen still holds).
#   ggml-x86-64-v3  ggml's x86 CPU backend for the x86-64-v3 set (AVX2 ...) on a lower tune, as
#                   the repository's own build does: the rest of the image keeps the tune, and
#                   edgeaid refuses CPUs without AVX2 (exit 79).
#   ggml-sse42      likewise for SSE4.2 only.
#   tcp-socket      also enable edgeai-tcp.socket (the TCP port 127.0.0.1:5001 held by systemd);
#                   off as in systemd/README.md, the daemon then binds server.listen itself.
# ggml's runtime-dispatched CPU variants (GGML_CPU_ALL_VARIANTS) need its dynamic backends,
# which edgeaid neither links nor checks: not offered.
PACKAGECONFIG ??= "openmp"
PACKAGECONFIG[openmp] = ",,${EDGEAI_OPENMP_DEPENDS}"
PACKAGECONFIG[ggml-x86-64-v3] = ",,"
PACKAGECONFIG[ggml-sse42] = ",,"
PACKAGECONFIG[tcp-socket] = ",,"
EDGEAI_OPENMP_DEPENDS = "${@'openmp' if d.getVar('TOOLCHAIN') == 'clang' else ''}"

edgeai_openmp_feature[doc] = "Without PACKAGECONFIG openmp, drops llama-cpp-2's openmp feature"
edgeai_openmp_feature() {
    # From the manifest as fetched, so that turning openmp back on takes effect too.
    git -C ${S} checkout -- Cargo.toml
    if ${@bb.utils.contains('PACKAGECONFIG', 'openmp', 'false', 'true', d)}; then
        sed -i -e '/^llama-cpp-2 = /s/features = \["openmp"\]/features = []/' ${S}/Cargo.toml
        if grep -q '^llama-cpp-2 = .*"openmp"' ${S}/Cargo.toml; then
            bbfatal "PACKAGECONFIG has no openmp, but ${S}/Cargo.toml still asks for llama-cpp-2's openmp feature"
        fi
    fi
}
do_configure[prefuncs] += "edgeai_openmp_feature"

edgeai_no_native_cpu[doc] = "Refuses a build configured for the build host's CPU"
edgeai_no_native_cpu() {
    for f in ${CARGO_HOME}/config.toml ${CARGO_HOME}/config ${S}/.cargo/config.toml ${S}/.cargo/config; do
        if [ -f "$f" ] && grep -q 'target-cpu *= *native\|target-cpu=native' "$f"; then
            bbfatal "$f sets target-cpu=native: the build would follow the build host's CPU, not the machine's tune"
        fi
    done
    case " ${RUSTFLAGS} ${TARGET_CC_ARCH} " in
    *target-cpu=native*|*march=native*|*mcpu=native*)
        bbfatal "RUSTFLAGS or TARGET_CC_ARCH ask for the build host's CPU (native): the image would not run on the machine"
        ;;
    esac
}
do_compile[prefuncs] += "edgeai_no_native_cpu"

# edgeaictl's man pages and shell completions come from its clap definition (`edgeaictl man`,
# `edgeaictl completions`, as `make dist-docs` runs them), and a cross build cannot run the
# target's edgeaictl. So do_compile also builds edgeaictl for the build host, from the same
# source and Cargo.lock (RUST_BUILD_SYS: the triple cargo already builds the build scripts for,
# std and linker set up by cargo.bbclass), and runs that one. Not checked in: generated files in
# the layer would follow the layer's commit rather than SRCREV, and drift from the binary.
# RUSTFLAGS are the target's (their -L names the target's std), so the host build goes without.
# tests/tests/yocto_layer.rs runs the commands below against the current edgeaictl.
EDGEAICTL_HOST = "${B}/target/${RUST_BUILD_SYS}/${BUILD_DIR}/edgeaictl"
do_compile:append() {
    RUSTFLAGS="" "${CARGO}" build ${BUILD_MODE} -v --frozen --target ${RUST_BUILD_SYS} \
        --manifest-path=${CARGO_MANIFEST_PATH} -p edgeaictl
    rm -rf ${B}/dist
    install -d ${B}/dist/man/man1 ${B}/dist/completions
    "${EDGEAICTL_HOST}" man --dir ${B}/dist/man/man1 >/dev/null
    "${EDGEAICTL_HOST}" completions bash >${B}/dist/completions/edgeaictl.bash
    "${EDGEAICTL_HOST}" completions zsh >${B}/dist/completions/_edgeaictl
    "${EDGEAICTL_HOST}" completions fish >${B}/dist/completions/edgeaictl.fish
}

do_install() {
    install -d ${D}${bindir}
    install -m 0755 ${B}/target/${CARGO_TARGET_SUBDIR}/edgeaid ${D}${bindir}/edgeaid
    install -m 0755 ${B}/target/${CARGO_TARGET_SUBDIR}/edgeaictl ${D}${bindir}/edgeaictl

    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/edgeai.service ${D}${systemd_system_unitdir}/edgeai.service
    install -m 0644 ${S}/systemd/edgeai.socket ${D}${systemd_system_unitdir}/edgeai.socket
    install -m 0644 ${S}/systemd/edgeai-tcp.socket ${D}${systemd_system_unitdir}/edgeai-tcp.socket
    install -d ${D}${nonarch_libdir}/sysusers.d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/systemd/edgeai.sysusers ${D}${nonarch_libdir}/sysusers.d/edgeai.conf
    install -m 0644 ${S}/systemd/edgeai.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/edgeai.conf
    install -d ${D}${datadir}/dbus-1/system.d ${D}${datadir}/dbus-1/interfaces
    install -m 0644 ${S}/systemd/org.edgeai.Daemon1.conf ${D}${datadir}/dbus-1/system.d/org.edgeai.Daemon1.conf
    install -m 0644 ${S}/systemd/org.edgeai.Daemon1.xml ${D}${datadir}/dbus-1/interfaces/org.edgeai.Daemon1.xml

    # The distribution's defaults where the daemon reads them first (and the unit's
    # Documentation= points); the administrator's file, /etc/edgeai/edgeai.toml, overrides single
    # keys and is the conffile: it starts out setting nothing.
    install -d ${D}${nonarch_libdir}/edgeai ${D}${sysconfdir}/edgeai/conf.d
    install -m 0644 ${S}/configs/edgeai.toml ${D}${nonarch_libdir}/edgeai/edgeai.toml
    printf '%s\n' \
        "# edgeaid: the settings of this gateway, over the defaults in ${nonarch_libdir}/edgeai/edgeai.toml" \
        "# (every key there, with its default and range). A key set here overrides that key there;" \
        "# ${sysconfdir}/edgeai/conf.d/*.toml are read after this file. Check: edgeaid --check-config" \
        >${D}${sysconfdir}/edgeai/edgeai.toml
    chmod 0644 ${D}${sysconfdir}/edgeai/edgeai.toml

    # The unit's Documentation=file:/usr/share/doc/edgeai/README.md.
    install -d ${D}${docdir}/${BPN}
    install -m 0644 ${S}/README.md ${D}${docdir}/${BPN}/README.md

    install -d ${D}${mandir}/man1
    install -m 0644 ${B}/dist/man/man1/*.1 ${D}${mandir}/man1/
    install -d ${D}${datadir}/bash-completion/completions ${D}${datadir}/zsh/site-functions \
        ${D}${datadir}/fish/vendor_completions.d
    install -m 0644 ${B}/dist/completions/edgeaictl.bash ${D}${datadir}/bash-completion/completions/edgeaictl
    install -m 0644 ${B}/dist/completions/_edgeaictl ${D}${datadir}/zsh/site-functions/_edgeaictl
    install -m 0644 ${B}/dist/completions/edgeaictl.fish ${D}${datadir}/fish/vendor_completions.d/edgeaictl.fish
}

# edgeai-tcp.socket is installed either way; it is enabled only with PACKAGECONFIG tcp-socket.
# edgeai.service's Also=edgeai.socket enables the unix socket with it.
SYSTEMD_SERVICE:${PN} = "edgeai.service edgeai.socket ${@bb.utils.contains('PACKAGECONFIG', 'tcp-socket', 'edgeai-tcp.socket', '', d)}"

# The same names as systemd/edgeai.sysusers (user and group edgeai, group edgeai-admin; no fixed
# ids there either), so the package's postinst creates them in the image and systemd-sysusers,
# which reads the same file at boot, finds them present.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system edgeai-admin"
USERADD_PARAM:${PN} = "--system --user-group --home-dir ${localstatedir}/lib/edgeai --no-create-home \
                       --shell ${base_bindir}/false edgeai"

PACKAGES =+ "${PN}-bash-completion ${PN}-zsh-completion ${PN}-fish-completion"
# systemd.bbclass packages the units of SYSTEMD_SERVICE; edgeai-tcp.socket is shipped either way.
FILES:${PN} += "${systemd_system_unitdir} ${nonarch_libdir}/edgeai ${nonarch_libdir}/sysusers.d \
                ${nonarch_libdir}/tmpfiles.d ${datadir}/dbus-1/system.d"
FILES:${PN}-dev += "${datadir}/dbus-1/interfaces"
FILES:${PN}-bash-completion += "${datadir}/bash-completion"
FILES:${PN}-zsh-completion += "${datadir}/zsh"
FILES:${PN}-fish-completion += "${datadir}/fish"
CONFFILES:${PN} = "${sysconfdir}/edgeai/edgeai.toml"

# The control interface lives on the system bus. The default model is recommended, not
# required: an image leaves it out with BAD_RECOMMENDATIONS += "edgeai-model-smollm2" (and
# puts a model at /var/lib/edgeai/models, or sets model.path).
RDEPENDS:${PN} = "dbus"
RRECOMMENDS:${PN} = "edgeai-model-smollm2"
