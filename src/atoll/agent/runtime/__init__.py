"""How workloads run on this host: runc containers through their shims, QEMU processes, OCI
specs, mounts, and paths resolved safely inside a root."""
