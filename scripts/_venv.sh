# Shared by scripts/serve and scripts/test: create .venv and install maxage into it (once per change).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -c 'import sys; assert sys.version_info >= (3, 11), "maxage needs Python 3.11+"'
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
STAMP="$VENV/.maxage-installed-$1"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] \
   || [ "$ROOT/client/pyproject.toml" -nt "$STAMP" ]; then
  # maxage depends on maxage-client, built from ./client (docs/adr/0008-client-distribution.md)
  if [ "$1" = dev ]; then
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT/client" -e "$ROOT[dev]"
  else
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT/client" -e "$ROOT"
  fi
  touch "$STAMP"
fi
