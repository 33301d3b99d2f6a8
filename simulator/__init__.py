"""soak-sim: a stand-in for world_viewer_live that writes the same epoch reports."""
