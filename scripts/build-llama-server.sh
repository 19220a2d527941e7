#!/usr/bin/env bash
# build-llama-server.sh: builds llama.cpp's own `llama-server` and `llama-bench` once into
# .cache/llama-server/bin, for the benchmark's side-by-side phase (`bench --only server`).
#
# llama-cpp-sys-2 ships the llama.cpp library but not its server, so the source is the llama.cpp
# tree vendored in PyPI's llama-cpp-python sdist (pinned below; its CHANGELOG names the llama.cpp
# commit). The build is native (GGML_NATIVE=ON): it is a host benchmark, compared against edgeaid
# built on the same host. It takes about 12 minutes on 2 cores, so it runs niced with -j2, and
# only once: when both binaries and the stamp for this version exist, it prints so and exits 0.
#
# Exit status: 0 when the binaries are there; 1 (with the reason on stderr) when they cannot be
# built, in which case the benchmark prints the reason and skips the llama-server column.
set -euo pipefail

readonly LLAMA_CPP_PYTHON_VERSION=0.3.36
readonly JOBS=${JOBS:-2}

say() { printf 'build-llama-server: %s\n' "$*" >&2; }
die() { printf 'build-llama-server: cannot build llama-server: %s\n' "$*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=$repo/.cache/llama-server
stamp=$dest/VERSION

if [ -x "$dest/bin/llama-server" ] && [ -x "$dest/bin/llama-bench" ] \
  && grep -qx "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION" "$stamp" 2>/dev/null; then
  say "already built ($(head -n1 "$stamp")) in $dest/bin"
  exit 0
fi

for tool in cmake c++ python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (scripts/setup.sh installs it)"
done
python3 -m pip --version >/dev/null 2>&1 || die "python3 has no pip (needed to download the sdist)"

work=$dest/work
mkdir -p "$work"
sdist=$work/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz
if [ ! -f "$sdist" ]; then
  say "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist from PyPI"
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$work" \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" || die "pip download failed (no access to PyPI?)"
fi
src=$work/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION
[ -d "$src" ] || tar -xzf "$sdist" -C "$work" || die "could not unpack $sdist"
llama=$src/vendor/llama.cpp
[ -f "$llama/tools/server/CMakeLists.txt" ] || die "the sdist has no llama.cpp server source at $llama/tools/server"
commit=$(sed -n 's/.*update llama.cpp to ggml-org\/llama.cpp@\([0-9a-f]*\).*/\1/p' "$src/CHANGELOG.md" | head -n1)

say "configuring llama.cpp ${commit:-unknown commit} (GGML_NATIVE=ON, static, no curl)"
build=$work/build
cmake -S "$llama" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON >"$work/configure.log" 2>&1 \
  || die "cmake configure failed; see $work/configure.log"
say "building llama-server and llama-bench with -j$JOBS (about 12 minutes on 2 cores); log: $work/build.log"
nice -n 10 cmake --build "$build" --config Release -j "$JOBS" --target llama-server llama-bench \
  >"$work/build.log" 2>&1 || die "cmake build failed; see $work/build.log"

mkdir -p "$dest/bin"
install -m 0755 "$build/bin/llama-server" "$build/bin/llama-bench" "$dest/bin/"
ggml=$(sed -n 's/^set(GGML_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\))/\2/p' "$llama/ggml/CMakeLists.txt" | paste -sd.)
{
  printf 'llama-cpp-python %s\n' "$LLAMA_CPP_PYTHON_VERSION"
  printf 'llama.cpp %s\n' "${commit:-unknown}"
  printf 'ggml %s\n' "${ggml:-unknown}"
  printf 'cpu %s\n' "$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
} >"$stamp"
rm -rf "$build" "$src"
say "built $(tr '\n' ';' <"$stamp") into $dest/bin"
