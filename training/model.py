"""The paper's CNN-Transformer (section 3.2), in two token layouts.

Input: log-mel features ``(B, n_mels, frames)`` from :func:`app.features.log_mel` (normalised);
output: logits ``(B, n_labels)``. ``forward`` returns logits only: the loss lives in the training
loop, so the exported ONNX graph is inference-only. Shapes below are for the defaults
(``n_mels=128``, ``n_frames=348`` = 3.5 s at a 10 ms hop).

CNN (both layouts): 4 blocks of conv 3x3 / stride 1 / pad 1 -> BatchNorm -> ReLU -> max-pool,
pools 2, 2, 2, 4, channels 16, 32, 48, 64::

    (B, 1, 128, 348) -> (B, 16, 64, 174) -> (B, 32, 32, 87) -> (B, 48, 16, 43) -> (B, 64, 4, 10)

Transformer (both layouts): 4 post-norm encoder layers, d_model 64, 4 heads, feed-forward 512,
GELU, dropout 0.1, a learned positional embedding added to the tokens, mean over the tokens.

``sequential`` (default; CNN then Transformer): every cell of the CNN's final map is one token
whose 64 channels are its embedding, so d_model equals the CNN's output channels as the paper
says, and attention weighs time-frequency regions::

    CNN (B, 64, 4, 10) -> tokens (B, 40, 64)   [token k = (freq k // 10, time k % 10)]
      -> + pos (40, 64) -> Transformer -> mean over 40 tokens (B, 64) -> Linear -> (B, 8)

The paper's [2, 4] max-pool in front of the Transformer is *not* applied in this layout: after
the CNN's 32x reduction it would leave a 2 x 2 map, i.e. 4 tokens.

``parallel`` (the paper's [2, 4] pool read literally): the Transformer reads the spectrogram
itself beside the CNN; the [2, 4] / stride [2, 4] max-pool turns 128 mels into 64 = d_model, so
each pooled time step (40 ms) is one token::

    features (B, 128, 348) -> max-pool [2, 4] (B, 64, 87) -> tokens (B, 87, 64)
      -> + pos (87, 64) -> Transformer -> mean over 87 tokens (B, 64)
    CNN (B, 64, 4, 10) -> flatten (B, 2560)
    concat (B, 2624) -> Dropout -> Linear -> (B, 8)

``input_norm="instance"`` (an option the recipe ablation tries; the default is ``"global"``) first
normalises each window on its own: every mel band to zero mean and unit variance over the
window's frames (per-utterance cepstral-style mean/variance normalisation). It removes a
recording's fixed spectral colouring (microphone, room EQ, level), which global statistics keep;
it is part of the graph, so the exported model and the server need nothing else.

Both layouts split ``forward`` into ``embed`` (the vector the head reads) and ``head``; training's
speaker / corpus adversary (training/adversary.py) reads the same embedding.

The frame count is fixed by the config (the positional embedding and the flattened CNN size
depend on it); only the batch axis is dynamic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from app.labels import N_LABELS

Architecture = Literal["sequential", "parallel"]
ARCHITECTURES: tuple[str, ...] = ("sequential", "parallel")
InputNorm = Literal["global", "instance"]
INPUT_NORMS: tuple[str, ...] = ("global", "instance")
INSTANCE_NORM_EPS = 1e-5  # variance floor: a window of constant bands (digital silence)
CNN_POOLS: tuple[int, ...] = (2, 2, 2, 4)
TRANSFORMER_POOL: tuple[int, int] = (2, 4)  # (mels, frames), parallel layout only


class ModelConfigError(ValueError):
    """A ModelConfig whose sizes do not fit together."""


@dataclass(frozen=True)
class ModelConfig:
    architecture: Architecture = "sequential"
    n_mels: int = 128
    n_frames: int = 348
    n_labels: int = N_LABELS
    channels: tuple[int, ...] = (16, 32, 48, 64)
    d_model: int = 64
    n_heads: int = 4
    ff_dim: int = 512
    n_layers: int = 4
    dropout: float = 0.1
    input_norm: InputNorm = "global"

    def __post_init__(self) -> None:
        if self.input_norm not in INPUT_NORMS:
            raise ModelConfigError(f"input_norm {self.input_norm!r} is not one of {INPUT_NORMS}")
        if self.architecture not in ARCHITECTURES:
            raise ModelConfigError(
                f"architecture {self.architecture!r} is not one of {ARCHITECTURES}"
            )
        if len(self.channels) != len(CNN_POOLS):
            raise ModelConfigError(f"channels needs {len(CNN_POOLS)} values, one per CNN block")
        if self.d_model % self.n_heads:
            raise ModelConfigError("d_model must be divisible by n_heads")
        if min(self.cnn_map) < 1:
            raise ModelConfigError(
                f"input (n_mels={self.n_mels}, n_frames={self.n_frames}) is too small for "
                f"the CNN's pools {CNN_POOLS}"
            )
        if self.architecture == "sequential" and self.channels[-1] != self.d_model:
            raise ModelConfigError("sequential: the last CNN channel count must equal d_model")
        if self.architecture == "parallel" and self.n_mels // TRANSFORMER_POOL[0] != self.d_model:
            raise ModelConfigError(
                f"parallel: n_mels // {TRANSFORMER_POOL[0]} must equal d_model "
                f"({self.n_mels} // {TRANSFORMER_POOL[0]} != {self.d_model})"
            )

    @property
    def cnn_map(self) -> tuple[int, int]:
        """(mels, frames) of the CNN's final feature map."""
        mels, frames = self.n_mels, self.n_frames
        for pool in CNN_POOLS:
            mels, frames = mels // pool, frames // pool
        return mels, frames

    @property
    def n_tokens(self) -> int:
        """Sequence length the Transformer sees."""
        if self.architecture == "sequential":
            mels, frames = self.cnn_map
            return mels * frames
        return self.n_frames // TRANSFORMER_POOL[1]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["channels"] = list(self.channels)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelConfigError(f"unknown ModelConfig keys: {sorted(unknown)}")
        values = dict(data)
        if "channels" in values:
            values["channels"] = tuple(int(c) for c in values["channels"])
        return cls(**values)


class ConvBlock(nn.Sequential):
    """conv 3x3 / stride 1 / pad 1 -> BatchNorm -> ReLU -> max-pool ``pool``."""

    def __init__(self, in_channels: int, out_channels: int, pool: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=pool, stride=pool),
        )


def _cnn(config: ModelConfig) -> nn.Sequential:
    blocks, in_channels = [], 1
    for out_channels, pool in zip(config.channels, CNN_POOLS, strict=True):
        blocks.append(ConvBlock(in_channels, out_channels, pool))
        in_channels = out_channels
    return nn.Sequential(*blocks)


class TokenEncoder(nn.Module):
    """Learned positional embedding + Transformer encoder + mean over tokens.

    (B, n_tokens, d_model) -> (B, d_model).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1, config.n_tokens, config.d_model))
        nn.init.trunc_normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=config.d_model,
            nhead=config.n_heads,
            dim_feedforward=config.ff_dim,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
        )
        # No nested tensors: there is no padding mask, and it keeps the ONNX export plain.
        self.encoder = nn.TransformerEncoder(
            layer, num_layers=config.n_layers, enable_nested_tensor=False
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(tokens + self.position).mean(dim=1)


def instance_normalise(features: torch.Tensor) -> torch.Tensor:
    """(B, n_mels, frames): each band of each window to zero mean, unit variance over time."""
    features = features.float()
    mean = features.mean(dim=-1, keepdim=True)
    var = (features - mean).square().mean(dim=-1, keepdim=True)
    return (features - mean) * torch.rsqrt(var + INSTANCE_NORM_EPS)


def _input(features: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """The model's view of its input: (B, 1, n_mels, frames), per ``config.input_norm``."""
    if config.input_norm == "instance":
        features = instance_normalise(features)
    return features.unsqueeze(1)


class SequentialCnnTransformer(nn.Module):
    """CNN, then the Transformer over the CNN map's cells (see the module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.cnn = _cnn(config)
        self.transformer = TokenEncoder(config)
        self.embedding_dim = config.d_model
        self.head = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(self.embedding_dim, config.n_labels)
        )

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) -> the pooled embedding the head reads (B, embedding_dim)."""
        cells = self.cnn(_input(features, self.config))  # (B, C, F', T')
        tokens = cells.flatten(2).transpose(1, 2)  # (B, F' * T', C)
        return self.transformer(tokens)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) -> logits (B, n_labels)."""
        return self.head(self.embed(features))


class ParallelCnnTransformer(nn.Module):
    """CNN and Transformer side by side on the spectrogram (see the module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.cnn = _cnn(config)
        self.pool = nn.MaxPool2d(kernel_size=TRANSFORMER_POOL, stride=TRANSFORMER_POOL)
        self.transformer = TokenEncoder(config)
        mels, frames = config.cnn_map
        self.embedding_dim = config.channels[-1] * mels * frames + config.d_model
        self.head = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(self.embedding_dim, config.n_labels)
        )

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) -> the joint embedding the head reads (B, embedding_dim)."""
        image = _input(features, self.config)
        cnn_embedding = self.cnn(image).flatten(1)  # (B, C * F' * T')
        pooled = self.pool(image).squeeze(1)  # (B, n_mels / 2, frames / 4)
        tokens = pooled.transpose(1, 2)  # (B, frames / 4, d_model): one token per time step
        return torch.cat([cnn_embedding, self.transformer(tokens)], dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) -> logits (B, n_labels)."""
        return self.head(self.embed(features))


CnnTransformer = SequentialCnnTransformer | ParallelCnnTransformer


def build_model(config: ModelConfig | None = None) -> CnnTransformer:
    """A freshly initialised model for ``config`` (defaults: the paper's sequential layout)."""
    config = config or ModelConfig()
    if config.architecture == "parallel":
        return ParallelCnnTransformer(config)
    return SequentialCnnTransformer(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
