#!/usr/bin/env bash
# Regenerates the committed generated artifacts from the code:
#   crds/vaultsecret.yaml                       (hyperion-vault-controller crd)
#   charts/hyperion-vault/files/vaultsecret.yaml (a copy the chart's CRD template renders)
#   api/openapi.json                            (hyperion-vault-api openapi)
# With --check, regenerates into a temp dir and fails if any committed copy differs (CI).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
check=false
[ "${1:-}" = --check ] && check=true
cargo build --locked -q -p hyperion-vault-controller -p hyperion-vault-api
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$CARGO_TARGET_DIR/debug/hyperion-vault-controller" crd >"$out/vaultsecret.yaml"
"$CARGO_TARGET_DIR/debug/hyperion-vault-api" openapi >"$out/openapi.json"
targets=("crds/vaultsecret.yaml:vaultsecret.yaml" "charts/hyperion-vault/files/vaultsecret.yaml:vaultsecret.yaml"
  "api/openapi.json:openapi.json")
status=0
for t in "${targets[@]}"; do
  committed=${t%%:*} generated=$out/${t##*:}
  if $check; then
    if ! diff -u "$committed" "$generated" >/dev/null 2>&1; then
      echo "generated artifact differs: $committed (run scripts/gen.sh and commit)" >&2
      diff -u "$committed" "$generated" | head -40 >&2 || true
      status=1
    fi
  else
    mkdir -p "$(dirname "$committed")"
    cp "$generated" "$committed"
  fi
done
$check && [ "$status" -eq 0 ] && echo "generated artifacts are up to date"
exit "$status"
