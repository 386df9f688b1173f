"""Persistent storage: the PV controller (binding, phases, reclaim), the node-local
provisioner, in-use protection, and VMs' claims placed with their VM (``binder.py`` holds
the pure matching they and the scheduler share)."""
