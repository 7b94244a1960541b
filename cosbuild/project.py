"""A loaded project: settings -> tree -> rendered specs -> resolved graph."""

from __future__ import annotations

from dataclasses import dataclass

from .graph import Graph, build_graph
from .render import Renderer, load_values_files
from .settings import Settings
from .tree import Tree, load_trees


@dataclass(frozen=True)
class Project:
    settings: Settings
    tree: Tree
    renderer: Renderer
    graph: Graph


def load_project(settings: Settings) -> Project:
    tree = load_trees(list(settings.trees))
    renderer = Renderer(tree.templates, load_values_files(list(settings.values)))
    return Project(settings, tree, renderer, build_graph(tree, renderer))
