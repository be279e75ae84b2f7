"""The hand-written Transformer against torch's own: the same outputs and gradients with copied
weights, with and without padding; the seed's sin/cos positional encoding; a classifier that
learns, ignores its padding and says what is wrong with a too-long sequence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adaptflow.models.attention import (
    MultiHeadAttention,
    TransformerClassifier,
    attention,
    sinusoidal_encoding,
)


def padding(batch: int, length: int, valid: list[int]) -> torch.Tensor:
    """True at padding: row b keeps its first valid[b] positions."""
    return torch.arange(length)[None, :] >= torch.tensor(valid)[:, None]


@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_torch_sdpa_in_value_and_gradient(masked):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 8, generator=g, requires_grad=True) for _ in range(3))
    pad = padding(3, 7, [7, 4, 1]) if masked else None
    out, weights = attention(q, k, v, pad)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    keep = None if pad is None else ~pad[:, None, None, :]  # torch: True = takes part
    ref = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=keep)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    (out * torch.arange(8.0)).sum().backward()
    (ref * torch.arange(8.0)).sum().backward()
    for mine, theirs in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 7))
    if masked:  # no query looks at a padded key
        assert weights[1, :, :, 4:].abs().max() == 0 and weights[2, :, :, 1:].abs().max() == 0


@pytest.mark.parametrize("masked", [False, True])
def test_multi_head_attention_matches_torch_with_copied_weights(masked):
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(16, 4, batch_first=True)
    mine = MultiHeadAttention(16, 4).load_from_torch(theirs)
    x = torch.randn(3, 9, 16, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    pad = padding(3, 9, [9, 5, 2]) if masked else None
    out, w = mine(x, pad)
    ref, ref_w = theirs(x2, x2, x2, key_padding_mask=pad, average_attn_weights=False)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)
    out.square().sum().backward()
    ref.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mine.w_q.weight.grad, theirs.in_proj_weight.grad[:16])
    torch.testing.assert_close(mine.w_o.weight.grad, theirs.out_proj.weight.grad)


def test_heads_must_divide_the_model_width():
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 4)


def test_sinusoidal_encoding_has_the_seed_form():
    pe = sinusoidal_encoding(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert len({tuple(row.tolist()) for row in pe}) == 50  # every position distinct
    assert sinusoidal_encoding(5, 7).shape == (5, 7)  # an odd width too


@pytest.mark.parametrize(
    ("positional", "pooling", "pre_norm"),
    [("sinusoidal", "cls", False), ("learned", "mean", True)],
)
def test_classifier_learns_a_sequence_task(positional, pooling, pre_norm, one_thread):
    """Class = where the single bump of the sequence sits (needs positions): the loss falls and
    training accuracy ends far above chance."""
    g = torch.Generator().manual_seed(0)
    n, length, classes = 128, 16, 4
    y = torch.randint(0, classes, (n,), generator=g)
    x = 0.1 * torch.randn(n, 1, length, generator=g)
    for row, label in enumerate(y.tolist()):
        x[row, 0, label * 4 + 1] += 3.0
    torch.manual_seed(0)
    model = TransformerClassifier(
        1, classes, length, d_model=16, heads=2, layers=2, d_ff=32,
        positional=positional, pooling=pooling, pre_norm=pre_norm,
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]
    assert (model(x).argmax(1) == y).float().mean() > 0.9


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_changes_nothing_the_model_returns(pooling):
    torch.manual_seed(0)
    model = TransformerClassifier(2, 3, 16, d_model=16, heads=2, layers=2, pooling=pooling).eval()
    x = torch.randn(1, 2, 10)
    padded = torch.cat([x, 100 * torch.randn(1, 2, 6)], dim=-1)  # garbage in the padding
    with torch.no_grad():
        alone = model(x)
        with_pad = model(padded, padding(1, 16, [10]))
    torch.testing.assert_close(alone, with_pad, rtol=1e-5, atol=1e-5)


def test_a_sequence_longer_than_max_len_names_the_limit():
    model = TransformerClassifier(1, 2, 8)
    with pytest.raises(ValueError, match="at most 8"):
        model(torch.zeros(1, 1, 9))
    with pytest.raises(ValueError, match="sinusoidal or learned"):
        TransformerClassifier(1, 2, 8, positional="rotary")


def test_dropout_drops_attention_weights_as_torch_does():
    """In training, dropout acts on the attention weights (torch's placement): with the same
    random stream, the output equals nn.MultiheadAttention's, dropout included."""
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(16, 4, dropout=0.3, batch_first=True).train()
    mine = MultiHeadAttention(16, 4, dropout=0.3).load_from_torch(theirs).train()
    x = torch.randn(2, 6, 16)
    torch.manual_seed(1)
    out, w = mine(x)
    torch.manual_seed(1)
    ref, _ = theirs(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 6))  # the weights, before dropout
    assert not torch.allclose(out, mine.eval()(x)[0])  # dropout did act


def test_a_fully_padded_sequence_is_refused_with_mean_pooling():
    model = TransformerClassifier(1, 2, 8, pooling="mean")
    with pytest.raises(ValueError, match="padding at every step"):
        model(torch.zeros(2, 1, 8), padding(2, 8, [8, 0]))
    cls = TransformerClassifier(1, 2, 8, pooling="cls")  # the token is never padding
    assert torch.isfinite(cls(torch.zeros(2, 1, 8), padding(2, 8, [8, 0]))).all()
