"""This host's side of storage: the ``storage.atoll.dev/local`` datastore (volumes as sparse
files, ext4 loop mounts), claims resolved to what pods and VMs mount, the janitor that
removes deleted volumes' data, and the capacity this host reports."""
