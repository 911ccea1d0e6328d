"""Exact, fast topology of sampled landscapes on grids and graphs (pure numpy).

Main entry points: `merge_tree`, `basins`, `persistence_diagram`,
`smad`, `simplify`, `landscape_profile`, `scale_summary` and the
plotting helpers.
"""

from .basins import Basins, basin_metric, basins, simplify
from .graph import (
    GraphPersistence,
    TotalPersistence,
    graph_persistence,
    knn_graph_from_distances,
    total_persistence_of,
)
from .merge_tree import MergeTree, merge_tree
from .neighbours import grid_offsets, knn_edges
from .order import rank_values
from .persistence import (
    bottleneck_distance,
    persistence_diagram,
    total_persistence,
    wasserstein_distance,
)
from .plotting import (
    plot_barcode,
    plot_merge_tree,
    plot_persistence_diagram,
    plot_profile,
    plot_scale_summary,
)
from .profile import LandscapeProfile, landscape_profile
from .scale import ScaleSummary, scale_summary
from .smad import smad, smad_pairs

__all__ = [
    "Basins",
    "LandscapeProfile",
    "MergeTree",
    "ScaleSummary",
    "basin_metric",
    "basins",
    "bottleneck_distance",
    "grid_offsets",
    "knn_edges",
    "landscape_profile",
    "merge_tree",
    "persistence_diagram",
    "plot_barcode",
    "plot_merge_tree",
    "plot_persistence_diagram",
    "plot_profile",
    "plot_scale_summary",
    "rank_values",
    "scale_summary",
    "simplify",
    "smad",
    "smad_pairs",
    "total_persistence",
    "wasserstein_distance",
    "GraphPersistence",
    "TotalPersistence",
    "graph_persistence",
    "knn_graph_from_distances",
    "total_persistence_of",
]
