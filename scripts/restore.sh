#!/usr/bin/env bash
# The runbook's restore command line (Appendix B), run as playbooks/restore.yml.
#
# --backup-dir and --manifest name a backup extracted by hand (the runbook's step 1,
# `tar -xzf`). --verify-only prints the runbook's step 2 lines and touches nothing else.
#
# Environment: ANSIBLE_INVENTORY (inventory, default the project's ansible.cfg) and
# CAP_RESTORE_EXTRA_VARS (an extra-vars file for settings without an option: Vault,
# token file, platform).
set -euo pipefail

usage() {
  cat <<'HELP'
Usage: restore.sh [OPTIONS]

Options:
  --backup-dir PATH      Path to extracted backup directory (required)
  --manifest PATH        Path to backup.manifest.json (required)
  --verify-only          Only verify backup integrity, don't restore
  --target-namespace NS  Kubernetes namespace for restore (default: cap-restore)
  --registry-first       Restore registry before policy store (default: true)
  --skip-smoke           Skip smoke tests after restore (default: false)
  --help                 Show this help message

Examples:
  # Verify backup only
  ./scripts/restore.sh \
    --backup-dir /restore \
    --manifest /restore/backup.manifest.json \
    --verify-only

  # Full restore
  ./scripts/restore.sh \
    --backup-dir /restore \
    --manifest /restore/backup.manifest.json \
    --target-namespace cap-restore
HELP
}

die() {
  echo "restore.sh: $*" >&2
  echo "Try 'restore.sh --help'." >&2
  exit 2
}

need_value() {
  [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ] || die "option $1 needs a value"
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(dirname "$here")

backup_dir="" manifest="" verify_only=false target=cap-restore registry_first=true skip_smoke=false

while [ $# -gt 0 ]; do
  case "$1" in
    --backup-dir) need_value "$@"; backup_dir=$2; shift 2 ;;
    --backup-dir=*) backup_dir=${1#*=}; shift ;;
    --manifest) need_value "$@"; manifest=$2; shift 2 ;;
    --manifest=*) manifest=${1#*=}; shift ;;
    --verify-only) verify_only=true; shift ;;
    --target-namespace) need_value "$@"; target=$2; shift 2 ;;
    --target-namespace=*) target=${1#*=}; shift ;;
    --registry-first|--registry-first=true) registry_first=true; shift ;;
    --registry-first=false) registry_first=false; shift ;;
    --skip-smoke) skip_smoke=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option: $1" ;;
  esac
done

[ -n "$backup_dir" ] || die "--backup-dir is required"
[ -n "$manifest" ] || die "--manifest is required"
backup_dir=$(realpath -m -- "$backup_dir")
manifest=$(realpath -m -- "$manifest")
[ -d "$backup_dir" ] || die "backup directory $backup_dir does not exist"
[ -f "$manifest" ] || die "manifest $manifest does not exist"

python_bin=${CAP_PYTHON:-}
if [ -z "$python_bin" ]; then
  if [ -x "$project/.venv/bin/python" ]; then python_bin=$project/.venv/bin/python; else python_bin=python3; fi
fi
playbook_bin=$(dirname "$python_bin")/ansible-playbook
command -v "$playbook_bin" >/dev/null 2>&1 || playbook_bin=ansible-playbook

work=$(mktemp -d "${TMPDIR:-/tmp}/cap-restore.XXXXXX")
trap 'rm -rf "$work"' EXIT
vars_file=$work/vars.json
lines_file=$work/verify.txt
log_file=$work/ansible.log

CAP_BACKUP_DIR=$backup_dir CAP_MANIFEST=$manifest CAP_VERIFY_ONLY=$verify_only CAP_TARGET=$target \
CAP_REGISTRY_FIRST=$registry_first CAP_SKIP_SMOKE=$skip_smoke CAP_LINES=$lines_file \
"$python_bin" - "$vars_file" <<'PY'
import json, os, sys
env = os.environ.get
doc = {
    "cap_restore_source": "directory",
    "cap_restore_backup_dir": env("CAP_BACKUP_DIR"),
    "cap_restore_manifest": env("CAP_MANIFEST"),
    "cap_restore_verify_only": env("CAP_VERIFY_ONLY") == "true",
    "cap_restore_target": env("CAP_TARGET"),
    "cap_restore_registry_first": env("CAP_REGISTRY_FIRST") == "true",
    "cap_restore_skip_smoke": env("CAP_SKIP_SMOKE") == "true",
    "cap_restore_verify_report_file": env("CAP_LINES"),
}
with open(sys.argv[1], "w") as handle:
    json.dump(doc, handle)
PY

# Site settings first, then the command line, which wins.
args=()
[ -z "${CAP_RESTORE_EXTRA_VARS:-}" ] || args+=(-e "@$CAP_RESTORE_EXTRA_VARS")
args+=(-e "@$vars_file")

cd "$project"
export ANSIBLE_CONFIG=${ANSIBLE_CONFIG:-$project/ansible.cfg}

if [ "$verify_only" = true ]; then
  # The runbook's step 2 output, and the play's log only when something went wrong.
  status=0
  "$playbook_bin" "${args[@]}" playbooks/restore.yml >"$log_file" 2>&1 || status=$?
  if [ -s "$lines_file" ]; then
    cat "$lines_file"
  fi
  if [ "$status" -ne 0 ]; then
    [ -s "$lines_file" ] || tail -n 40 "$log_file" >&2
    grep -h -A3 'msg:' "$log_file" | tail -n 8 >&2 || true
    echo "restore.sh: verification failed" >&2
    exit 1
  fi
  exit 0
fi

if ! "$playbook_bin" "${args[@]}" playbooks/restore.yml; then
  echo "restore.sh: restore failed and was rolled back; see the task output above" >&2
  exit 1
fi
