"""Bad input raises a ValueError that names the argument and the offending shape or value."""

from __future__ import annotations

import pytest
import torch

import contrastkit as ck


def r(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


CASES = [
    ("query", lambda: ck.info_nce(r(4), r(4, 8))),
    ("key", lambda: ck.info_nce(r(4, 8), r(4, 7))),
    ("dtype", lambda: ck.info_nce(r(4, 8), r(4, 8, dtype=torch.float64))),
    ("key must have at least", lambda: ck.info_nce(r(5, 8), r(4, 8))),
    ("NaN or Inf", lambda: ck.info_nce(torch.full((4, 8), float("nan")), r(4, 8))),
    ("NaN or Inf", lambda: ck.nt_xent(r(4, 8), torch.full((4, 8), float("inf")))),
    ("temperature", lambda: ck.info_nce(r(4, 8), r(4, 8), temperature=0.0)),
    ("temperature", lambda: ck.info_nce(r(4, 8), r(4, 8), temperature=-1.0)),
    ("temperature", lambda: ck.info_nce(r(4, 8), r(4, 8), temperature=torch.ones(3))),
    ("scale", lambda: ck.multiple_negatives_ranking(r(4, 8), r(4, 8), scale=0)),
    ("negatives", lambda: ck.info_nce(r(4, 8), r(4, 8), r(3, 2, 8))),
    ("negatives[0]", lambda: ck.multiple_negatives_ranking(r(4, 8), r(4, 8), r(3, 8))),
    ("z2", lambda: ck.nt_xent(r(4, 8), r(5, 8))),
    ("z1 needs at least 2 rows", lambda: ck.dcl(r(1, 8), r(1, 8))),
    ("z1 needs at least 2 rows", lambda: ck.debiased_info_nce(r(1, 8), r(1, 8))),
    ("z1 needs at least 2 rows", lambda: ck.hard_negative_info_nce(r(1, 8), r(1, 8))),
    ("labels must have shape (4,)", lambda: ck.supcon(r(4, 8), torch.arange(5))),
    ("labels must hold integer", lambda: ck.supcon(r(4, 8), torch.zeros(4))),
    ("features needs at least 2", lambda: ck.supcon(r(1, 8), torch.zeros(1, dtype=torch.long))),
    # a batch with no negatives: an error rather than a loss of 0
    ("query has 1 row: InfoNCE needs at least 2 rows", lambda: ck.info_nce(r(1, 8), r(1, 8))),
    ("query has 1 row", lambda: ck.info_nce(r(1, 8), r(1, 8), symmetric=True)),
    ("anchor has 1 row: MNRL", lambda: ck.multiple_negatives_ranking(r(1, 8), r(1, 8))),
    ("z1 has 1 row: NT-Xent needs at least 2 rows", lambda: ck.nt_xent(r(1, 8), r(1, 8))),
    ("image has 1 row: CLIP needs at least 2 rows", lambda: ck.clip_loss(r(1, 8), r(1, 8))),
    ("image has 1 row", lambda: ck.CLIPLoss()(r(1, 8), r(1, 8))),
    ("features has 1 sample: SupCon", lambda: ck.supcon(r(1, 2, 8))),
    ("features has 1 sample", lambda: ck.supcon(r(1, 3, 8), torch.zeros(1, dtype=torch.long))),
    ("contrast_mode", lambda: ck.supcon(r(4, 8), contrast_mode="two")),
    ("text", lambda: ck.clip_loss(r(4, 8), r(5, 8))),
    (
        "symmetric=True needs one key per query",
        lambda: ck.info_nce(r(4, 8), r(6, 8), symmetric=True),
    ),
    ("bias", lambda: ck.siglip_loss(r(4, 8), r(4, 8), bias=float("nan"))),
    ("tau_plus", lambda: ck.debiased_info_nce(r(4, 8), r(4, 8), tau_plus=1.0)),
    ("beta", lambda: ck.hard_negative_info_nce(r(4, 8), r(4, 8), beta=-1.0)),
    ("sigma", lambda: ck.dclw(r(4, 8), r(4, 8), sigma=0)),
    ("reduction", lambda: ck.info_nce(r(4, 8), r(4, 8), reduction="avg")),
    ("backend", lambda: ck.info_nce(r(4, 8), r(4, 8), backend="gpu")),
    ("chunk_size", lambda: ck.info_nce(r(4, 8), r(4, 8), chunk_size=0)),
    ("target_embeddings", lambda: ck.cwcl(r(4, 8), r(4, 8), r(3, 8))),
    ("query must be a torch.Tensor", lambda: ck.info_nce([[1.0]], r(4, 8))),
    ("floating-point", lambda: ck.info_nce(torch.ones(4, 8, dtype=torch.long), r(4, 8))),
    ("temperature", lambda: ck.InfoNCE(temperature=0)),
    ("reduction", lambda: ck.NTXent(reduction="max")),
    ("init_temperature", lambda: ck.CLIPLoss(init_temperature=-0.1)),
]


@pytest.mark.parametrize("needle,call", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_named_error(needle, call):
    with pytest.raises(ValueError) as err:
        call()
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda: ck.info_nce(r(1, 8), r(2, 8)),  # the second key is a negative
        lambda: ck.info_nce(r(1, 8), r(1, 8), r(3, 8)),  # a queue
        lambda: ck.info_nce(r(1, 8), r(1, 8), r(1, 2, 8)),  # per-anchor negatives
        lambda: ck.info_nce(r(1, 8), r(1, 8), r(3, 8), symmetric=True),
        lambda: ck.info_nce(r(1, 8), r(1, 8), r(3, 8), in_batch_negatives=False),
        lambda: ck.multiple_negatives_ranking(r(1, 8), r(1, 8), r(1, 8)),
    ],
    ids=["extra_key", "queue", "per_anchor", "symmetric_queue", "own_key", "mnrl_hard"],
)
def test_one_query_with_negatives_is_a_loss(call):
    # seeded: with random inputs the one negative can trail the positive by so much that the
    # loss rounds to 0 in fp32, as F.cross_entropy's does
    torch.manual_seed(0)
    loss = call()
    assert torch.isfinite(loss) and float(loss) > 0


def test_shapes_are_in_the_message():
    with pytest.raises(ValueError, match=r"\(4, 7\)"):
        ck.info_nce(r(4, 8), r(4, 7))
