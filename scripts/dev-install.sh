#!/usr/bin/env bash
# Install the core and both framework integrations, editable, for development, in one command.
#   bash scripts/dev-install.sh            # into the active Python (or $PYTHON)
# Extra pip arguments are passed through, e.g. `bash scripts/dev-install.sh --no-deps`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
"$PYTHON" -m pip install "$@" \
  -e ".[dev]" \
  -e "integrations/llama-index-postprocessor-rerank-plugins[test]" \
  -e "integrations/langchain-rerank-plugins[test,standard-tests]"
