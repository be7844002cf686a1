"""Cluster tier: tests against a real API server (local control plane or KUBECONFIG)."""
