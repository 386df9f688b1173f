"""NetworkPolicy enforcement for this host's pods, in an nftables table of its own."""
