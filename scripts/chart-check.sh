#!/usr/bin/env bash
# Chart checks: helm lint and helm template with every values file under charts/*/ci/, the
# committed CRD copy equals the generated one, a misspelled value is refused, and — when a test
# environment is up (KUBECONFIG set) — `helm install --dry-run` against its apiserver succeeds
# with the default values and fails with a misspelled value.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
HELM=${HELM:?HELM must point at the helm binary (source the testenv env file)}
CHART=charts/hyperion-vault
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   - $*"; }
ko() { fail=$((fail + 1)); echo "FAIL - $*"; }

if cmp -s crds/vaultsecret.yaml "$CHART/files/vaultsecret.yaml"; then
  ok "chart CRD copy equals crds/vaultsecret.yaml"
else
  ko "chart CRD copy differs from crds/vaultsecret.yaml (run scripts/gen.sh)"
fi

if "$HELM" lint "$CHART" >/dev/null; then ok "helm lint (defaults)"; else ko "helm lint (defaults)"; fi
for values in "$CHART"/ci/*-values.yaml; do
  case "$values" in *misspelled*) continue ;; esac
  if "$HELM" lint "$CHART" -f "$values" >/dev/null && "$HELM" template hv "$CHART" -f "$values" >/dev/null; then
    ok "helm lint + template with $(basename "$values")"
  else
    ko "helm lint + template with $(basename "$values")"
  fi
done
if out=$("$HELM" template hv "$CHART" -f "$CHART/ci/misspelled-values.yaml" 2>&1); then
  ko "misspelled value was accepted by helm template"
elif grep -q "allowedIps" <<<"$out"; then
  ok "misspelled value refused, naming it"
else
  ko "misspelled value refused for another reason: $out"
fi

if [ -n "${KUBECONFIG:-}" ]; then
  if "$HELM" install hyperion-vault "$CHART" --namespace hv-dry-run --create-namespace --dry-run=server >/dev/null; then
    ok "helm install --dry-run=server against the test apiserver (defaults)"
  else
    ko "helm install --dry-run=server against the test apiserver (defaults)"
  fi
  if "$HELM" install hyperion-vault "$CHART" --namespace hv-dry-run --dry-run=server \
      -f "$CHART/ci/misspelled-values.yaml" >/dev/null 2>&1; then
    ko "helm install --dry-run accepted a misspelled value"
  else
    ok "helm install --dry-run refuses a misspelled value"
  fi
fi

echo "chart: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
