"""asyncio helpers free of Kubernetes."""
