"""The host agent (Spherelet): makes a host a Node and runs its pods and VMs."""
