"""The VoxelPrompt model (paper §3.1): instructable vision networks m_enc and m_gen, and the language
agent alpha that writes code and steers them with latent features phi."""

from pathlib import Path

# The checkpoint shipped with the package (the demo's model). Defined here, away from torch, so that
# the workflow can name it without importing the model.
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "data" / "models" / "voxelprompt-cpu"
