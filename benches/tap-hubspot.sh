#!/usr/bin/env bash
# Part 3 of benches/e2e.rs: pandora_sync against singer-io's tap-hubspot 4.5.0 (from PyPI,
# in a virtualenv under target/) on the same simulator, plus the SQLite figures of part 1.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/tap-hubspot-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "tap-hubspot==4.5.0"
fi
E2E_TAP_PYTHON="$PWD/$venv/bin/python" E2E_SKIP_MEMORY=1 E2E_ONLY="${E2E_ONLY:-sqlite}" \
  cargo bench --bench e2e --features simulator,hubspot,sqlite,postgres
