"""Pods on this host: the pod worker (kubelet's), the status it reports, container specs and
environment, probes, volumes, and reading container logs back."""
