"""Builds: each package of the graph built with buildah from its builder image, its files
selected into a reproducible artifact tar, the images shared through the build cache."""
