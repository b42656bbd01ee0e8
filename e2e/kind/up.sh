#!/usr/bin/env bash
# For users with Docker: a kind cluster running hyperion-vault from this checkout.
#   1. creates the kind cluster `hyperion-vault` (skipped if it exists),
#   2. builds the image from the repository's Dockerfile and loads it into the cluster,
#   3. runs a single PostgreSQL 15 in the cluster (namespace hv-db) and creates the service role,
#   4. installs the chart with a local keyring (no AWS needed) and an allowlist for the pod CIDR.
# CI does not run this: the CI machine has no Docker engine (see the README).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CLUSTER=${KIND_CLUSTER:-hyperion-vault}
IMAGE=${IMAGE:-hyperion-vault:dev}
NS=${NAMESPACE:-hyperion-vault}

for tool in docker kind kubectl helm openssl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
kubectl config use-context "kind-$CLUSTER"

docker build -t "$IMAGE" "$ROOT"
kind load docker-image "$IMAGE" --name "$CLUSTER"

kubectl create namespace hv-db --dry-run=client -o yaml | kubectl apply -f -
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
DB_PASSWORD=$(kubectl -n "$NS" get secret hyperion-vault-db -o jsonpath='{.data.password}' 2>/dev/null | base64 -d || true)
DB_PASSWORD=${DB_PASSWORD:-$(openssl rand -hex 16)}
kubectl -n hv-db apply -f "$HERE/postgres.yaml"
kubectl -n hv-db rollout status statefulset/postgres --timeout=180s
kubectl -n hv-db exec statefulset/postgres -- psql -U postgres -v ON_ERROR_STOP=1 -c \
  "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vault_service') THEN
     CREATE ROLE vault_service LOGIN PASSWORD '$DB_PASSWORD'; END IF; END \$\$;"

kubectl -n "$NS" create secret generic hyperion-vault-db --dry-run=client -o yaml \
  --from-literal=hosts=postgres.hv-db.svc --from-literal=user=vault_service \
  --from-literal=password="$DB_PASSWORD" --from-literal=dbname=vault | kubectl apply -f -
kubectl -n "$NS" get secret hyperion-vault-keys >/dev/null 2>&1 || kubectl -n "$NS" create secret generic \
  hyperion-vault-keys --from-literal=keys="k1:$(openssl rand -base64 32)"
kubectl -n "$NS" get secret hyperion-vault-bootstrap >/dev/null 2>&1 || kubectl -n "$NS" create secret generic \
  hyperion-vault-bootstrap --from-literal=token="hvt_$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=')"

helm upgrade --install hyperion-vault "$ROOT/charts/hyperion-vault" --namespace "$NS" \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set database.sslMode=disable --set kms.mode=local --set kms.localKeysSecret=hyperion-vault-keys \
  --set api.bootstrapTokenSecret=hyperion-vault-bootstrap --set 'api.allowedIPs={10.244.0.0/16}' \
  --wait --timeout 5m
echo "hyperion-vault is running in namespace $NS; next: $HERE/test.sh"
