"""The Service dataplane each host agent runs: kube-proxy's nftables mode, in one table."""
