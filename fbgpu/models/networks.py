"""The report's GRU networks, all as one module: several input sources, encoders, one head each.

:class:`MultiSourceGRU` maps ``K`` input sequences ``x_k [B, L_k, F_k]`` to ``K`` head outputs
``y_k [B]``; the model's prediction is their equal-weight mean. Which GRU encodes which source is
the ``share`` list: ``share[k]`` is the encoder index of source ``k``. Every head is
``BatchNorm1d(H) -> Linear(H, 1)`` (``-> Sigmoid`` for the HF model), fed with the encoder's last
hidden state. With ``dropout`` p > 0 (``TrainConfig.dropout``, issue 17's regularisation
experiment) a ``Dropout(p)`` sits between the BatchNorm and the Linear layer: in training mode each
of the H normalised hidden units is zeroed with probability p and the others scaled by 1/(1-p); in
eval mode (validation, prediction) it is the identity. After the BatchNorm rather than before, so
that the BatchNorm's running statistics see the same activations in training and evaluation. With
p = 0 (the default) the head holds an ``nn.Identity`` instead: the same parameters, outputs and RNG
draws as a network built without the option.

=================  ===========================  ==========  =========================
kind               sources                      encoders    heads
=================  ===========================  ==========  =========================
``hf``             hf [40, 27]                  GRU(27, 30)  1, with Sigmoid
``lf``             daily, weekly, monthly [.,6]  1 shared GRU(6, 30)  3
``lf-unshared``    daily, weekly, monthly       3 GRU(6, 30)  3
``lf-daily``       daily                        GRU(6, 30)  1
``lf-separate``    three single-source models (daily, weekly, monthly), trained apart
``fullband-mtl``   daily, weekly, monthly, hf   GRU(6, 30) shared by the three LF sources,
                                                GRU(27, 30) for hf   4
=================  ===========================  ==========  =========================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

#: Number of LF bar features: open, high, low, close, vwap, volume.
LF_FEATURES = 6


@dataclass(frozen=True)
class NetSpec:
    """Architecture of one :class:`MultiSourceGRU`: its sources, their widths and GRU sharing."""

    sources: tuple[str, ...]
    input_sizes: tuple[int, ...]
    share: tuple[int, ...]
    sigmoid: bool = False


class Head(nn.Module):
    """``BatchNorm1d(H) [-> Dropout(p)] -> Linear(H, 1) [-> Sigmoid]`` on an encoder's last
    hidden state (the Dropout only when ``dropout`` p > 0)."""

    def __init__(self, hidden: int, sigmoid: bool, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.bn = nn.BatchNorm1d(hidden)
        self.drop: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(hidden, 1)
        self.sigmoid = sigmoid

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.drop(self.bn(h))).squeeze(-1)
        return torch.sigmoid(y) if self.sigmoid else y


class MultiSourceGRU(nn.Module):
    """GRU encoders shared between sources as ``spec.share`` says, one head per source.

    ``dropout``: probability p of the heads' Dropout (module docstring; 0 = none).
    """

    def __init__(self, spec: NetSpec, hidden: int = 30, dropout: float = 0.0) -> None:
        super().__init__()
        if not (len(spec.sources) == len(spec.input_sizes) == len(spec.share)):
            raise ValueError(f"inconsistent NetSpec {spec}")
        n_enc = max(spec.share) + 1
        if sorted(set(spec.share)) != list(range(n_enc)):
            raise ValueError(f"NetSpec.share must number encoders 0..n-1, got {spec.share}")
        enc_inputs: list[int] = []
        for e in range(n_enc):
            sizes = {spec.input_sizes[k] for k in range(len(spec.share)) if spec.share[k] == e}
            if len(sizes) != 1:
                raise ValueError(f"sources sharing encoder {e} have different widths {sizes}")
            enc_inputs.append(sizes.pop())
        self.spec = spec
        self.hidden = hidden
        self.encoders = nn.ModuleList(
            nn.GRU(input_size=f, hidden_size=hidden, num_layers=1, batch_first=True)
            for f in enc_inputs
        )
        self.heads = nn.ModuleList(Head(hidden, spec.sigmoid, dropout) for _ in spec.sources)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Head outputs ``[K, B]`` for inputs ``xs[k]`` of shape ``[B, L_k, F_k]``."""
        outs = []
        for k, x in enumerate(xs):
            _, h_last = self.encoders[self.spec.share[k]](x)  # h_last: [1, B, H]
            outs.append(self.heads[k](h_last[0]))
        return torch.stack(outs)

    def predict(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The model's score ``[B]``: the equal-weight mean of its heads."""
        return self.forward(xs).mean(0)


def net_specs(kind: str, n_factors: int) -> list[NetSpec]:
    """The network(s) trained for one model ``kind`` (several only for ``lf-separate``)."""
    f = LF_FEATURES
    lf3 = ("daily", "weekly", "monthly")
    if kind == "hf":
        return [NetSpec(("hf",), (n_factors,), (0,), sigmoid=True)]
    if kind == "lf":
        return [NetSpec(lf3, (f, f, f), (0, 0, 0))]
    if kind == "lf-unshared":
        return [NetSpec(lf3, (f, f, f), (0, 1, 2))]
    if kind == "lf-daily":
        return [NetSpec(("daily",), (f,), (0,))]
    if kind == "lf-separate":
        return [NetSpec((s,), (f,), (0,)) for s in lf3]
    if kind == "fullband-mtl":
        return [NetSpec((*lf3, "hf"), (f, f, f, n_factors), (0, 0, 0, 1))]
    raise ValueError(
        f"unknown model kind {kind!r}: choose hf, lf, lf-daily, lf-separate, lf-unshared, "
        "fullband-mtl"
    )


def build_nets(
    kind: str, n_factors: int, hidden: int = 30, dropout: float = 0.0
) -> list[MultiSourceGRU]:
    """Fresh (randomly initialised from torch's current RNG state) networks for ``kind``.

    ``dropout`` only acts in training mode; a network built with any ``dropout`` loads the same
    state dict and predicts (eval mode) the same as one built without it.
    """
    return [MultiSourceGRU(s, hidden, dropout) for s in net_specs(kind, n_factors)]
