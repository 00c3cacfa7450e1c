"""Model sizes. `paper` is the configuration of §3.3; `cpu` trains usefully on two cores; `test` is
the smallest model that exercises every part, for the test suite."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class VisionConfig:
    levels: int = 4
    first_channels: int = 16  # channels at the top (full-resolution) level
    channels: int = 32  # channels at every other level
    phi_dim: int = 32  # latent features per vision call, from the agent
    attention_dim: int = 32  # b of the stream-interaction attention (Eq. 1)
    # Whether the encoder is steered by the agent's phi (paper) or only by each scan's modality; without
    # it a subject's encoding does not depend on the prompt and is computed once for all its prompts.
    encoder_latent: bool = False
    # The voxel size the networks were trained at: finer scans are encoded on a grid this coarse (axes
    # already coarser keep their spacing) and segmentations come back on the scans' own grid. 0: the
    # scans' own grid, whatever it is.
    working_spacing_mm: float = 0.0
    # How phi turns features into a mask. "modulated" (the paper): phi mixes into every level of m_gen,
    # so each target costs a whole generator pass. "dynamic": m_gen is steered by each scan's modality
    # only, and phi generates the weights of a per-voxel readout of m_gen's features (as DoDNet and SAT
    # do with a task or text code), so one pass serves every target and a training step supervises many.
    head: str = "modulated"
    head_channels: int = 32  # per-voxel embedding that the dynamic head reads out
    # Whether the encodings epsilon_v the agent reads come from an encoder of their own (`Reader`), so
    # that m_enc can keep learning to segment without changing what the program writer reads.
    reader: bool = False
    # Whether the dynamic head starts from the target's spatial prior: the training anatomy carried onto
    # the scans by an affine atlas registration (`synth/atlas.py`), weighed against the networks' own
    # readout by phi. The networks then learn where the registration is wrong, not where the brain is.
    atlas_prior: bool = False


@dataclass(frozen=True)
class AgentConfig:
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    ffn: int = 1024
    max_positions: int = 2048


@dataclass(frozen=True)
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    preset: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(VisionConfig(**data["vision"]), AgentConfig(**data["agent"]), data.get("preset", "custom"))


PRESETS = {
    "paper": ModelConfig(VisionConfig(levels=6, first_channels=32, channels=96, encoder_latent=True),
                         AgentConfig(layers=16, hidden=512, heads=32, ffn=2048, max_positions=4096), "paper"),
    "cpu": ModelConfig(VisionConfig(first_channels=8, working_spacing_mm=2.0, head="dynamic", reader=True,
                                    atlas_prior=True), AgentConfig(), "cpu"),
    # The cpu preset without the atlas prior: the vision ablation's all-targets head alone.
    "cpu-no-prior": ModelConfig(VisionConfig(first_channels=8, working_spacing_mm=2.0, head="dynamic", reader=True),
                                AgentConfig(), "cpu-no-prior"),
    # The cpu preset with the paper's head (phi in every level of m_gen): the vision ablation's baseline.
    "cpu-modulated": ModelConfig(VisionConfig(first_channels=8, working_spacing_mm=2.0, reader=True), AgentConfig(),
                                 "cpu-modulated"),
    "test": ModelConfig(VisionConfig(levels=3, first_channels=8, channels=8, phi_dim=8, attention_dim=8),
                        AgentConfig(layers=1, hidden=32, heads=2, ffn=64, max_positions=2048), "test"),
}
