"""Package repositories: made from the built artifacts (folder or registry), served over
HTTP, and read by the client that installs packages into a root."""
