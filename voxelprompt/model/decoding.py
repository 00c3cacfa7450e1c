"""The agent's decoder at inference: the weights of its LLaMA layers run over preallocated key/value
buffers, a token (or a fed piece of text) at a time.

`transformers` runs the same layers (and trains them), but a call of its model for one token costs
about forty times the arithmetic: a causal mask and rotary table built anew, the cache grown by
concatenation, and a few hundred small operators and module calls for four layers of 256 features.
Here each layer is one fused query-key-value product, a rotation from a table made once, a write into
the buffers, one attention call, and one fused gate-up product. `tests/test_agent.py` checks that the
hidden states equal those of `transformers` on the same sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM


@dataclass(frozen=True)
class _Layer:
    attention_norm: torch.Tensor
    query_key_value: torch.Tensor  # (3 * hidden, hidden): the three projections stacked
    output: torch.Tensor
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor  # (2 * ffn, hidden)
    down: torch.Tensor


class CachedDecoder:
    """Hidden states of a growing sequence; `reset()` starts a new one."""

    def __init__(self, agent: LlamaForCausalLM, max_positions: int):
        config = agent.config
        self.heads, self.key_value_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        if self.key_value_heads != self.heads or config.attention_bias or config.mlp_bias or config.hidden_act != "silu":
            raise ValueError("the cached decoder runs LLaMA layers without biases, with silu and as many "
                             "key-value heads as heads")
        self.epsilon = config.rms_norm_eps
        self.layers = [_Layer(layer.input_layernorm.weight.detach(),
                              torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight,
                                         layer.self_attn.v_proj.weight]).detach(),
                              layer.self_attn.o_proj.weight.detach(), layer.post_attention_layernorm.weight.detach(),
                              torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]).detach(),
                              layer.mlp.down_proj.weight.detach())
                       for layer in agent.model.layers]
        self.norm = agent.model.norm.weight.detach()
        rotary = agent.model.rotary_emb
        positions = torch.arange(max_positions, dtype=torch.float32, device=rotary.inv_freq.device)
        angles = torch.outer(positions, rotary.inv_freq.float())
        angles = torch.cat([angles, angles], dim=-1)
        dtype = self.norm.dtype
        self.cos = (angles.cos() * rotary.attention_scaling).to(dtype)
        self.sin = (angles.sin() * rotary.attention_scaling).to(dtype)
        shape = (len(self.layers), self.heads, max_positions, self.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=self.norm.device)
        self.values = torch.zeros(shape, dtype=dtype, device=self.norm.device)
        self.length = 0

    def reset(self) -> None:
        self.length = 0

    @torch.inference_mode()
    def feed(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The final hidden states (T, hidden) of T more positions, given their input embeddings."""
        count = embeddings.shape[0]
        start, end = self.length, self.length + count
        if end > self.cos.shape[0]:
            raise ValueError(f"the sequence would grow past the decoder's {self.cos.shape[0]} positions")
        cos, sin = self.cos[start:end], self.sin[start:end]
        # Causal attention to everything before and to the new positions up to each one.
        mask = None
        if count > 1:
            mask = torch.ones(count, end, dtype=torch.bool, device=embeddings.device).tril(diagonal=start)
        x = embeddings
        for number, layer in enumerate(self.layers):
            queries, keys, values = F.linear(self._normed(x, layer.attention_norm), layer.query_key_value).view(
                count, 3, self.heads, self.head_dim).permute(1, 2, 0, 3)
            self.keys[number, :, start:end] = self._rotated(keys, cos, sin)
            self.values[number, :, start:end] = values
            attended = F.scaled_dot_product_attention(self._rotated(queries, cos, sin)[None],
                                                      self.keys[number, :, :end][None],
                                                      self.values[number, :, :end][None], attn_mask=mask)
            x = x + F.linear(attended[0].transpose(0, 1).reshape(count, -1), layer.output)
            gate, up = F.linear(self._normed(x, layer.mlp_norm), layer.gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer.down)
        self.length = end
        return self._normed(x, self.norm)

    def _normed(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """LLaMA's RMS norm, computed in float32 as `transformers` computes it."""
        x32 = x.float()
        return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.epsilon)).to(x.dtype)

    @staticmethod
    def _rotated(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotary position embedding of (heads, T, head_dim)."""
        half = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin
