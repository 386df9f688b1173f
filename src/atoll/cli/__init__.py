"""The `atoll` command: up, server, controller-manager, kubeconfig."""
