"""The Kubernetes-compatible API server: HTTP, discovery, OpenAPI, object semantics."""
