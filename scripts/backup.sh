#!/usr/bin/env bash
# The runbook's backup command line (Appendix A), run as playbooks/backup.yml.
#
# Paths that are not given default to the pod layout (/app/build/..., /app/keys), so
# the CronJob form `backup.sh --output /backup/cap-backup-$(date +%Y%m%d-%H%M%S).tar.gz`
# works as written. Kubernetes does not run a shell over container args, so a literal
# "$(date +FORMAT)" in --output is expanded here, in UTC.
#
# Environment: CAP_APP_DIR (application root; default derived from --registry, else the
# inventory's cap_backup_app_dir, /app in the role defaults),
# ANSIBLE_INVENTORY (inventory, default the project's ansible.cfg), CAP_BACKUP_EXTRA_VARS
# (path of an extra-vars file for settings without an option, e.g. S3 destinations).
set -euo pipefail

usage() {
  cat <<'HELP'
Usage: backup.sh [OPTIONS]

Options:
  --output PATH          Output tar.gz file path (required)
  --registry PATH        Path to registry.sqlite or registry.json (required)
  --policy-store PATH    Path to policy_store.json (required)
  --keys PATH            Path to keys directory (public keys only)
  --config PATH          Path to helm/values-prod.yaml
  --manifest PATH        Output path for backup.manifest.json
  --compress             Enable gzip compression (default: true)
  --encrypt              Enable AES-256-GCM encryption (default: false)
  --encryption-key PATH  Path to encryption key (if --encrypt enabled)
  --help                 Show this help message

Examples:
  # Basic backup
  ./scripts/backup.sh \
    --output /backup/cap-backup.tar.gz \
    --registry build/registry.sqlite \
    --policy-store build/policy_store.json

  # Encrypted backup
  ./scripts/backup.sh \
    --output /backup/cap-backup-encrypted.tar.gz \
    --registry build/registry.sqlite \
    --policy-store build/policy_store.json \
    --encrypt \
    --encryption-key /keys/backup.key
HELP
}

die() {
  echo "backup.sh: $*" >&2
  echo "Try 'backup.sh --help'." >&2
  exit 2
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(dirname "$here")

output="" registry="" policy_store="" keys="" config="" manifest=""
compress=true encrypt=false encryption_key=""

need_value() {
  [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ] || die "option $1 needs a value"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --output) need_value "$@"; output=$2; shift 2 ;;
    --output=*) output=${1#*=}; shift ;;
    --registry) need_value "$@"; registry=$2; shift 2 ;;
    --registry=*) registry=${1#*=}; shift ;;
    --policy-store) need_value "$@"; policy_store=$2; shift 2 ;;
    --policy-store=*) policy_store=${1#*=}; shift ;;
    --keys) need_value "$@"; keys=$2; shift 2 ;;
    --keys=*) keys=${1#*=}; shift ;;
    --config) need_value "$@"; config=$2; shift 2 ;;
    --config=*) config=${1#*=}; shift ;;
    --manifest) need_value "$@"; manifest=$2; shift 2 ;;
    --manifest=*) manifest=${1#*=}; shift ;;
    --compress) compress=true; shift ;;
    --compress=true|--compress=yes) compress=true; shift ;;
    --compress=false|--compress=no) compress=false; shift ;;
    --encrypt) encrypt=true; shift ;;
    --encryption-key) need_value "$@"; encryption_key=$2; shift 2 ;;
    --encryption-key=*) encryption_key=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option: $1" ;;
  esac
done

[ -n "$output" ] || die "--output is required"
if [ "$encrypt" = true ] && [ -z "$encryption_key" ] && [ -z "${CAP_BACKUP_EXTRA_VARS:-}" ]; then
  die "--encrypt needs --encryption-key (or a Vault key source in CAP_BACKUP_EXTRA_VARS)"
fi
[ "$encrypt" = true ] || [ -z "$encryption_key" ] || die "--encryption-key is only used with --encrypt"

# One timestamp names the backup and expands "$(date +FORMAT)" in --output.
stamp_epoch=$(date -u +%s)
timestamp=$(date -u -d "@$stamp_epoch" +%Y%m%d-%H%M%S)
while [[ "$output" =~ \$\(date\ \+([^\)]*)\) ]]; do
  expanded=$(date -u -d "@$stamp_epoch" "+${BASH_REMATCH[1]}")
  output=${output/"${BASH_REMATCH[0]}"/$expanded}
done
# A timestamp in the file name (cap-backup-YYYYMMDD-HHMMSS) names the backup as well.
if [[ "$(basename "$output")" =~ ([0-9]{8}-[0-9]{6}) ]]; then
  timestamp=${BASH_REMATCH[1]}
fi

abs() { realpath -m -- "$1"; }
output=$(abs "$output")
[ -z "$registry" ] || registry=$(abs "$registry")
[ -z "$policy_store" ] || policy_store=$(abs "$policy_store")
[ -z "$keys" ] || keys=$(abs "$keys")
[ -z "$config" ] || config=$(abs "$config")
[ -z "$manifest" ] || manifest=$(abs "$manifest")
[ -z "$encryption_key" ] || encryption_key=$(abs "$encryption_key")

# The application root: CAP_APP_DIR, else the directory holding build/<registry>, else
# nothing here, so the inventory's (or CAP_BACKUP_EXTRA_VARS') cap_backup_app_dir applies,
# and the role's default /app, the pod layout, when none sets it.
app_dir=${CAP_APP_DIR:-}
if [ -z "$app_dir" ] && [ -n "$registry" ] && [ "$(basename "$(dirname "$registry")")" = build ]; then
  app_dir=$(dirname "$(dirname "$registry")")
fi
[ -z "$app_dir" ] || app_dir=$(abs "$app_dir")

vars_file=$(mktemp "${TMPDIR:-/tmp}/cap-backup-vars.XXXXXX")
trap 'rm -f "$vars_file"' EXIT
chmod 0600 "$vars_file"

python_bin=${CAP_PYTHON:-}
if [ -z "$python_bin" ]; then
  if [ -x "$project/.venv/bin/python" ]; then python_bin=$project/.venv/bin/python; else python_bin=python3; fi
fi
playbook_bin=$(dirname "$python_bin")/ansible-playbook
command -v "$playbook_bin" >/dev/null 2>&1 || playbook_bin=ansible-playbook

# Extra vars are written as JSON by Python, so no path needs shell or YAML quoting.
CAP_OUTPUT=$output CAP_REGISTRY=$registry CAP_POLICY_STORE=$policy_store CAP_KEYS=$keys \
CAP_CONFIG=$config CAP_MANIFEST=$manifest CAP_COMPRESS=$compress CAP_ENCRYPT=$encrypt \
CAP_ENCRYPTION_KEY=$encryption_key CAP_APP=$app_dir CAP_TIMESTAMP=$timestamp \
"$python_bin" - "$vars_file" <<'PY'
import json, os, sys
env = os.environ.get
doc = {
    "cap_backup_output": env("CAP_OUTPUT"),
    "cap_backup_timestamp": env("CAP_TIMESTAMP"),
    "cap_backup_compress": env("CAP_COMPRESS") == "true",
    "cap_backup_encrypt": env("CAP_ENCRYPT") == "true",
}
optional = {
    "CAP_APP": "cap_backup_app_dir",
    "CAP_REGISTRY": "cap_backup_registry_path",
    "CAP_POLICY_STORE": "cap_backup_policy_store_path",
    "CAP_KEYS": "cap_backup_keys_dir",
    "CAP_MANIFEST": "cap_backup_manifest_copy",
}
for name, var in optional.items():
    if env(name):
        doc[var] = env(name)
if env("CAP_POLICY_STORE"):
    doc["cap_backup_policy_store_source"] = "file"
if env("CAP_ENCRYPTION_KEY"):
    doc["cap_backup_encryption_key_source"] = "file"
    doc["cap_backup_encryption_key_file"] = env("CAP_ENCRYPTION_KEY")
if env("CAP_CONFIG"):
    doc["cap_backup_config_files"] = [
        {"src": env("CAP_CONFIG"), "dest": "helm/values-prod.yaml"},
        "openapi/openapi.yaml", "grafana/dashboards/*.json", "prometheus/alerts.yml"]
with open(sys.argv[1], "w") as handle:
    json.dump(doc, handle)
PY

# Site settings first, then the command line, which wins.
args=()
[ -z "${CAP_BACKUP_EXTRA_VARS:-}" ] || args+=(-e "@$CAP_BACKUP_EXTRA_VARS")
args+=(-e "@$vars_file")

cd "$project"
export ANSIBLE_CONFIG=${ANSIBLE_CONFIG:-$project/ansible.cfg}
if ! "$playbook_bin" "${args[@]}" playbooks/backup.yml; then
  echo "backup.sh: backup failed; see the task output above" >&2
  exit 1
fi
