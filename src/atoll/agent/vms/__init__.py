"""VirtualMachines on this host: the manager and a worker per VM, QEMU launch preparation,
status, boot watch, guest bootstrap (cloud-init) data, VM networking and the blob cache."""
