"""Pod-VMs: each pod in its own QEMU microvm, its containers run by an in-guest agent."""
