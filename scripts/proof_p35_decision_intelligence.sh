#!/usr/bin/env bash
# Proof that the service works: the systemd unit is active (when systemd runs here),
# then `p35 check` (group, heartbeat < 15 s, window snapshots, pending). Prints each
# check; exits non-zero listing every failure.
#   P35_BIN      the p35 executable (default: the deployed venv, else p35 on PATH)
#   P35_ENV_FILE settings to read (default /etc/quantum/p35-decision-intelligence.env)
#   SYSTEMCTL    the systemctl command (tests pass a fake)
#   P35_UNIT     the unit to check (default quantum-p35-decision-intelligence)
set -uo pipefail

P35_BIN=${P35_BIN:-/opt/quantum/p35-decision-intelligence/venv/bin/p35}
[ -x "$P35_BIN" ] || P35_BIN=$(command -v p35 || true)
P35_ENV_FILE=${P35_ENV_FILE:-/etc/quantum/p35-decision-intelligence.env}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
P35_UNIT=${P35_UNIT:-quantum-p35-decision-intelligence}
failed=()

# The env file is read by p35 itself, as systemd reads it (a shell would expand `$`).
env_args=()
[ -r "$P35_ENV_FILE" ] && env_args=(--env-file "$P35_ENV_FILE")

if command -v "${SYSTEMCTL%% *}" >/dev/null 2>&1 && [ -d /run/systemd/system -o "$SYSTEMCTL" != systemctl ]; then
  if state=$($SYSTEMCTL is-active "$P35_UNIT" 2>/dev/null) && [ "$state" = active ]; then
    echo "ok   unit: $P35_UNIT is active"
  else
    echo "FAIL unit: $P35_UNIT is ${state:-not active}"
    failed+=(unit)
  fi
else
  echo "skip unit: systemd is not running here"
fi

if [ -z "$P35_BIN" ]; then
  echo "FAIL p35: no p35 executable (set P35_BIN)"
  failed+=(p35)
else
  out=$("$P35_BIN" "${env_args[@]}" check "$@")
  rc=$?
  printf '%s\n' "$out"
  [ $rc -eq 0 ] || failed+=($(printf '%s\n' "$out" | awk '$1=="FAIL"{sub(":","",$2); print $2}'))
  [ $rc -eq 0 ] || [ ${#failed[@]} -gt 0 ] || failed+=("p35-check-exit-$rc")
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "proof FAILED: ${failed[*]}"
  exit 1
fi
echo "proof passed"
