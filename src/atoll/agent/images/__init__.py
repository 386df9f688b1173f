"""Container images on this host: the store of unpacked layers, and importing image files
(OCI layouts, ``docker save`` archives) into it."""
