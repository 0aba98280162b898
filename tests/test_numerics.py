"""Numerical edge cases (issue 11): cancellation in fp32, half precision at logit scale 100.

* NT-Xent and InfoNCE on near-identical views, where the loss is a small difference of large
  logits: their fp32 error against an fp64 reference must stay within 2x that of
  ``F.cross_entropy`` on the same fp32 logits (the engine reads the positive logit from the
  logits of its log-sum-exp, so the two cancel exactly).
* Every public objective of ``contrastkit.functional`` gives a finite loss and finite gradients
  for fp16 and bf16 inputs at logit scale 100 (temperature 0.01, or the objective's equivalent
  sharpness) and inputs of large norm (about 40). ``CASES`` says how to build valid inputs for
  each objective; a public objective missing from it (and from ``SKIPPED``) fails
  ``test_every_objective_has_a_case``, and every loss class must name its functional twin.
"""

from __future__ import annotations

import inspect
import statistics

import pytest
import torch
import torch.nn.functional as F

import contrastkit.functional as CF
import contrastkit.losses as CL
import contrastkit.objective.scale as CS
import contrastkit.temperature as CT
from contrastkit.objective import REGISTRY

# ------------------------------------------------------------------ fp32 cancellation


def _relative_errors(objective: str, backend_kw: dict, seeds: int = 48, n=16, d=16, scale=10.0):
    """Mean relative error of the objective and of F.cross_entropy on the same fp32 logits,
    both against the fp64 cross-entropy, over near-identical views (loss about 1e-2)."""
    ours, plain = [], []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, d, generator=g)
        y = x + 1e-3 * torch.randn(n, d, generator=g)
        if objective == "nt_xent":
            A = B = F.normalize(torch.cat([x, y]), dim=1)
            target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
            self_pair = torch.eye(2 * n, dtype=torch.bool)
            got = CF.nt_xent(x, y, temperature=1 / scale, **backend_kw)
        else:
            A, B = F.normalize(x, dim=1), F.normalize(y, dim=1)
            target, self_pair = torch.arange(n), torch.zeros(n, n, dtype=torch.bool)
            got = CF.info_nce(x, y, scale=scale, **backend_kw)
        if got.dim():  # reduction="none"
            got = got.mean()

        def logits(a, b, mask=self_pair):
            return ((a * scale) @ b.T).masked_fill(mask, float("-inf"))

        want = F.cross_entropy(logits(A.double(), B.double()), target)
        ce = F.cross_entropy(logits(A, B), target)
        ours.append(float((got.double() - want).abs() / want))
        plain.append(float((ce.double() - want).abs() / want))
    return statistics.mean(ours), statistics.mean(plain)


@pytest.mark.parametrize(
    "objective,backend_kw",
    [
        ("nt_xent", {"backend": "dense"}),
        ("nt_xent", {"backend": "tiled"}),  # single sweep
        ("nt_xent", {"backend": "tiled", "chunk_size": 8, "reduction": "none"}),  # column tiles
        ("info_nce", {"backend": "dense"}),
        ("info_nce", {"backend": "tiled"}),
    ],
    ids=["nt_xent-dense", "nt_xent-fused", "nt_xent-recompute", "info_nce-dense", "info_nce-fused"],
)
def test_cancellation_as_exact_as_cross_entropy(objective, backend_kw):
    ours, plain = _relative_errors(objective, backend_kw)
    # before the engine read the positive from its own logits: 10x-20x plain cross-entropy's
    assert ours <= 2 * plain, f"relative error {ours:.3g} vs F.cross_entropy {plain:.3g}"


# ------------------------------------------------------------------ half precision, scale 100

N, D = 8, 16
BIG = 10.0  # inputs of norm about 40 (fp16 overflows at 65,504)
TAU = 0.01  # logit scale 100


def _r(*shape, seed=0, scale=BIG):
    """Random rows of norm about ``4 scale``; rows 0 and 1 nearly coincide (a hard negative of
    cosine about 1: its logit is about 100 at temperature 0.01)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * scale
    if shape[-2] > 2:
        x[..., 1, :] = x[..., 0, :] * 1.01 + 0.01 * scale * torch.randn(shape[-1], generator=g)
    return x


def _labels(n=N):
    return torch.arange(n) % 3


def _temperature_fn(head, a, b):  # AMCL: per-pair temperatures from a network; here constant
    return torch.full((a.shape[0],), TAU, dtype=a.dtype, device=a.device)


def _state(size=16, value=0.0):
    return torch.full((size,), value)


# name -> (float inputs that get gradients, other arguments, keyword arguments); float inputs are
# cast to the dtype under test. Sharpness: temperature 0.01 / scale 100 where the objective has
# one; otherwise the parameter that multiplies its logits (noted).
CASES = {
    "angle": (
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [torch.tensor([0.0, 1.0, 0.5, 0.5, 0.2, 0.9, 0.1, 0.7])],
        {"scale": 100.0},
    ),
    "cosent": (
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [torch.tensor([0.0, 1.0, 0.5, 0.5, 0.2, 0.9, 0.1, 0.7])],
        {"scale": 100.0},
    ),
    "list_net": (
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [torch.eye(N) * 2 + torch.diag(torch.ones(N - 1), 1)],
        {"temperature": TAU},
    ),
    "matryoshka": (  # wraps InfoNCE at temperature 0.01
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [],
        {"objective": lambda a, b: CF.info_nce(a, b, temperature=TAU), "dims": (16, 8, 4)},
    ),
    "plackett_luce": (
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [torch.eye(N) * 2 + torch.diag(torch.ones(N - 1), 1)],
        {"temperature": TAU},
    ),
    "embedding_distillation": (  # cosine: scale-free; the MSE form is a plain difference
        lambda: [_r(N, D)],
        [_r(N, D, seed=1)],
        {"distance": "cosine"},
    ),
    "in_batch_kl_distillation": (  # cosine scores at temperature 0.01; fp32 teacher rows
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [_r(N, 24, seed=2), _r(N, 24, seed=3)],
        {"temperature": TAU, "normalize": True},
    ),
    "kl_distillation": (  # cosine scores at temperature 0.01; row 1 of each list ~ row 0
        lambda: [_r(N, D), _r(N, 4, D, seed=1)],
        [_r(N, 4, seed=2)],
        {"temperature": TAU, "normalize": True},
    ),
    "margin_mse": (  # dot products of norm-40 rows (scores ~ 1,600): no temperature
        lambda: [_r(N, D), _r(N, 4, D, seed=1)],
        [_r(N, 4, seed=2)],
        {},
    ),
    "adameow_info_nce": (  # weights as a leaf: they are learned
        lambda: [_r(N, D), _r(N, D, seed=1), _r(N, N, seed=2, scale=1.0).abs() + 0.5],
        [],
        {"temperature": TAU},
    ),
    "alignment": (lambda: [_r(N, D), _r(N, D, seed=1)], [], {}),
    "amcl": (lambda: [_r(N, D), _r(N, D, seed=1)], [_temperature_fn], {}),
    "batch_hard_triplet": (lambda: [_r(N, D)], [_labels()], {"soft": True}),
    "cacr": (lambda: [_r(3, N, D)], [], {"attraction_scale": 100.0, "repulsion_scale": 100.0}),
    "clip_align_uniform": (lambda: [_r(N, D), _r(N, D, seed=1)], [], {"temperature": TAU}),
    "clip": (lambda: [_r(N, D), _r(N, D, seed=1)], [], {"temperature": TAU}),
    "conr": (  # rows 2 and 3: no positive and no confused negative (empty denominators)
        lambda: [_r(N, D)],
        [torch.tensor([0.0, 0.5, 10, 20, 30, 30.5, 40, 40.2])] * 2,
        {"temperature": TAU},
    ),
    "cross_uniformity": (lambda: [_r(N, D), _r(N, D, seed=1)], [], {"potential": 25.0}),
    "community_contrast": (
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [_labels(), _labels().flip(0), 3],
        {"temperature": TAU},
    ),
    "cwcl": (lambda: [_r(N, D), _r(N, D, seed=1)], [], {"temperature": TAU}),
    "dcl": (lambda: [_r(N, D), _r(N, D, seed=1)], [], {"temperature": TAU}),
    "dclw": (lambda: [_r(N, D), _r(N, D, seed=1)], [], {"temperature": TAU}),
    "debiased_info_nce": (lambda: [_r(N, D), _r(N, D, seed=1)], [], {"temperature": TAU}),
    "focal_info_nce": (
        lambda: [_r(N, D), _r(N, D, seed=1), _r(N, 2, D, seed=2)],
        [],
        {"temperature": TAU},
    ),
    "groco": (lambda: [_r(3, N, D)], [], {"topk_neg": 3, "steepness": 100.0}),
    "shuffled_group_whitening": (lambda: [_r(N, D)], [4], {}),  # a transform: loss = output.sum()
    "hard_negative_info_nce": (lambda: [_r(N, D), _r(N, D, seed=1)], [], {"temperature": TAU}),
    "icnn": (lambda: [_r(N, D)], [_labels()], {"k": 2}),
    "info_nce": (lambda: [_r(N, D), _r(N, D, seed=1), _r(4, D, seed=2)], [], {"temperature": TAU}),
    "info_nce_with_negatives": (  # query, key, queue, per-anchor negatives
        lambda: [_r(N, D), _r(N, D, seed=1), _r(4, D, seed=2), _r(N, 2, D, seed=3)],
        [],
        {"temperature": TAU},
    ),
    "mined_info_nce": (
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [torch.stack([(torch.arange(N) + 1) % N, (torch.arange(N) + 2) % N], 1)],
        {"temperature": TAU},
    ),
    "mixup_contrastive": (  # x_mixed, y, perm, mix
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [torch.arange(N).roll(1), torch.linspace(0.2, 1.0, N)],
        {"temperature": TAU},
    ),
    "isogclr": (
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [torch.arange(N) * 2, _state(), _state(value=TAU), _state()],
        {"min_temperature": TAU, "max_temperature": TAU},
    ),
    "isogclr_bimodal": (
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [torch.arange(N) * 2, *[_state() for _ in range(4)], _state(value=TAU)]
        + [_state(value=TAU), _state(), _state()],
        {"min_temperature": TAU, "max_temperature": TAU, "normalize": True},
    ),
    "max_margin_contrastive": (
        lambda: [_r(2, 3, 5, scale=100.0)],
        [torch.tensor([[0, 1, 2], [3, 4, 0]]), torch.tensor([[1, 1, 3], [2, 0, 4]])],
        {},
    ),
    "mlcd": (
        lambda: [_r(N, D), _r(5, D, seed=1)],
        [torch.arange(N)[:, None] % 5],
        {"scale": 100.0, "margin": 0.1},
    ),
    "multiple_negatives_ranking": (
        lambda: [_r(N, D), _r(N, D, seed=1), _r(N, D, seed=2)],
        [],
        {"scale": 100.0},
    ),
    "mv_dhel": (lambda: [_r(3, N, D)], [], {"temperature": TAU}),
    "mv_info_nce": (lambda: [_r(3, N, D)], [], {"temperature": TAU}),
    "nt_xent": (lambda: [_r(N, D), _r(N, D, seed=1)], [], {"temperature": TAU}),
    "one_to_k_contrastive": (lambda: [_r(2, D), _r(N, D, seed=1)], [], {"temperature": TAU}),
    "pair_margin_contrastive": (
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [torch.tensor([0.0, 1.0] * (N // 2))],
        {},
    ),
    "pamc": (
        lambda: [_r(N, D), torch.softmax(_r(N, 3, seed=1), 1)],
        [torch.eye(N) + torch.diag(torch.ones(N - 1), 1)],
        {"temperature": TAU},
    ),
    "partial_ranking_distillation": (
        lambda: [_r(N, D), _r(5, D, seed=1)],
        [torch.stack([torch.arange(3) + i for i in range(N)]) % 5, _r(N, 3, seed=2, scale=1.0)],
        {"temperature": TAU},
    ),
    "proto_triplet": (  # called as (queries, labels, prototypes): see ORDER
        lambda: [_r(N, D), _r(3, D, seed=1)],
        [_labels()],
        {},
    ),
    "siglip": (lambda: [_r(N, D), _r(N, D, seed=1)], [], {"scale": 100.0, "bias": -10.0}),
    "simctg_contrastive": (lambda: [_r(2, 4, D)], [], {}),
    "simctg": (
        lambda: [_r(2, 4, D), _r(2, 4, 5, seed=1, scale=100.0)],
        [torch.tensor([[0, 1, 2, 3], [3, 4, 0, 1]])],
        {},
    ),
    "sbcl": (  # one sub-class per class but the first (split in two)
        lambda: [_r(N, 2, D)],
        [_labels(), torch.tensor([0, 1, 2, 3, 1, 2, 0, 1])],
        {"temperature": TAU, "base_temperature": TAU},
    ),
    "sinkhorn_knopp": (lambda: [_r(N, 4, scale=1.0)], [], {"epsilon": TAU}),  # scores / epsilon
    "sogclr": (
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [torch.arange(N) * 2, _state()],
        {"temperature": TAU},
    ),
    "sogclr_bimodal": (
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [torch.arange(N) * 2, *[_state() for _ in range(4)]],
        {"temperature": TAU, "normalize": True},
    ),
    "supcon": (lambda: [_r(N, 2, D)], [_labels()], {"temperature": TAU}),
    "supremix": (
        lambda: [_r(N, 2, D)],
        [torch.linspace(0.0, 3.0, N)],
        {"temperature": TAU},
    ),
    "swav": (lambda: [_r(2 * N, D), _r(4, D, seed=1)], [], {"temperature": TAU, "epsilon": TAU}),
    "symile": (lambda: [_r(3, N, D)], [], {"temperature": TAU}),
    "team_up": (
        lambda: [_r(N, D), _r(N, D, seed=1)],
        [torch.linspace(0.0, 0.3, N), 0.5],  # community strengths, gamma
        {"temperature": TAU},
    ),
    "triplet_margin": (lambda: [_r(N, D), _r(N, D, seed=1), _r(N, D, seed=2)], [], {}),
    "uniformity": (lambda: [_r(N, D)], [], {"potential": 25.0}),  # logits -t d2 down to -100
    "whitened_cse": (
        lambda: [_r(N, D), _r(N, D, seed=1), _r(N, D, seed=2)],
        [],
        {"temperature": TAU},
    ),
}

# --- compositional cases (one CASES.update block) ---
CASES.update(
    {
        "count_clip": (  # counterfactual row 1 ~ row 0's caption
            lambda: [_r(N, D), _r(N, D, seed=1), _r(N, D, seed=1) + _r(N, D, seed=2, scale=0.1)],
            [torch.arange(N) % 2 == 0],
            {"temperature": TAU},
        ),
        "image_grounded_contrast": (  # negatives of caption i ~ caption i
            lambda: [_r(N, D), _r(N, D, seed=1), _r(N, D, seed=1)[:, None] + _r(N, 3, D, seed=2)],
            [],
            {"temperature": TAU},
        ),
        "neg_clip": (
            lambda: [_r(N, D), _r(N, D, seed=1), _r(N, D, seed=1)[:, None] + _r(N, 2, D, seed=2)],
            [],
            {"temperature": TAU},
        ),
        "text_grounded_contrast": (  # the teacher (a leaf here) gets no gradient
            lambda: [_r(N, D), _r(N, D, seed=1), _r(N, D)[:, None] + _r(N, 3, D, seed=2)],
            [],
            {"temperature": TAU},
        ),
    }
)

# --- preference cases (one CASES.update block) ---
# log-probabilities of norm about 200 (sequence sums; token log-probs about 20) with beta 1:
# the logistic terms see margins of several hundred. References stay fp32.
CASES.update(
    {
        "dpo": (
            lambda: [-_r(N, 1, scale=50.0).abs()[:, 0], -_r(N, 1, seed=1, scale=50.0).abs()[:, 0]],
            [-_r(N, 1, seed=2, scale=50.0).abs()[:, 0], -_r(N, 1, seed=3, scale=50.0).abs()[:, 0]],
            {"beta": 1.0, "label_smoothing": 0.1},
        ),
        "ipo": (  # the squared margin reaches about 1e5
            lambda: [-_r(N, 1, scale=50.0).abs()[:, 0], -_r(N, 1, seed=1, scale=50.0).abs()[:, 0]],
            [-_r(N, 1, seed=2, scale=50.0).abs()[:, 0], -_r(N, 1, seed=3, scale=50.0).abs()[:, 0]],
            {"beta": 0.01},
        ),
        "npo": (
            lambda: [-_r(N, 1, scale=50.0).abs()[:, 0]],
            [-_r(N, 1, seed=2, scale=50.0).abs()[:, 0]],
            {"beta": 1.0},
        ),
        "d2o": (
            lambda: [-_r(N, 3, scale=50.0).abs(), -_r(N, 1, seed=1, scale=50.0).abs()[:, 0]],
            [-_r(N, 3, seed=2, scale=50.0).abs(), -_r(N, 1, seed=3, scale=50.0).abs()[:, 0]],
            {"beta": 1.0, "alpha": 1.0},
        ),
        "sparse_po": (  # token log-probs about -20, beta 10, reward and KL masks
            lambda: [-_r(N, 6, scale=5.0).abs(), -_r(N, 5, seed=1, scale=5.0).abs()],
            [-_r(N, 6, seed=2, scale=5.0).abs(), -_r(N, 5, seed=3, scale=5.0).abs()]
            + [torch.ones(N, 6, dtype=torch.bool), torch.ones(N, 5, dtype=torch.bool)]
            + [torch.full((N, 6), 0.5), torch.full((N, 5), 0.5)]
            + [_r(N, 6, seed=4, scale=5.0).abs(), _r(N, 5, seed=5, scale=5.0).abs()],
            {"beta": 10.0},
        ),
        "svco": (
            lambda: [-_r(N, 2, 3, scale=50.0).abs()],
            [-_r(N, 2, 3, seed=1, scale=50.0).abs()],
            {"betas": (1.0, 1.0, 1.0, 1.0)},
        ),
        "simpo": (  # per-token means about -8 at beta 100
            lambda: [-_r(N, 1, scale=2.0).abs()[:, 0], -_r(N, 1, seed=1, scale=2.0).abs()[:, 0]],
            [],
            {"beta": 100.0, "gamma": 1.0},
        ),
        "cpo": (
            lambda: [-_r(N, 1, scale=50.0).abs()[:, 0], -_r(N, 1, seed=1, scale=50.0).abs()[:, 0]],
            [torch.arange(1, N + 1)],
            {"beta": 1.0},
        ),
        "orpo": (  # per-token means from -1e-2 (odds about 100) to about -20
            lambda: [
                -_r(N, 1, scale=2.0).abs()[:, 0] - 0.01,
                -_r(N, 1, seed=1, scale=2.0).abs()[:, 0] - 0.01,
            ],
            [],
            {"beta": 1.0},
        ),
        "slic_hf": (
            lambda: [-_r(N, 1, scale=50.0).abs()[:, 0], -_r(N, 1, seed=1, scale=50.0).abs()[:, 0]],
            [],
            {"margin": 100.0},
        ),
    }
)

# --- sparse cases (one CASES.update block) ---
CASES.update(
    {
        "flops": (lambda: [_r(N, D)], [], {}),  # no logit scale: term weights of norm about 40
        "idf_flops": (
            lambda: [_r(N, D), 0.5 + torch.rand(D, generator=torch.Generator().manual_seed(3))],
            [],
            {"threshold": 2},
        ),
    }
)

# --- dense cases (one CASES.update block) ---
CASES.update(
    {
        "pixpro": (  # cosines only (no temperature); keys are detached
            lambda: (
                [_r(2, D, 3, 3), _r(2, D, 3, 3, seed=1), _r(2, D, 3, 3, seed=2)]
                + [_r(2, D, 3, 3, seed=3)]
            ),
            [torch.tensor([[0.0, 0.0, 0.6, 0.6], [0.1, 0.2, 0.9, 0.8]])]
            + [torch.tensor([[0.2, 0.1, 0.8, 0.7], [0.8, 0.1, 0.2, 0.9]])],
            {},
        ),
        "pixel_contrast": (
            lambda: [_r(2, D, 3, 3), _r(2, D, 3, 3, seed=1)],
            [torch.tensor([[0.0, 0.0, 0.6, 0.6], [0.1, 0.2, 0.9, 0.8]])]
            + [torch.tensor([[0.2, 0.1, 0.8, 0.7], [0.8, 0.1, 0.2, 0.9]])],
            {"temperature": TAU},
        ),
        "comet": (  # raw dot products of norm-40 rows at two levels (no temperature there)
            lambda: [_r(N, 4, D), _r(N, 4, D, seed=1)],
            [_labels(), torch.arange(N) // 2],
            {"temperature": TAU},
        ),
        "temporal_contrast": (  # frames 0 and 1 of each video nearly coincide
            lambda: [_r(2, 4, D), _r(2, 4, D, seed=1)],
            [],
            {"temperature": TAU, "positive_window": 1, "negative_gap": 3},
        ),
    }
)

# --- infonce-nce-dexml cases (one CASES.update block) ---
CASES.update(
    {
        "dexml": (  # two positives per row, one padded row, among 10 label columns
            lambda: [_r(N, D), _r(10, D, seed=1)],
            [torch.tensor([[0, 3], [1, -1], [2, 9], [0, 1], [4, -1], [5, 6], [6, -1], [7, 8]])],
            {"temperature": TAU},
        ),
        "compositional_nll": (  # log-densities of size 100 (weights exp(f - log q) to e^150)
            lambda: [torch.linspace(-100.0, 100.0, N), torch.linspace(100.0, -100.0, 3 * N)],
            [torch.linspace(0.0, -50.0, 3 * N), torch.tensor(float("-inf"))],
            {"gamma": 0.5},
        ),
        "nce": (  # log-densities of size 100: G = f - log(nu q) up to about +-200
            lambda: [torch.linspace(-100.0, 100.0, N), torch.linspace(100.0, -100.0, 3 * N)],
            [torch.linspace(-50.0, 0.0, N), torch.linspace(0.0, -50.0, 3 * N)],
            {},
        ),
    }
)

# --- distillation-iii cases (one CASES.update block) ---
CASES.update(
    {
        "momentum_distillation": (  # student, momentum features (rows 0/1 near-equal), queues
            lambda: (
                [_r(N, D), _r(N, D, seed=1), _r(N, D, seed=2), _r(N, D, seed=3)]
                + [_r(5, D, seed=4), _r(5, D, seed=5)]
            ),
            [],
            {"temperature": TAU, "alpha": 0.4},
        ),
    }
)

#: positional order when the inputs with gradients do not come first
ORDER = {"proto_triplet": lambda leaves, other: [leaves[0], other[0], leaves[1]]}

#: public objectives not run here, with the reason
SKIPPED: dict = {}

#: every loss class and the functional it forwards to (or None with a reason in SKIPPED)
CLASS_TWINS = {
    "AMCL": "amcl",
    "AdaMEOWInfoNCE": "adameow_info_nce",
    "AlignmentLoss": "alignment",
    "CACR": "cacr",
    "CLIPAlignUniform": "clip_align_uniform",
    "CLIP": "clip",
    "CWCL": "cwcl",
    "CommunityContrast": "community_contrast",
    "ConR": "conr",
    "DCL": "dcl",
    "DCLW": "dclw",
    "DebiasedInfoNCE": "debiased_info_nce",
    "FocalInfoNCE": "focal_info_nce",
    "GroCo": "groco",
    "HardNegativeInfoNCE": "hard_negative_info_nce",
    "ICNN": "icnn",
    "InfoNCE": "info_nce",
    "LogitScale": "clip",  # the learnable scale of CLIP, CWCL and SigLIP, no loss itself
    "MLCD": "mlcd",
    "MVDHEL": "mv_dhel",
    "MVInfoNCE": "mv_info_nce",
    "MaxMarginContrastive": "max_margin_contrastive",
    "MultipleNegativesRanking": "multiple_negatives_ranking",
    "NTXent": "nt_xent",
    "OneToKContrastive": "one_to_k_contrastive",
    "PairMarginContrastive": "pair_margin_contrastive",
    "PamC": "pamc",
    "PartialRankingDistillation": "partial_ranking_distillation",
    "ProtoTriplet": "proto_triplet",
    "ShuffledGroupWhitening": "shuffled_group_whitening",
    "SBCL": "sbcl",
    "SigLIP": "siglip",
    "SimCTG": "simctg",
    "SogCLR": "sogclr",
    "SogCLRBimodal": "sogclr_bimodal",
    "SupCon": "supcon",
    "SupReMix": "supremix",
    "SwAV": "swav",
    "TeamUp": "team_up",
    "Symile": "symile",
    "TripletMargin": "triplet_margin",
    "UniformityLoss": "uniformity",
    "WhitenedCSE": "whitened_cse",
    "iSogCLR": "isogclr",
    "iSogCLRBimodal": "isogclr_bimodal",
}


def _objectives() -> list[str]:
    """Public functions of contrastkit.functional and contrastkit.losses, less the temperature
    conversions (plain numbers, no objective)."""
    names = set()
    for mod in (CF, CL):
        for n in mod.__all__:
            obj = getattr(mod, n)
            if inspect.isfunction(obj) and obj.__module__ not in (CT.__name__, CS.__name__):
                names.add(_canonical(n, obj))
    return sorted(names)


def _canonical(name: str, obj) -> str:
    """Registered objectives under their own name (aliases map to it)."""
    for e in REGISTRY.values():
        if obj is e.functional:
            return e.name
        if e.module is not None and obj is e.module:
            return e.module.__name__
    return name


def test_every_objective_has_a_case():
    missing = sorted(set(_objectives()) - set(CASES) - set(SKIPPED))
    assert not missing, f"add these objectives to CASES (or SKIPPED with a reason): {missing}"
    assert not sorted(set(CASES) - set(_objectives())), "stale CASES entries"
    classes = sorted(
        {_canonical(n, getattr(CL, n)) for n in CL.__all__ if inspect.isclass(getattr(CL, n))}
    )
    twins = {**CLASS_TWINS, **{e.module.__name__: e.name for e in REGISTRY.values() if e.module}}
    assert sorted(set(classes) - set(twins)) == [], "name the functional twin of every loss class"
    assert set(twins.values()) <= set(CASES) | set(SKIPPED)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_half_precision_at_logit_scale_100(name, dtype):
    build, other, kw = CASES[name]
    leaves = [x.to(dtype).requires_grad_() for x in build()]
    args = ORDER[name](leaves, other) if name in ORDER else [*leaves, *other]
    out = getattr(CF, name)(*args, **kw)
    if isinstance(out, (tuple, list)):
        out = out[0]
    loss = out.float().sum()
    assert torch.isfinite(loss), f"{name}: loss {loss}"
    if not loss.requires_grad:  # sinkhorn_knopp: assignments without gradient
        assert name in ("sinkhorn_knopp",), f"{name}: no gradient"
        return
    loss.backward()
    for i, x in enumerate(leaves):
        if x.grad is not None:
            assert torch.isfinite(x.grad).all(), f"{name}: non-finite gradient of input {i}"
