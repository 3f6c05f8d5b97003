#!/usr/bin/env bash
# Install what the e2e tests need on a fresh kind cluster: cert-manager, Knative Serving with
# Kourier, KServe (Knative deployment mode) and kube-prometheus-stack. Pinned versions; run by
# .github/workflows/e2e.yml after `make tools` (it uses .tools/helm4/helm and kubectl).
set -euo pipefail

# KServe v0.20.0 is a tagged release; its kserve-deps.env pins Knative Serving 1.21.1 and
# cert-manager v1.17.0, the versions it is tested with. Kourier follows Knative's version.
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.17.0}
KNATIVE_VERSION=${KNATIVE_VERSION:-v1.21.1}
KOURIER_VERSION=${KOURIER_VERSION:-v1.21.0}
KSERVE_VERSION=${KSERVE_VERSION:-v0.20.0}
PROMETHEUS_STACK_VERSION=${PROMETHEUS_STACK_VERSION:-75.15.1}
# The Helm repository URL of prometheus-community's charts (a repository secret in CI).
PROMETHEUS_STACK_REPO=${PROMETHEUS_STACK_REPO:?set PROMETHEUS_STACK_REPO to the prometheus-community Helm repository URL}
HELM=${HELM:-.tools/helm4/helm}
GH=https://github.com

echo ">> cert-manager $CERT_MANAGER_VERSION"
kubectl apply -f "$GH/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
kubectl wait -n cert-manager --for=condition=Available deployment --all --timeout=5m

echo ">> Knative Serving $KNATIVE_VERSION with Kourier"
kubectl apply -f "$GH/knative/serving/releases/download/knative-$KNATIVE_VERSION/serving-crds.yaml"
kubectl apply -f "$GH/knative/serving/releases/download/knative-$KNATIVE_VERSION/serving-core.yaml"
kubectl apply -f "$GH/knative-extensions/net-kourier/releases/download/knative-$KOURIER_VERSION/kourier.yaml"
kubectl wait -n knative-serving --for=condition=Available deployment --all --timeout=5m
kubectl wait -n kourier-system --for=condition=Available deployment --all --timeout=5m
# The ConfigMap patches come after the wait: Knative validates its config-* ConfigMaps with a
# webhook (config.webhook.serving.knative.dev, failurePolicy Fail) that refuses every change
# until its Deployment is up.
kubectl patch configmap/config-network -n knative-serving --type merge \
  -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
# An external domain, or the tests' requests through svc/kourier get a 404: with no domain in
# config-domain, Knative gives every route the cluster-local svc.cluster.local domain
# (DefaultDomain in knative/serving pkg/reconciler/route/config/domain.go) and makes the route
# cluster-local (routeVisibility in pkg/reconciler/route/visibility/visibility.go); net-kourier
# publishes cluster-local hosts only on the internal gateway, kourier-internal
# (pkg/generator/ingress_translator.go). KServe's own Kourier setup sets the same domain
# (hack/setup/infra/knative/templates/knative-serving-kourier.yaml: example.com: ""); the
# tests send the InferenceService URL's host, NAME-predictor.NAMESPACE.example.com.
kubectl patch configmap/config-domain -n knative-serving --type merge \
  -p '{"data":{"example.com":""}}'

echo ">> KServe $KSERVE_VERSION (Knative deployment mode)"
# The release kserve.yaml of v0.20.0 has no Namespace object (its dependency script makes one, as
# KServe's quick-install does): create it first, idempotently, or the first namespaced object fails.
kubectl create namespace kserve --dry-run=client -o yaml | kubectl apply -f -
kubectl apply --server-side -f "$GH/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml"
kubectl wait -n kserve --for=condition=Available deployment --all --timeout=5m
kubectl apply --server-side -f "$GH/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-cluster-resources.yaml"
# Kourier, not Istio: KServe must not wait for an Istio VirtualService, or status.url never gets
# a route (KServe's Kourier guide: ingress.disableIstioVirtualHost=true in inferenceservice-config).
ingress=$(kubectl get configmap inferenceservice-config -n kserve -o jsonpath='{.data.ingress}')
ingress=$(python3 -c 'import json, sys; c = json.loads(sys.argv[1]); c["disableIstioVirtualHost"] = True; print(json.dumps(c))' "$ingress")
kubectl patch configmap inferenceservice-config -n kserve --type merge \
  -p "$(python3 -c 'import json, sys; print(json.dumps({"data": {"ingress": sys.argv[1]}}))' "$ingress")"
kubectl rollout restart deployment/kserve-controller-manager -n kserve
kubectl rollout status deployment/kserve-controller-manager -n kserve --timeout=5m
# Images loaded into kind have no registry to resolve a digest from: Knative skips tag-to-digest
# resolution only for kind.local, ko.local and dev.local (registries-skipping-tag-resolving), so
# the e2e image is named kind.local/model-server:e2e.

echo ">> kube-prometheus-stack $PROMETHEUS_STACK_VERSION"
"$HELM" upgrade --install kube-prometheus-stack kube-prometheus-stack \
  --repo "$PROMETHEUS_STACK_REPO" --version "$PROMETHEUS_STACK_VERSION" \
  --namespace monitoring --create-namespace --wait \
  --set grafana.enabled=false --set alertmanager.enabled=false \
  --set prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues=false
