"""LSTM text classifier for IMDB sentiment (the study plan's second model family)."""

from __future__ import annotations

import torch
from torch import nn


class LSTMClassifier(nn.Module):
    """Embedding -> LSTM -> masked mean and max pooling over time -> linear.

    Inputs are token ids ``(B, T)`` right-padded with ``pad_id``; padding never
    changes a prediction: a padded batch gives the same logits as each sequence run
    alone without padding.

    - unidirectional (default): the LSTM runs over the padded batch (fast on CPU)
      and the pooling ignores padded positions; with right padding the outputs at
      real positions do not depend on the padding that follows them.
    - ``bidirectional=True``: the backward direction would read the padding first,
      so the batch is packed (``pack_padded_sequence``); exact, but several times
      slower per step on CPU (``benchmarks/bench_text.py``: 2.3 s against 0.37 s for
      batch 32 x 256 tokens, 1 thread, on a loaded 2-core machine).

    A review with no tokens (all padding) is read as one padding token, whose
    embedding is zero, so it still gets finite logits.

    Args:
        vocab_size: rows of the embedding table (ids must lie in ``[0, vocab_size)``).
        num_classes: output classes (2 for IMDB).
        embedding_dim: width of the token embeddings.
        hidden_size: LSTM state size (per direction).
        num_layers: stacked LSTM layers.
        dropout: dropout on the embeddings and on the pooled features (and between
            LSTM layers when ``num_layers > 1``).
        bidirectional: see above.
        pad_id: id of the padding token.

    Shapes: ``forward(x: int64 (B, T)) -> logits float32 (B, num_classes)``.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int = 2,
        embedding_dim: int = 128,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.3,
        bidirectional: bool = False,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if vocab_size < 2 or embedding_dim < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(
                "vocab_size must be >= 2 and embedding_dim, hidden_size, num_layers >= 1; got "
                f"{vocab_size}, {embedding_dim}, {hidden_size}, {num_layers}"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.pad_id = pad_id
        self.bidirectional = bool(bidirectional)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=self.bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        features = hidden_size * (2 if self.bidirectional else 1)
        self.head = nn.Linear(2 * features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of token ids ``x`` ``(B, T)``."""
        mask = x != self.pad_id  # (B, T)
        mask[:, 0] |= ~mask.any(1)  # an empty review reads (and pools) one padding token
        lengths = mask.sum(1)
        embedded = self.dropout(self.embedding(x))  # (B, T, E)
        if self.bidirectional:
            packed = nn.utils.rnn.pack_padded_sequence(
                embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            out, _ = self.lstm(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(
                out, batch_first=True, total_length=x.shape[1]
            )
        else:
            out, _ = self.lstm(embedded)  # (B, T, H)
        m = mask.unsqueeze(-1)  # (B, T, 1)
        mean = (out * m).sum(1) / m.sum(1)
        maximum = out.masked_fill(~m, torch.finfo(out.dtype).min).amax(1)
        return self.head(self.dropout(torch.cat([mean, maximum], dim=1)))
