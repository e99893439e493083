#!/usr/bin/env bash
# The operators' dashboard entry point, kept as a thin wrapper over `p35 dash`:
#   p35_dashboard_queries.sh a|b [SYMBOL ...]|c|d [THRESHOLD]|e|all [--window 5m] [--json]
# Same Redis settings as the daemon: the env file is read when this user may read it.
set -euo pipefail
env_file=${P35_ENV_FILE:-/etc/quantum/p35-decision-intelligence.env}
env_args=()
[ -r "$env_file" ] && env_args=(--env-file "$env_file")  # read as systemd reads it
here=$(cd "$(dirname "$0")" && pwd)
for p35 in "${P35:-}" "$here/../venv/bin/p35" "$here/../.venv/bin/p35" "$(command -v p35 || true)"; do
  if [ -n "$p35" ] && [ -x "$p35" ]; then exec "$p35" "${env_args[@]}" dash "$@"; fi
done
echo "p35_dashboard_queries.sh: p35 not found (set P35=/path/to/p35)" >&2
exit 127
