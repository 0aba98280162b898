"""A small encoder for 8x8 digits and a projection head (SimCLR: the loss sees the head's
output; evaluation uses the encoder's)."""

from __future__ import annotations

from torch import Tensor, nn


class MLPEncoder(nn.Module):
    def __init__(self, in_dim: int = 64, hidden_dim: int = 256, embed_dim: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, embed_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ProjectionHead(nn.Module):
    def __init__(self, embed_dim: int = 64, hidden_dim: int = 256, proj_dim: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, proj_dim)
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)
