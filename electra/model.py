"""The ELECTRA encoder, its heads, and the generator + discriminator pair.

The layout is exactly that of transformers' Electra* classes (post-LayerNorm blocks, exact
GELU, learned absolute positions and token types, biases everywhere) so that export and
import are a pure renaming of tensors; `electra.hf` holds that renaming. This file knows
nothing of losses, optimisers or parallelism.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from electra.config import EncoderConfig, ModelConfig


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.embedding_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_positions, cfg.embedding_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.embedding_size)
        self.norm = nn.LayerNorm(cfg.embedding_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > self.position.num_embeddings:
            raise ValueError(
                f"sequence length {T} exceeds the model's {self.position.num_embeddings} positions; "
                "truncate the input or use a model with more positions"
            )
        positions = torch.arange(T, device=input_ids.device)
        x = self.word(input_ids) + self.position(positions)
        if token_type_ids is not None:
            x = x + self.token_type(token_type_ids)
        else:  # type 0 everywhere, as transformers does when token_type_ids is omitted
            x = x + self.token_type.weight[0]
        return self.dropout(self.norm(x))  # (B, T, E)


class Block(nn.Module):
    """Post-LayerNorm Transformer block: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        H = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.attention_dropout = cfg.attention_dropout
        self.qkv = nn.Linear(H, 3 * H)  # query, key, value stacked: one matmul instead of three
        self.attn_out = nn.Linear(H, H)
        self.attn_norm = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(H, cfg.ffn_size)
        self.ffn_out = nn.Linear(cfg.ffn_size, H)
        self.ffn_norm = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, H // self.num_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(  # (B, heads, T, head_dim)
            q, k, v, attn_mask=attn_mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        a = a.transpose(1, 2).reshape(B, T, H)
        x = self.attn_norm(x + self.dropout(self.attn_out(a)))
        return self.ffn_norm(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))


class Transformer(nn.Module):
    """Projection from embedding width (when it differs) and the stack of blocks."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.project = nn.Linear(cfg.embedding_size, cfg.hidden_size) if cfg.embedding_size != cfg.hidden_size else None
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.project is not None:
            x = self.project(x)  # (B, T, E) -> (B, T, H)
        attn_mask = None
        if attention_mask is not None:
            attn_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): keys a query may see
        for layer in self.layers:
            x = layer(x, attn_mask)
        return x  # (B, T, H)


class Encoder(nn.Module):
    """Embeddings + Transformer: transformers' `ElectraModel`."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.transformer = Transformer(cfg)
        init_weights(self, cfg.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        return self.transformer(self.embeddings(input_ids, token_type_ids), attention_mask)


class GeneratorHead(nn.Module):
    """dense -> GELU -> LayerNorm -> output layer tied to the word embeddings, own bias."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.embedding_size)
        self.norm = nn.LayerNorm(cfg.embedding_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        h = self.norm(F.gelu(self.dense(h)))  # (..., E)
        return F.linear(h, word_embeddings, self.bias)  # (..., V)


class DiscriminatorHead(nn.Module):
    """dense -> GELU -> one logit per token."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.dense(h))).squeeze(-1)  # (B, T)


class Electra(nn.Module):
    """Generator and discriminator with shared embeddings (word, position, type, LayerNorm)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg.discriminator)
        self.generator = Transformer(cfg.generator)
        self.generator_head = GeneratorHead(cfg.generator)
        self.discriminator = Transformer(cfg.discriminator)
        self.discriminator_head = DiscriminatorHead(cfg.discriminator)
        init_weights(self, cfg.discriminator.initializer_range)

    def generator_logits(
        self, input_ids, token_type_ids=None, attention_mask=None, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """MLM logits (B, k, V) at `positions` (B, k) only, or (B, T, V) at every position."""
        h = self.generator(self.embeddings(input_ids, token_type_ids), attention_mask)  # (B, T, Hg)
        if positions is not None:
            h = torch.gather(h, 1, positions[:, :, None].expand(-1, -1, h.shape[-1]))  # (B, k, Hg)
        return self.generator_head(h, self.embeddings.word.weight)

    def discriminator_logits(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        """One replaced-token logit per position, (B, T)."""
        h = self.discriminator(self.embeddings(input_ids, token_type_ids), attention_mask)
        return self.discriminator_head(h)

    def discriminator_encoder(self) -> Encoder:
        """A standalone copy of the discriminator's encoder, for fine-tuning."""
        enc = Encoder(self.cfg.discriminator)
        enc.embeddings.load_state_dict(self.embeddings.state_dict())
        enc.transformer.load_state_dict(self.discriminator.state_dict())
        return enc.train(self.training)


class SequenceClassifier(nn.Module):
    """Encoder + [CLS] head (dropout, dense, GELU, dropout, out_proj); num_labels=1 is regression."""

    def __init__(self, cfg: EncoderConfig, num_labels: int, encoder: Encoder | None = None):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        self.cfg = cfg
        self.num_labels = num_labels
        self.encoder = encoder if encoder is not None else Encoder(cfg)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, num_labels)
        self.dropout = nn.Dropout(cfg.dropout)
        init_weights(self.dense, cfg.initializer_range)
        init_weights(self.out, cfg.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        x = self.encoder(input_ids, token_type_ids, attention_mask)[:, 0]  # (B, H) at [CLS]
        x = self.dropout(F.gelu(self.dense(self.dropout(x))))
        return self.out(x)  # (B, num_labels)


class TokenClassifier(nn.Module):
    """Encoder + dropout + linear, one set of label logits per token."""

    def __init__(self, cfg: EncoderConfig, num_labels: int, encoder: Encoder | None = None):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        self.cfg = cfg
        self.num_labels = num_labels
        self.encoder = encoder if encoder is not None else Encoder(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_size, num_labels)
        init_weights(self.out, cfg.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        return self.out(self.dropout(self.encoder(input_ids, token_type_ids, attention_mask)))  # (B, T, L)


@torch.no_grad()
def init_weights(module: nn.Module, std: float) -> None:
    """The paper's initialisation: weights ~ N(0, std), zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Embedding):
            m.weight.normal_(0.0, std)
            if m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()
        elif isinstance(m, GeneratorHead):
            m.bias.zero_()
