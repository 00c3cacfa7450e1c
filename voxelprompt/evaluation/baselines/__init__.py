"""Baselines that the VoxelPrompt model's outputs are compared with (no learned weights)."""
