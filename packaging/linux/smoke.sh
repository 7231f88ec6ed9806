#!/usr/bin/env bash
# Smoke-test the frozen Linux bundle with no display (Qt's offscreen platform) and a temporary data
# folder: --version; doctor --json (parses; no check fails; the folders, the new database and the
# Qt window check are ok); psycopg's bundled libpq reaches the network (a refused connection, not
# a missing driver; SMOKE_POSTGRES_URL names a real server to open instead); time zones from the
# bundled tzdata and a locale from Babel's data; demo data; screenshots of every page.
# Exits non-zero at the first failure, with one line saying which check failed and why.
#     packaging/linux/smoke.sh [PATH_TO_BUNDLE_EXECUTABLE]   (default dist/switchboard/switchboard)
set -uo pipefail
cd "$(dirname "$0")/../.."

program=${1:-dist/switchboard/switchboard}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export QT_QPA_PLATFORM=offscreen
unset SWITCHBOARD_DATA_DIR SWITCHBOARD_DB_URL
data="$work/data"
# Every command gets this long at most, so a hung bundle fails the smoke test instead of CI.
LIMIT=${SMOKE_TIMEOUT:-300}

fail() {
    echo "smoke: FAILED: $*" >&2
    if [ -s "$work/stderr" ]; then
        echo "smoke: its last error output:" >&2
        tail -n 15 "$work/stderr" >&2
    fi
    exit 1
}
ok() { echo "smoke: ok: $*"; }
# run NAME ARGS...: the bundle with ARGS, stdout to $work/NAME.out; sets $status.
run() {
    local name=$1
    shift
    timeout "$LIMIT" "$program" "$@" >"$work/$name.out" 2>"$work/stderr"
    status=$?
    [ "$status" -eq 124 ] && fail "$name: no answer within $LIMIT seconds"
    return 0
}
if command -v python3 >/dev/null 2>&1; then python=(python3); else python=(uv run python); fi

[ -x "$program" ] || fail "no bundle at $program: build it with packaging/linux/build.sh"
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' app/__init__.py)

# 1. --version
run version --version
[ "$status" -eq 0 ] || fail "--version exited with $status"
[ "$(cat "$work/version.out")" = "switchboard $version" ] ||
    fail "--version printed '$(cat "$work/version.out")', expected 'switchboard $version'"
ok "--version: $(cat "$work/version.out")"

# 2. doctor --json: one JSON document; exit 0 unless a check is an error. The credential store
# and the receiver port may warn (no keyring on a CI machine; a port in use), nothing else may.
run doctor --data-dir "$data" doctor --json
problem=$("${python[@]}" - "$work/doctor.out" "$version" <<'PY'
import json, sys
try:
    report = json.load(open(sys.argv[1], encoding="utf-8"))
except ValueError as exc:
    sys.exit(f"its output is not one JSON document ({exc})")
checks = {check["name"]: check for check in report.get("checks", [])}
must_be_ok = ("data folder", "log folder", "database", "display")
problems = [f"no '{name}' check" for name in must_be_ok if name not in checks]
problems += [
    f"{name} is {checks[name]['status']}: {checks[name]['detail']}"
    for name in must_be_ok
    if name in checks and checks[name]["status"] != "ok"
]
problems += [
    f"{check['name']} is an error: {check['detail']}"
    for check in checks.values()
    if check["status"] == "error" and check["name"] not in must_be_ok
]
if report.get("version") != sys.argv[2]:
    problems.append(f"version {report.get('version')!r}, expected {sys.argv[2]!r}")
if report.get("ok") is not True:
    problems.append("ok is not true")
for check in checks.values():
    if check["status"] == "warning":
        print(f"smoke: note: doctor warns: {check['name']}: {check['detail']}", file=sys.stderr)
print("; ".join(problems))
PY
) || fail "doctor --json: could not read its output"
[ -z "$problem" ] || fail "doctor --json: $problem"
[ "$status" -eq 0 ] || fail "doctor --json exited with $status"
ok "doctor --json: $(grep -c '"status": "ok"' "$work/doctor.out") checks ok, Qt window opens offscreen"

# 3. PostgreSQL through psycopg's binary package (libpq bundled in psycopg_binary.libs).
# PSYCOPG_IMPL=binary: psycopg must not fall back to a libpq this machine happens to have.
export PSYCOPG_IMPL=binary
if [ -n "${SMOKE_POSTGRES_URL:-}" ]; then
    run postgres --db-url "$SMOKE_POSTGRES_URL" doctor --json
    grep -A2 '"name": "database"' "$work/postgres.out" | grep -q '"status": "ok"' ||
        fail "doctor could not open PostgreSQL at SMOKE_POSTGRES_URL: $(grep -A3 '"name": "database"' "$work/postgres.out" | tail -1)"
    ok "PostgreSQL opened through the bundled psycopg"
else
    # Port 9 (discard) has no PostgreSQL: the driver must load and report a refused connection.
    run postgres --db-url "postgresql+psycopg://smoke@127.0.0.1:9/smoke" doctor --json
    grep -q 'psycopg.OperationalError' "$work/postgres.out" ||
        fail "psycopg's binary driver did not load in the bundle (doctor exited with $status)"
    ok "psycopg's binary driver loads (a refused connection to 127.0.0.1:9, as expected)"
fi
unset PSYCOPG_IMPL

# 4. Time zones from the bundled tzdata (PYTHONTZPATH empty: no system zoneinfo folder is
# searched) and a locale from Babel's data.
PYTHONTZPATH="" run timezone --data-dir "$data" settings set school.timezone Pacific/Chatham
[ "$status" -eq 0 ] || fail "the bundled tzdata does not know Pacific/Chatham: $(tail -n1 "$work/stderr")"
run locale --data-dir "$data" settings set school.locale fr_CH
[ "$status" -eq 0 ] || fail "Babel's locale data does not know fr_CH: $(tail -n1 "$work/stderr")"
ok "time zone Pacific/Chatham from the bundled tzdata, locale fr_CH from Babel"

# 5. Demo data, then every page rendered with it (in that time zone and locale).
PYTHONTZPATH="" run demo --data-dir "$data" demo seed
[ "$status" -eq 0 ] || fail "demo seed exited with $status"
ok "demo seed: $(cat "$work/demo.out")"
shots="$work/screenshots"
PYTHONTZPATH="" run screenshots --data-dir "$data" screenshots --out "$shots"
[ "$status" -eq 0 ] || fail "screenshots exited with $status"
pages=$(grep -c 'Page(bridge),' app/views/__init__.py)
written=0
for file in "$shots"/*.png; do
    [ -e "$file" ] || continue
    [ "$(head -c 4 "$file" | tail -c 3)" = "PNG" ] || fail "screenshots: $file is not a PNG image"
    written=$((written + 1))
done
[ "$written" -ge "$pages" ] || fail "screenshots: $written PNG files for $pages pages"
while read -r path; do
    [ -s "$path" ] || fail "screenshots: printed $path, which is missing or empty"
done <"$work/screenshots.out"
ok "screenshots: $written PNG files for $pages pages"
echo "smoke: passed"
