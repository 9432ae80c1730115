"""T3D evaluation tasks (filled in below)."""
