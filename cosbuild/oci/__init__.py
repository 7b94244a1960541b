"""OCI images without container tools: the pure-Python registry client and the layers it
applies to a folder, used by the build cache, docker repositories and cos-upgrade."""
