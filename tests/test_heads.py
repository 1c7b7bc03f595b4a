"""The attention-pooling probe head: equal to torch's multi-head attention with one learned query (the
benchmark's formulation), padded frames ignored, a clear error for a head count that does not divide."""

from __future__ import annotations

import pytest
import torch

from ecg_adapt.models.heads import AttentionPoolingHead, default_num_heads


def _reference(head: AttentionPoolingHead, x: torch.Tensor) -> torch.Tensor:
    """The benchmark's formulation: F.multi_head_attention_forward with the query repeated over the batch."""
    xs = x.permute(1, 0, 2)
    out, _ = torch.nn.functional.multi_head_attention_forward(
        query=head.query.repeat(1, xs.shape[1], 1), key=xs, value=xs, embed_dim_to_check=xs.shape[-1],
        num_heads=head.num_heads, in_proj_weight=None, in_proj_bias=None, bias_k=None, bias_v=None,
        add_zero_attn=False, dropout_p=0.0, out_proj_weight=head.out_proj.weight, out_proj_bias=None,
        training=False, need_weights=False, use_separate_proj_weight=True,
        q_proj_weight=head.q_proj.weight, k_proj_weight=head.k_proj.weight, v_proj_weight=head.v_proj.weight,
    )
    return out[0]


def test_attention_pooling_equals_multi_head_attention_with_a_learned_query():
    torch.manual_seed(0)
    head = AttentionPoolingHead(64, 5, num_heads=8).eval()
    x = torch.randn(3, 17, 64)
    logits, pooled = head(x)
    torch.testing.assert_close(logits, _reference(head, x), atol=1e-5, rtol=1e-5)
    assert pooled.shape == (3, 64)


def test_padded_frames_do_not_change_the_output():
    torch.manual_seed(0)
    head = AttentionPoolingHead(32, 3, num_heads=4).eval()
    x = torch.randn(2, 10, 32)
    padded = torch.cat([x, 100 * torch.randn(2, 6, 32)], dim=1)
    mask = torch.cat([torch.ones(2, 10), torch.zeros(2, 6)], dim=1)
    torch.testing.assert_close(head(padded, mask)[0], head(x)[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(head(padded)[0], head(x)[0], atol=1e-3)  # without the mask the padding counts


def test_a_record_without_kept_frames_gives_finite_scores():
    head = AttentionPoolingHead(16, 2, num_heads=2)
    logits, _ = head(torch.randn(2, 4, 16), torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]))
    assert torch.isfinite(logits).all()


def test_head_count_defaults_and_errors():
    assert default_num_heads(768) == 16 and default_num_heads(12 * 5) == 15 and default_num_heads(7) == 7
    with pytest.raises(ValueError, match="3 heads do not divide the backbone width 64"):
        AttentionPoolingHead(64, 2, num_heads=3)
