#!/usr/bin/env bash
# The runbook's step 8: smoke tests on a restored CAP Verifier API.
#
#   ./scripts/smoke_restore.sh https://cap-restore.example.com/api/v1
#
# Token: RESTORE_TOKEN, or CAP_TOKEN_FILE naming a file that holds it. The token is
# handed to curl through a 0600 header file, never on a command line.
# Optional: POLICY_HASH (policy to fetch; default the first one listed), EXPECTED_ETAG
# (the original system's ETag for it; default its first 16 hex digits, quoted),
# MANIFEST_HASH (registry entry to /verify; default the newest), EXPECTED_ENTRIES
# (registry entry count the restored system must report), CURL_CA_BUNDLE (CA file);
# SMOKE_INSECURE=1 skips TLS verification, only when asked.
# Exit status: 0 when every test passed, 1 when one failed, 2 for bad usage.
set -uo pipefail

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac
[ $# -eq 1 ] || { usage >&2; exit 2; }

api=${1%/}
case "$api" in
  */api/v1) root=${api%/api/v1} ;;
  *) root=$api; api=$api/api/v1 ;;
esac

for tool in curl python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "smoke_restore.sh: $tool is required" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/cap-smoke.XXXXXX") || exit 2
trap 'rm -rf "$work"' EXIT
chmod 0700 "$work"

token=${RESTORE_TOKEN:-}
if [ -z "$token" ] && [ -n "${CAP_TOKEN_FILE:-}" ]; then
  token=$(tr -d '[:space:]' < "$CAP_TOKEN_FILE") || { echo "smoke_restore.sh: cannot read $CAP_TOKEN_FILE" >&2; exit 2; }
fi
[ -n "$token" ] || { echo "smoke_restore.sh: set RESTORE_TOKEN or CAP_TOKEN_FILE" >&2; exit 2; }
( umask 077; printf 'Authorization: Bearer %s\n' "$token" > "$work/auth" )
unset token

curl_opts=(-sS --max-time 30)
[ "${SMOKE_INSECURE:-0}" = 1 ] && curl_opts+=(-k)

# request METHOD URL OUT [BODY]: body to OUT, headers to OUT.h, prints the HTTP status.
request() {
  local method=$1 url=$2 out=$3 body=${4:-}
  local args=("${curl_opts[@]}" -X "$method" -H "@$work/auth" -D "$out.h" -o "$out" -w '%{http_code}')
  [ "$method" = HEAD ] && args=("${curl_opts[@]}" -I -H "@$work/auth" -D "$out.h" -o /dev/null -w '%{http_code}')
  if [ -n "$body" ]; then
    args+=(-H 'Content-Type: application/json' --data-binary "$body")
  fi
  curl "${args[@]}" "$url" 2>"$out.err" || true
}

# field FILE EXPR: a value from a JSON file, by a Python expression on `d`.
field() {
  python3 - "$1" "$2" <<'PY' 2>/dev/null
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    value = eval(sys.argv[2], {"__builtins__": {}}, {"d": d})
except Exception:
    sys.exit(1)
print("" if value is None else (json.dumps(value) if isinstance(value, (dict, list, bool)) else value))
PY
}

header() {
  grep -i "^$2:" "$1.h" 2>/dev/null | tail -n 1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//'
}

failures=0
pass() { echo "✅ $1: OK${2:+ ($2)}"; }
fail() { echo "❌ $1: FAILED ($2)"; failures=$((failures + 1)); }

echo "🧪 Running smoke tests on restored system..."

status=$(request GET "$root/healthz" "$work/health")
if [ "$status" = 200 ] && [ "$(field "$work/health" 'd["status"]')" = OK ]; then
  pass "Health check"
else
  fail "Health check" "HTTP ${status:-none} from $root/healthz"
fi

status=$(request GET "$root/readyz" "$work/ready")
if [ "$status" = 200 ] && [ "$(field "$work/ready" 'd["status"]')" = OK ]; then
  pass "Readiness check"
else
  failing=$(field "$work/ready" '", ".join(c["name"] + ": " + c.get("reason", "") for c in d["checks"] if c["status"] != "OK")')
  fail "Readiness check" "HTTP ${status:-none}${failing:+; $failing}"
fi

policy=${POLICY_HASH:-}
if [ -z "$policy" ]; then
  request GET "$api/policies" "$work/policies" >/dev/null
  policy=$(field "$work/policies" 'd["policy_hashes"][0]')
fi
if [ -z "$policy" ]; then
  fail "Policy retrieval" "no policy in $api/policies"
else
  status=$(request GET "$api/policy/$policy" "$work/policy")
  got=$(field "$work/policy" 'd["policy_hash"]')
  if [ "$status" = 200 ] && [ "$got" = "$policy" ]; then
    pass "Policy retrieval" "hash matches"
  else
    fail "Policy retrieval" "HTTP ${status:-none}, policy_hash ${got:-missing}, expected $policy"
  fi
fi

request GET "$api/registry" "$work/registry" >/dev/null
manifest=${MANIFEST_HASH:-$(field "$work/registry" 'd["latest"]["manifest_hash"]')}
if [ -z "$manifest" ]; then
  fail "Verify endpoint" "no registry entry to verify"
else
  status=$(request POST "$api/verify" "$work/verify" "{\"manifest_hash\": \"$manifest\"}")
  if [ "$status" = 200 ] && [ "$(field "$work/verify" 'd["valid"]')" = true ]; then
    pass "Verify endpoint"
  else
    fail "Verify endpoint" "HTTP ${status:-none} $(field "$work/verify" 'd.get("reason") or d.get("message") or ""')"
  fi
fi

if [ -n "$policy" ]; then
  expected=${EXPECTED_ETAG:-\"${policy:2:16}\"}
  request HEAD "$api/policy/$policy" "$work/head" >/dev/null
  etag=$(header "$work/head" etag)
  if [ "$etag" = "$expected" ]; then
    pass "ETag matches original"
  else
    fail "ETag matches original" "etag ${etag:-missing}, expected $expected"
  fi
else
  fail "ETag matches original" "no policy to compare"
fi

entries=$(field "$work/registry" 'd["entries"]')
if [ -n "$entries" ] && [ "$entries" -gt 0 ] 2>/dev/null && { [ -z "${EXPECTED_ENTRIES:-}" ] || [ "$entries" = "$EXPECTED_ENTRIES" ]; }; then
  pass "Registry query" "$entries entries"
else
  fail "Registry query" "${entries:-no} entries${EXPECTED_ENTRIES:+, expected $EXPECTED_ENTRIES}"
fi

if [ "$failures" -eq 0 ]; then
  echo "🎉 All smoke tests passed!"
  exit 0
fi
echo "💥 $failures smoke test(s) failed"
exit 1
