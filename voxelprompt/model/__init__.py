"""The VoxelPrompt model (paper §3.1): instructable vision networks m_enc and m_gen, and the language
agent alpha that writes code and steers them with latent features phi."""
