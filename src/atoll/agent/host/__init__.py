"""This host as a Node: registration, status and Lease; the pod network (CNI); routes to the
other hosts' pods; usage stats; and the teardown that takes a host out of service."""
