"""The kopf operator: thin handlers that read the cluster, call `reconcile`, and write back."""
