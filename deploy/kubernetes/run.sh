#!/usr/bin/env bash
# Extract on the cluster, then merge once every shard has completed.
set -euo pipefail
cd "$(dirname "$0")"
kubectl apply -f pvc.yaml
kubectl apply -f extract-job.yaml
kubectl wait --for=condition=complete job/convcache-extract --timeout=24h
kubectl apply -f merge-job.yaml
kubectl wait --for=condition=complete job/convcache-merge --timeout=2h
