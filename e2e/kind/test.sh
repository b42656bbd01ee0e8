#!/usr/bin/env bash
# For users with Docker, after up.sh: the user's path against the kind cluster — apply an
# example VaultSecret, wait for Ready, read and verify it from a pod through the Service.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NS=${NAMESPACE:-hyperion-vault}
kubectl apply -f "$ROOT/examples/automatic.yaml"
kubectl wait vsec/api-key --for=condition=Ready --timeout=120s
kubectl get vsec api-key
URL="http://hyperion-vault.$NS.svc:8200/v1/secrets/default/api-key"
kubectl run hv-client --rm -i --restart=Never --image=curlimages/curl -- -sf "$URL"
echo "read through the in-cluster Service: ok"
