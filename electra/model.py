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
from torch.utils.checkpoint import checkpoint

from electra.config import EncoderConfig, ModelConfig


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout`, with a cheaper mask on CPU.

    CPU Bernoulli draws cost about 5 ns per element and made up a quarter of a training step;
    here one 64-bit draw gives four 16-bit uniforms (2.5x faster), so p is exact to 1/65536.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or torch.compiler.is_compiling():  # compiled code draws its own fused masks
        return F.dropout(x, p, True)
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    drop = bits.view(torch.int16)[:n].view(x.shape) < round(p * 65536) - 32768
    return x.masked_fill(drop, 0.0).mul_(1.0 / (1.0 - p))  # no bool-to-float copy of the mask


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.embedding_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_positions, cfg.embedding_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.embedding_size)
        self.norm = nn.LayerNorm(cfg.embedding_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        word_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > self.position.num_embeddings:
            raise ValueError(
                f"sequence length {T} exceeds the model's {self.position.num_embeddings} positions; "
                "truncate the input or use a model with more positions"
            )
        positions = torch.arange(T, device=input_ids.device)
        words = self.word(input_ids) if word_weight is None else F.embedding(input_ids, word_weight)
        x = words + self.position(positions)
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
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, H // self.num_heads).permute(2, 0, 3, 1, 4)
        p = self.attention_dropout if self.training else 0.0
        if p > 0 and x.device.type == "cpu":  # SDPA's CPU dropout falls back to slow Bernoulli draws
            scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, heads, T, T)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            a = dropout(scores.softmax(-1), p, True) @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # (B, heads, T, head_dim)
        a = a.transpose(1, 2).reshape(B, T, H)
        x = self.attn_norm(x + self.dropout(self.attn_out(a)))
        return self.ffn_norm(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))


class Transformer(nn.Module):
    """Projection from embedding width (when it differs) and the stack of blocks.

    With `checkpointing` on, training keeps only each block's input and recomputes the block in
    the backward pass (the same dropout masks: the random state is replayed): activation memory
    falls from every block's intermediates to one block's, for about a third more compute.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.project = nn.Linear(cfg.embedding_size, cfg.hidden_size) if cfg.embedding_size != cfg.hidden_size else None
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.checkpointing = False

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.project is not None:
            x = self.project(x)  # (B, T, E) -> (B, T, H)
        attn_mask = None
        if attention_mask is not None:
            attn_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): keys a query may see
        recompute = self.checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                x = checkpoint(layer, x, attn_mask, use_reentrant=False)
            else:
                x = layer(x, attn_mask)
        return x  # (B, T, H)


def checkpoint_activations(model: nn.Module, on: bool = True) -> nn.Module:
    """Turn activation checkpointing on (or off) in every Transformer stack of `model`."""
    for m in model.modules():
        if isinstance(m, Transformer):
            m.checkpointing = on
    return model


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


def _at(h: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """Hidden states h (B, T, H) at `positions` (B, k): (B, k, H); all of them without positions."""
    return h if positions is None else torch.gather(h, 1, positions[:, :, None].expand(-1, -1, h.shape[-1]))


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
        # Replace MLM and All-Tokens MLM: the main network also predicts tokens, tied to its embeddings
        self.discriminator_lm_head = GeneratorHead(cfg.discriminator) if cfg.discriminator_lm_head else None
        init_weights(self, cfg.discriminator.initializer_range)
        if (std := cfg.generator.initializer_range) != cfg.discriminator.initializer_range:  # a config's own
            init_weights(self.generator, std)
            init_weights(self.generator_head, std)
        if cfg.disentangled_embeddings:  # zero at the start: both networks begin from one embedding
            self.embedding_delta = nn.Parameter(torch.zeros_like(self.embeddings.word.weight))
        else:
            self.embedding_delta = None

    def discriminator_word_embeddings(self) -> torch.Tensor:
        """The word embeddings the discriminator sees (and exports): shared, or sg(shared) + delta."""
        if self.embedding_delta is None:
            return self.embeddings.word.weight
        return self.embeddings.word.weight.detach() + self.embedding_delta

    def generator_logits(
        self, input_ids, token_type_ids=None, attention_mask=None, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """MLM logits (B, k, V) at `positions` (B, k) only, or (B, T, V) at every position."""
        h = self.generator(self.embeddings(input_ids, token_type_ids), attention_mask)  # (B, T, Hg)
        return self.generator_head(_at(h, positions), self.embeddings.word.weight)

    def discriminator_hidden(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        """The discriminator's last hidden states, (B, T, H)."""
        word = None if self.embedding_delta is None else self.discriminator_word_embeddings()
        return self.discriminator(self.embeddings(input_ids, token_type_ids, word), attention_mask)

    def discriminator_logits(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        """One replaced-token logit per position, (B, T)."""
        return self.discriminator_head(self.discriminator_hidden(input_ids, token_type_ids, attention_mask))

    def discriminator_lm_logits(self, h: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """The main network's token logits from its hidden states h (B, T, H): (B, k, V) at
        `positions` (B, k), or (B, T, V). Only a model built with `discriminator_lm_head` has them."""
        if self.discriminator_lm_head is None:
            raise ValueError(
                "this model has no masked-LM head on its discriminator (ModelConfig.discriminator_lm_head)"
            )
        return self.discriminator_lm_head(_at(h, positions), self.discriminator_word_embeddings())

    def encoder(self, part: str = "discriminator") -> Encoder:
        """A standalone copy of one network with its embeddings, for fine-tuning."""
        if part not in ("discriminator", "generator"):
            raise ValueError(f"part must be discriminator or generator, got {part!r}")
        cfg = self.cfg.discriminator if part == "discriminator" else self.cfg.generator
        word = self.discriminator_word_embeddings() if part == "discriminator" else self.embeddings.word.weight
        enc = Encoder(cfg)
        enc.embeddings.load_state_dict({**self.embeddings.state_dict(), "word.weight": word.detach()})
        enc.transformer.load_state_dict(getattr(self, part).state_dict())
        return enc.train(self.training)


class SequenceClassifier(nn.Module):
    """Encoder + [CLS] head (dropout, dense, GELU, dropout, out_proj); num_labels=1 is regression.

    `scale` multiplies the outputs: a regression head that learns targets divided by it (as
    Google's STS-B learns scores / 5) still predicts in the targets' units; `fold_scale` moves it
    into out_proj, the plain head transformers has."""

    def __init__(self, cfg: EncoderConfig, num_labels: int, encoder: Encoder | None = None, scale: float = 1.0):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        self.cfg = cfg
        self.num_labels = num_labels
        self.scale = float(scale)
        self.encoder = encoder if encoder is not None else Encoder(cfg)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, num_labels)
        self.dropout = Dropout(cfg.dropout)
        init_weights(self.dense, cfg.initializer_range)
        init_weights(self.out, cfg.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        x = self.encoder(input_ids, token_type_ids, attention_mask)[:, 0]  # (B, H) at [CLS]
        x = self.dropout(F.gelu(self.dense(self.dropout(x))))
        # the folded layer's own arithmetic, so the exported model scores exactly as this one did
        return task_output(x, self.out.weight * self.scale, self.out.bias * self.scale)  # (B, num_labels)

    @torch.no_grad()
    def fold_scale(self) -> None:
        """The same outputs with `scale` 1: out_proj's weight and bias carry it."""
        self.out.weight.mul_(self.scale)
        self.out.bias.mul_(self.scale)
        self.scale = 1.0


class TokenClassifier(nn.Module):
    """Encoder + dropout + linear, one set of label logits per token."""

    def __init__(self, cfg: EncoderConfig, num_labels: int, encoder: Encoder | None = None):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        self.cfg = cfg
        self.num_labels = num_labels
        self.encoder = encoder if encoder is not None else Encoder(cfg)
        self.dropout = Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_size, num_labels)
        init_weights(self.out, cfg.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        h = self.dropout(self.encoder(input_ids, token_type_ids, attention_mask))
        return task_output(h, self.out.weight, self.out.bias)  # (B, T, L)


class QuestionAnswerer(nn.Module):
    """Encoder + linear: a start and an end logit per token, for answers that are spans of the text."""

    def __init__(self, cfg: EncoderConfig, encoder: Encoder | None = None):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder if encoder is not None else Encoder(cfg)
        self.out = nn.Linear(cfg.hidden_size, 2)
        init_weights(self.out, cfg.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        h = self.encoder(input_ids, token_type_ids, attention_mask)
        return task_output(h, self.out.weight, self.out.bias)  # (B, T, 2): start, end


def task_output(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A task head's last layer, in fp32 under any autocast: bf16 keeps 8 significant bits, so a
    regression output between 2 and 4 would move in steps of 1/64 (a little-trained STS-B model's
    scores all fell on one value), and logits or span scores that differ less would tie. The
    layer is a few hundred multiply-adds per output."""
    with torch.autocast(x.device.type, enabled=False):
        return F.linear(x.float(), weight.float(), bias.float())


@torch.no_grad()
def init_weights(module: nn.Module, std: float) -> None:
    """Google's initialisation: weights ~ N(0, std) truncated at 2 std (TF's truncated_normal
    initializer, redrawn beyond), zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Embedding):
            nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)
            if m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()
        elif isinstance(m, GeneratorHead):
            m.bias.zero_()
