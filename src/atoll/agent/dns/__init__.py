"""The cluster DNS each host agent serves to its pods (the names of Services and pods)."""
