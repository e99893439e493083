#!/usr/bin/env bash
# Install or upgrade quantum-p35-decision-intelligence. Idempotent: a second run with
# nothing changed changes no file and restarts nothing.
#
#   scripts/deploy_p35.sh [--dry-run] [--skip-proof] [--rollback]
#
#   DESTDIR    install under another root (tests; packaging)
#   SYSTEMCTL  command used instead of systemctl
#   PROMETHEUS_RULES_DIR  where Prometheus reads rule files (default /etc/prometheus/rules.d);
#              deploy/prometheus/p35.rules.yml goes there only when the directory exists
#   PYTHON     interpreter for the virtualenv (default /usr/bin/python3 when it is 3.11
#              or newer, else python3). It must live outside /root and /home: the
#              unit's ProtectHome=yes hides those from the service.
#
# Template instances (quantum-p35-decision-intelligence@NAME) that are running or
# enabled are restarted on an upgrade instead of the plain unit, which is then left
# alone (it would be one more consumer).
#
# Code goes to /opt/quantum/p35-decision-intelligence/releases/<source hash>/venv, and
# .../venv points at the current release (the three newest are kept for --rollback).
# The env file is installed only when absent; an operator's edits are never
# overwritten (the differences from the shipped template are shown instead).
set -euo pipefail

DRY=0 SKIP_PROOF=0 ROLLBACK=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --skip-proof) SKIP_PROOF=1 ;;
    --rollback) ROLLBACK=1 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "deploy_p35: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

SRC=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  /usr/bin/python3 -c 'import sys; raise SystemExit(sys.version_info < (3, 11))' 2>/dev/null &&
    PYTHON=/usr/bin/python3
fi
UNIT=quantum-p35-decision-intelligence
APP=$DESTDIR/opt/quantum/p35-decision-intelligence
UNITDIR=$DESTDIR/etc/systemd/system
RULESDIR=$DESTDIR${PROMETHEUS_RULES_DIR:-/etc/prometheus/rules.d}
ENVFILE=$DESTDIR/etc/quantum/p35-decision-intelligence.env
KEEP_RELEASES=3

say() { echo "deploy_p35: $*"; }
die() { echo "deploy_p35: error: $*" >&2; exit 1; }
run() {
  if [ "$DRY" = 1 ]; then echo "deploy_p35: would run: $*"; else "$@"; fi
}

[ -n "$DESTDIR" ] || [ "$(id -u)" = 0 ] ||
  die "must run as root (or set DESTDIR to install under another root)"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON to a Python 3.11+ interpreter)"
"$PYTHON" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))' ||
  die "Python 3.11 or newer is required; $PYTHON is $("$PYTHON" -V 2>&1)"
# The interpreter the release venv will point at (through any venv or pyenv shim).
interpreter=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))')
case "$interpreter" in
  /root/*|/home/*|/run/user/*)
    msg="$PYTHON is $interpreter, under a home directory: the unit's ProtectHome=yes hides it"
    msg="$msg from the service (status=203/EXEC). Use a system interpreter: PYTHON=/usr/bin/python3"
    if [ -z "$DESTDIR" ]; then die "$msg"; else say "warning: $msg"; fi ;;
esac

code_changed=0 units_changed=0

point_venv_at() {  # atomically repoint venv -> releases/$1/venv
  run ln -sfn "releases/$1/venv" "$APP/venv.new"
  run mv -T "$APP/venv.new" "$APP/venv"
}

if [ "$ROLLBACK" = 1 ]; then
  current=$(readlink "$APP/venv" 2>/dev/null | cut -d/ -f2)
  previous=$({ ls -1t "$APP/releases" 2>/dev/null | grep -vx "${current:-}" || true; } | head -1)
  [ -n "$previous" ] || die "no earlier release to roll back to"
  say "rolling back: $current -> $previous"
  point_venv_at "$previous"
  run "$SYSTEMCTL" restart "$UNIT"
  exit 0
fi

# 1. Code: one virtualenv per source hash.
# The hash covers the interpreter too: another PYTHON is another release.
release=$( { cd "$SRC" && find pyproject.toml src -type f ! -path '*/__pycache__/*' ! -path '*.egg-info/*' ! -name '*.pyc' \
  -print0 | sort -z | xargs -0 sha256sum; echo "$interpreter $("$PYTHON" -V 2>&1)"; } | sha256sum | cut -c1-12)
if [ "$(readlink "$APP/venv" 2>/dev/null)" = "releases/$release/venv" ] &&
   [ -x "$APP/releases/$release/venv/bin/p35" ]; then
  say "code: release $release is installed and current"
else
  say "code: installing release $release"
  run rm -rf "$APP/releases/$release"
  run mkdir -p "$APP/releases"
  run "$PYTHON" -m venv "$APP/releases/$release/venv"
  run "$APP/releases/$release/venv/bin/pip" install --quiet --disable-pip-version-check "$SRC"
  point_venv_at "$release"
  code_changed=1
  if [ "$DRY" = 0 ]; then
    { ls -1t "$APP/releases" | grep -vx "$release" || true; } | tail -n +"$KEEP_RELEASES" |
      while read -r old; do say "code: removing old release $old"; rm -rf "${APP:?}/releases/$old"; done
  fi
fi

# 2. Files: copied only when their content differs.
install_file() {  # src dst mode -> returns 0 when it installed something
  if [ -f "$2" ] && cmp -s "$1" "$2"; then return 1; fi
  say "file: $2"
  run install -D -m "$3" "$1" "$2"
}
install_file "$SRC/README.md" "$APP/README.md" 0644 && code_changed=1 || true
install_file "$SRC/scripts/proof_p35_decision_intelligence.sh" \
  "$APP/bin/proof_p35_decision_intelligence.sh" 0755 && code_changed=1 || true
install_file "$SRC/scripts/p35_dashboard_queries.sh" \
  "$APP/bin/p35_dashboard_queries.sh" 0755 && code_changed=1 || true
for unit in "$UNIT.service" "$UNIT@.service"; do
  install_file "$SRC/deploy/systemd/$unit" "$UNITDIR/$unit" 0644 && units_changed=1 || true
done
# Prometheus's rules, where a Prometheus reads a rules directory; its reload is the
# operator's (promtool check rules, then SIGHUP or /-/reload).
if [ -d "$RULESDIR" ]; then
  if install_file "$SRC/deploy/prometheus/p35.rules.yml" "$RULESDIR/p35.rules.yml" 0644; then
    say "prometheus: rules installed; reload Prometheus to load them"
  fi
else
  say "prometheus: no $RULESDIR, rules not installed (deploy/prometheus/p35.rules.yml)"
fi

# 3. Settings: the operator's file is theirs.
if [ ! -e "$ENVFILE" ]; then
  say "env: installing $ENVFILE (edit it: P35_REDIS_URL at least)"
  run install -D -m 0600 "$SRC/deploy/env/p35-decision-intelligence.env" "$ENVFILE"
else
  # Names only, never values: the file holds the Redis password.
  set_here=$(sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*=.*/\1/p' "$ENVFILE" | sort -u)
  known=$(sed -n 's/^#\{0,1\}\([A-Z][A-Z0-9_]*\)=.*/\1/p' "$SRC/deploy/env/p35-decision-intelligence.env" | sort -u)
  mentioned=$(sed -n 's/^[#[:space:]]*\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*=.*/\1/p' "$ENVFILE" | sort -u)
  new=$(comm -23 <(printf '%s\n' "$known") <(printf '%s\n' "$mentioned") | xargs)
  say "env: keeping $ENVFILE (values not shown); it sets: $(printf '%s\n' "$set_here" | xargs)"
  [ -z "$new" ] || say "env: settings new in this release (see the template): $new"
fi

# 4. systemd. Template instances in use (running, or enabled) take the plain unit's place.
[ "$units_changed" = 0 ] || run "$SYSTEMCTL" daemon-reload
instances=$( { "$SYSTEMCTL" list-units --plain --no-legend --state=active "$UNIT@*.service" 2>/dev/null |
  awk '{print $1}'; find "$UNITDIR" -path "*.wants/$UNIT@*.service" -printf '%f\n' 2>/dev/null; } |
  grep "^$UNIT@.*\.service$" | sort -u | xargs || true)
proof_units=$UNIT
if [ -n "$instances" ]; then
  proof_units=""
  say "service: template instances in use ($instances); $UNIT itself is left alone"
  for inst in $instances; do
    if "$SYSTEMCTL" is-active --quiet "$inst" 2>/dev/null; then
      if [ "$code_changed" = 1 ] || [ "$units_changed" = 1 ]; then
        say "service: restarting $inst"
        run "$SYSTEMCTL" restart "$inst"
      else
        say "service: $inst is running and nothing changed"
      fi
      proof_units="$proof_units $inst"
    else
      say "service: $inst is enabled but not running; not starting it"
    fi
  done
elif "$SYSTEMCTL" is-active --quiet "$UNIT" 2>/dev/null; then
  if [ "$code_changed" = 1 ] || [ "$units_changed" = 1 ]; then
    say "service: restarting $UNIT"
    run "$SYSTEMCTL" restart "$UNIT"
  else
    say "service: $UNIT is running and nothing changed"
  fi
else
  say "service: enabling and starting $UNIT"
  run "$SYSTEMCTL" enable --now "$UNIT"
fi

# 5. Proof: give the service a few heartbeats to come up.
if [ "$SKIP_PROOF" = 1 ] || [ "$DRY" = 1 ]; then
  say "proof: skipped"
  exit 0
fi
units_active() {
  for unit in ${proof_units:-$UNIT}; do "$SYSTEMCTL" is-active --quiet "$unit" || return 1; done
}
proof() {
  for unit in ${proof_units:-$UNIT}; do
    SYSTEMCTL="$SYSTEMCTL" P35_BIN="$APP/venv/bin/p35" P35_ENV_FILE="$ENVFILE" P35_UNIT="$unit" \
      "$APP/bin/proof_p35_decision_intelligence.sh" || return 1
  done
}
for _ in $(seq 15); do
  proof >/dev/null 2>&1 && break
  # Redis not there yet (a first install before Redis, say): the service runs and waits
  # for it; that is a success of the deploy, said plainly, not a 30 s wait and a failure.
  unreachable=$("$APP/venv/bin/p35" --env-file "$ENVFILE" check 2>&1 | grep '^FAIL redis: cannot reach' || true)
  if [ -n "$unreachable" ] && units_active; then
    say "proof: ${unreachable#FAIL redis: }"
    say "proof: the service is running and waits for Redis; run $APP/bin/proof_p35_decision_intelligence.sh once Redis is up"
    exit 0
  fi
  sleep 2
done
proof || die "the service is installed but the proof failed (see above; journalctl -u ${proof_units:-$UNIT})"
