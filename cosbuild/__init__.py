"""cosbuild: a declarative build system for immutable Linux derivatives."""

__version__ = "0.1.0"
