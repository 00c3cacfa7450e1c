"""The joint model: the agent alpha (a LLaMA decoder from `transformers`, random weights) and the
vision networks, tied together by the latent features phi and the image encodings epsilon_v.

A checkpoint is a directory: config.json, tokenizer.json, model.safetensors and MODEL_CARD.md.
Weights are safetensors only, so loading never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from voxelprompt.core.io import atomic_output, write_text
from voxelprompt.model import tokens
from voxelprompt.model.config import ModelConfig
from voxelprompt.model.vision import VisionNetworks

CONFIG, TOKENIZER, WEIGHTS, CARD = "config.json", "tokenizer.json", "model.safetensors", "MODEL_CARD.md"
FORMAT_VERSION = 1


def device_for(name: str) -> torch.device:
    """A torch device from its name; "auto" is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names the file and the problem."""


class VoxelPromptModel(nn.Module):
    def __init__(self, config: ModelConfig, tokenizer: Tokenizer):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        agent = config.agent
        self.agent = LlamaForCausalLM(LlamaConfig(
            vocab_size=tokenizer.get_vocab_size(), hidden_size=agent.hidden, intermediate_size=agent.ffn,
            num_hidden_layers=agent.layers, num_attention_heads=agent.heads, num_key_value_heads=agent.heads,
            max_position_embeddings=agent.max_positions, pad_token_id=tokenizer.token_to_id(tokens.PAD),
            bos_token_id=None, eos_token_id=None, tie_word_embeddings=False))
        self.to_phi = nn.Linear(agent.hidden, config.vision.phi_dim)
        self.vision = VisionNetworks(config.vision, agent.hidden)
        self.special = {name: tokenizer.token_to_id(name) for name in tokens.SPECIAL_TOKENS}

    @property
    def device(self) -> torch.device:
        return self.to_phi.weight.device

    def embed(self, ids: torch.Tensor, encodings: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Token embeddings (B, T, d); `encodings` maps a position of an <ENC> slot (in a batch of one)
        to the embedding epsilon_v spliced in there."""
        embeddings = self.agent.get_input_embeddings()(ids)
        if encodings:
            positions = torch.tensor(sorted(encodings), device=ids.device)
            # Under autocast the encoder's encodings come in half precision, the token table in full.
            embeddings = embeddings.index_put((torch.zeros_like(positions), positions),
                                              torch.stack([encodings[p] for p in sorted(encodings)]).to(embeddings.dtype))
        return embeddings

    def hidden(self, embeddings: torch.Tensor, attention_mask: torch.Tensor | None = None, past=None,
               use_cache: bool = False):
        out = self.agent.model(inputs_embeds=embeddings, attention_mask=attention_mask, cache=past, use_cache=use_cache)
        return out.last_hidden_state, out.cache

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.agent.lm_head(hidden)

    def phi(self, hidden: torch.Tensor) -> torch.Tensor:
        """Latent features for the vision networks, from the hidden state at a <MOD> position."""
        return F.silu(self.to_phi(hidden))

    # --- checkpoints ---------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, card: str = "", dtype: torch.dtype | None = None) -> Path:
        """Write the checkpoint directory; each file is written whole or not at all. `dtype` stores the
        floating-point weights in another precision (float16 halves the size; loading casts back)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_text(directory / CONFIG, json.dumps({"format": FORMAT_VERSION, **self.config.to_dict()}, indent=2) + "\n")
        write_text(directory / TOKENIZER, self.tokenizer.to_str())
        state = {name: tensor.detach().cpu().to(dtype if dtype and tensor.is_floating_point() else tensor.dtype).contiguous()
                 for name, tensor in self.state_dict().items()}
        with atomic_output(directory / WEIGHTS) as temporary:
            save_file(state, str(temporary), metadata={"format": str(FORMAT_VERSION)})
        write_text(directory / CARD, card or f"# VoxelPrompt model ({self.config.preset})\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> VoxelPromptModel:
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"{directory}: no such checkpoint directory")
        for name in (CONFIG, TOKENIZER, WEIGHTS):
            if not (directory / name).is_file():
                raise CheckpointError(f"{directory / name}: missing (a checkpoint holds {CONFIG}, {TOKENIZER} and {WEIGHTS})")
        try:
            data = json.loads((directory / CONFIG).read_text())
            config = ModelConfig.from_dict(data)
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{directory / CONFIG}: not a VoxelPrompt model configuration ({error})") from None
        if data.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"{directory / CONFIG}: format {data.get('format')!r}, this version reads {FORMAT_VERSION}")
        try:
            tokenizer = Tokenizer.from_file(str(directory / TOKENIZER))
        except Exception as error:  # noqa: BLE001 - the tokenizers library raises a bare Exception
            raise CheckpointError(f"{directory / TOKENIZER}: not a tokenizer ({error})") from None
        model = cls(config, tokenizer)
        try:
            state = load_file(str(directory / WEIGHTS), device=str(device))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{directory / WEIGHTS}: cannot be read, truncated or damaged ({error})") from None
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(n for n in set(expected) & set(state) if expected[n].shape != state[n].shape)
        if missing or unexpected or wrong:
            raise CheckpointError(f"{directory / WEIGHTS}: does not match {CONFIG}: "
                                  f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape "
                                  f"(e.g. {(missing + unexpected + wrong)[0]})")
        model.load_state_dict({n: t.to(expected[n].dtype) for n, t in state.items()})
        return model.to(device)
