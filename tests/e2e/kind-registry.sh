#!/usr/bin/env bash
# A model registry the kind cluster can read: breast-cancer v1 and v2 trained here, copied onto
# a PersistentVolumeClaim (model-registry) in the e2e namespace; KServe's storage initializer
# reads pvc://model-registry/registry/breast-cancer/vN.
set -euo pipefail

NAMESPACE=${E2E_NAMESPACE:-model-serving-e2e}
REGISTRY=$(mktemp -d)/registry

make train REGISTRY="$REGISTRY"
.venv/bin/model-trainer --sample breast-cancer --registry-uri "$REGISTRY" --param C=0.5 --force

kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n "$NAMESPACE" -f - <<'YAML'
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: model-registry
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: registry-loader
spec:
  containers:
    - name: loader
      image: busybox:1.37
      command: ["sleep", "3600"]
      volumeMounts:
        - name: registry
          mountPath: /data
  volumes:
    - name: registry
      persistentVolumeClaim:
        claimName: model-registry
YAML
kubectl wait -n "$NAMESPACE" --for=condition=Ready pod/registry-loader --timeout=5m
kubectl cp "$REGISTRY" "$NAMESPACE/registry-loader:/data/registry"
kubectl delete -n "$NAMESPACE" pod/registry-loader --wait
