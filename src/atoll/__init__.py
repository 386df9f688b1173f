"""Atoll: a Kubernetes-native pool of hosts for VMs, VM-isolated pods and containers."""

__version__ = "0.1.0"
