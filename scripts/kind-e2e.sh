#!/usr/bin/env bash
# Mizzen on a kind cluster, end to end (needs docker, kind and kubectl; not run in CI, which has no docker):
# create the cluster, build and load the images, install, label `default`, deploy the demo, and call it
# through the mesh.   KEEP=1 leaves the cluster up; CLUSTER=name picks its name.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${CLUSTER:-mizzen}
TAG=$(python3 -c "import re;print(re.search(r'^version = \"(.+)\"', open('pyproject.toml').read(), re.M).group(1))")
MIZZEN=${MIZZEN:-mizzen}

for tool in docker kind kubectl "$MIZZEN"; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is required" >&2; exit 2; }
done

cleanup() { [ "${KEEP:-0}" = 1 ] || kind delete cluster --name "$CLUSTER"; }
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }

step "kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config deploy/kind/cluster.yaml
kubectl config use-context "kind-$CLUSTER"

step "images (tag $TAG)"
make images TAG="$TAG"
make kind-load TAG="$TAG" KIND_CLUSTER="$CLUSTER"

step "install"
"$MIZZEN" install --profile demo --set imagePullPolicy=Never --timeout 300

step "label default for injection and deploy the demo"
kubectl label namespace default istio-injection=enabled --overwrite
kubectl apply -f - <<YAML
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: default}
spec:
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello-v1, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello, version: v1}}
  template:
    metadata: {labels: {app: hello, version: v1}}
    spec:
      containers:
        - name: hello
          image: mizzen/demo:$TAG
          imagePullPolicy: Never
          env: [{name: DEMO_NAME, value: hello}, {name: DEMO_VERSION, value: v1}]
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /ready, port: http}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: default}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      containers:
        - name: client
          image: mizzen/demo:$TAG
          imagePullPolicy: Never
          env: [{name: DEMO_NAME, value: client}]
YAML
kubectl rollout status deployment/hello-v1 deployment/client --timeout=180s

step "the pods carry the sidecar (and no init container but the proxy)"
kubectl get pods -l app=hello -o jsonpath='{range .items[*]}{.metadata.name}{": init="}{.spec.initContainers[*].name}{" containers="}{.spec.containers[*].name}{"\n"}{end}'
"$MIZZEN" proxy-status

step "call hello through the mesh from client"
CLIENT=$(kubectl get pod -l app=client -o jsonpath='{.items[0].metadata.name}')
for _ in 1 2 3; do
  kubectl exec "$CLIENT" -c client -- python -c \
    "import urllib.request;print(urllib.request.urlopen('http://hello.default/').read().decode())"
done
kubectl exec "$CLIENT" -c istio-proxy -- python -c \
  "import urllib.request;print([l for l in urllib.request.urlopen('http://127.0.0.1:15020/stats/prometheus').read().decode().splitlines() if l.startswith('istio_requests_total')][:3])"

step "analyze"
"$MIZZEN" analyze || true
echo "kind-e2e: OK"
