"""The tree side: a package tree read from disk (YAML with line numbers, the spec keyword
tables, package references and versions), rendered with Jinja2, resolved into the
dependency graph with build hashes, and loaded as one cached project."""
