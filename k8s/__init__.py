"""Kubernetes deployment of the comparison: manifests (base/, overlays/) and the Python
that checks them offline (validate.py) and drives a cluster (cluster.py)."""
