"""Gradient caching: the loss of a big batch with encoder memory bounded by a chunk.

GradCache (Gao, Zhang, Han, Callan, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup", RepL4NLP 2021, arXiv:2101.06983) splits one contrastive step in three:

1. embed the batch chunk by chunk under ``torch.no_grad`` (no activations kept), saving the RNG
   state before every chunk;
2. compute the loss on the concatenated embeddings and its gradient ``dL/dE`` with respect to
   them (here: any contrastkit objective, so the loss itself runs on the tiled engine in
   O(N + M) memory; learnable loss parameters such as a logit scale get their gradient here);
3. re-run every chunk with gradients, with the RNG state of step 1 restored (same dropout), and
   backpropagate the cached slice of ``dL/dE`` with ``torch.autograd.backward(E_chunk, dE_chunk)``.

The parameter gradients equal those of one step that keeps every chunk's activations and calls
``loss.backward()`` (exactly, up to floating-point summation order), while the peak memory is one
chunk's activations plus the O((N + M) d) embeddings and the engine's tiles.

Here step 3 is the backward of an autograd node: :func:`cached_embed` returns embeddings that
are connected to the graph, and ``loss.backward()`` computes ``dL/dE`` (step 2) and then runs the
replay. So the cached embeddings work wherever a plain forward does: a hand-written loop,
Lightning's automatic optimisation, the sentence-transformers trainer, gradient accumulation
(the upstream gradient scales the replay).

Conventions and caveats (as in the official GradCache code):

* the encoder must treat rows independently (no BatchNorm over the batch: its statistics would
  come from the chunk, not the batch) and runs twice per step (buffers such as BatchNorm running
  statistics are updated twice);
* with ``save_rng=True`` (default) the CPU RNG state, and the CUDA RNG state of every device the
  chunk or the encoder uses, are saved before each chunk's first pass and restored for its
  replay; after the replay the global RNG continues as it was after the first pass;
* autocast state (CPU and CUDA) at embedding time is re-entered for the replay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

__all__ = ["GradCache", "cached_embed", "grad_cache_step", "split_batch"]

Batch = Union[Tensor, Mapping, Sequence]


# ---------------------------------------------------------------------------
# batches: a tensor, a dict of tensors (tokenizer output) or a tuple of tensors
# ---------------------------------------------------------------------------
def _batch_rows(batch: Batch, name: str) -> int:
    if isinstance(batch, Tensor):
        if batch.dim() == 0:
            raise ValueError(f"{name} must have a batch dimension, got a 0-dim tensor")
        return batch.shape[0]
    if isinstance(batch, Mapping):
        items = batch.items()
    elif isinstance(batch, (tuple, list)):
        items = ((str(i), v) for i, v in enumerate(batch))
    else:
        raise ValueError(
            f"{name} must be a tensor, a dict of tensors or a tuple of tensors, "
            f"got {type(batch).__name__}"
        )
    rows = {k: v.shape[0] for k, v in items if isinstance(v, Tensor) and v.dim() > 0}
    if not rows:
        raise ValueError(f"{name} holds no tensor with a batch dimension")
    if len(set(rows.values())) > 1:
        raise ValueError(f"every tensor in {name} must have the same number of rows, got {rows}")
    return next(iter(rows.values()))


def split_batch(batch: Batch, chunk_size: int, name: str = "batch") -> list:
    """Split a tensor, a dict of tensors or a tuple of tensors into row chunks of ``chunk_size``.

    Tensors whose first dimension is the batch are sliced; anything else in a dict or tuple
    (0-dim tensors, numbers, strings) is passed unchanged to every chunk.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    n = _batch_rows(batch, name)
    if n == 0:
        raise ValueError(f"{name} has no rows")

    def cut(v, a, b):
        return v[a:b] if isinstance(v, Tensor) and v.dim() > 0 else v

    out = []
    for a in range(0, n, chunk_size):
        b = min(a + chunk_size, n)
        if isinstance(batch, Tensor):
            out.append(batch[a:b])
        elif isinstance(batch, Mapping):
            out.append({k: cut(v, a, b) for k, v in batch.items()})
        else:
            out.append(type(batch)(cut(v, a, b) for v in batch))
    return out


def _tensors(obj) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    values = obj.values() if isinstance(obj, Mapping) else obj
    return [v for v in values if isinstance(v, Tensor)]


def _call(encoder: Callable, chunk):
    """Tensor -> ``encoder(x)``; dict -> ``encoder(**x)`` (Hugging Face style); tuple ->
    ``encoder(*x)``. Wrap the encoder in a lambda for any other convention."""
    if isinstance(chunk, Tensor):
        return encoder(chunk)
    if isinstance(chunk, Mapping):
        return encoder(**chunk)
    return encoder(*chunk)


# ---------------------------------------------------------------------------
# RNG and autocast state of one chunk's first pass
# ---------------------------------------------------------------------------
class _RngState:
    """CPU RNG state and the CUDA RNG state of the devices the chunk or the encoder uses."""

    def __init__(self, tensors: Sequence[Tensor]):
        self.cpu = torch.get_rng_state()
        self.devices: list[int] = []
        self.cuda: list[Tensor] = []
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.devices = sorted({t.get_device() for t in tensors if t.is_cuda})
            self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextlib.contextmanager
    def restored(self):
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for d, s in zip(self.devices, self.cuda):
                torch.cuda.set_rng_state(s, d)
            yield


def _autocast_state() -> list[tuple[str, torch.dtype]]:
    on = []
    for dev in ("cpu", "cuda"):
        if torch.is_autocast_enabled(dev):
            on.append((dev, torch.get_autocast_dtype(dev)))
    return on


@contextlib.contextmanager
def _autocast(state):
    with contextlib.ExitStack() as stack:
        for dev, dtype in state:
            stack.enter_context(torch.autocast(dev, dtype=dtype))
        yield


# ---------------------------------------------------------------------------
# the cached embedding node
# ---------------------------------------------------------------------------
def _rep(out, get_rep_fn: Optional[Callable], name: str) -> Tensor:
    rep = get_rep_fn(out) if get_rep_fn is not None else out
    if not isinstance(rep, Tensor):
        raise ValueError(
            f"the encoder of {name} returned {type(out).__name__}, not a tensor of embeddings; "
            f"pass get_rep_fn to pick the embeddings from its output"
        )
    return rep


class _Cache:
    """What the replay needs: the encoder, the chunks, their RNG and autocast states."""

    def __init__(self, encoder, chunks, get_rep_fn, save_rng, name):
        self.encoder, self.chunks, self.get_rep_fn = encoder, chunks, get_rep_fn
        self.save_rng, self.name = save_rng, name
        self.states: list[Optional[_RngState]] = []
        self.shapes: list[torch.Size] = []
        self.autocast = _autocast_state()
        # one parameter per device: the RNG states to save are those of these devices
        per_device = {}
        if isinstance(encoder, nn.Module):
            for p in encoder.parameters():
                per_device.setdefault(p.device, p)
        self.param_tensors = list(per_device.values())

    def first_pass(self) -> Tensor:
        outs = []
        with torch.no_grad():
            for chunk in self.chunks:
                self.states.append(
                    _RngState(_tensors(chunk) + self.param_tensors) if self.save_rng else None
                )
                rep = _rep(_call(self.encoder, chunk), self.get_rep_fn, self.name)
                rows = _batch_rows(chunk, self.name)
                if rep.dim() == 0 or rep.shape[0] != rows:
                    raise ValueError(
                        f"the encoder of {self.name} must return one embedding per row: "
                        f"chunk of {rows} rows gave shape {tuple(rep.shape)}"
                    )
                self.shapes.append(rep.shape)
                outs.append(rep)
        return torch.cat(outs)

    def replay(self, grad: Tensor) -> None:
        grads = grad.split([s[0] for s in self.shapes])
        with torch.enable_grad():
            for chunk, state, shape, g in zip(self.chunks, self.states, self.shapes, grads):
                rng = state.restored() if state is not None else contextlib.nullcontext()
                with rng, _autocast(self.autocast):
                    rep = _rep(_call(self.encoder, chunk), self.get_rep_fn, self.name)
                if rep.shape != shape:
                    raise RuntimeError(
                        f"the encoder of {self.name} gave shape {tuple(rep.shape)} on the replay "
                        f"but {tuple(shape)} on the first pass"
                    )
                if rep.requires_grad:
                    torch.autograd.backward(rep, g.to(rep.dtype))


class _CachedEmbeddings(torch.autograd.Function):
    """Forward: the no-grad chunked embedding. Backward: the replay with the cached gradient."""

    @staticmethod
    def forward(ctx, cache: _Cache, anchor: Tensor) -> Tensor:
        ctx.cache = cache
        return cache.first_pass()

    @staticmethod
    def backward(ctx, grad: Tensor):
        cache, ctx.cache = ctx.cache, None
        if cache is None:
            raise RuntimeError("the cached embeddings were already backpropagated once")
        cache.replay(grad)
        return None, None


def cached_embed(
    encoder: Callable,
    batch: Batch,
    chunk_size: int,
    *,
    get_rep_fn: Optional[Callable] = None,
    save_rng: bool = True,
    name: str = "batch",
) -> Tensor:
    """Embeddings of ``batch`` computed chunk by chunk without keeping activations.

    The result is a tensor ``(N, ...)`` on the autograd graph: backpropagating into it re-runs
    the encoder chunk by chunk (RNG state restored when ``save_rng``) and sends each chunk its
    slice of the gradient, so encoder memory is bounded by ``chunk_size`` rows. Backward may run
    once. When gradients are disabled this is a plain chunked forward.

    Args:
        encoder: a module or callable; a tensor batch is passed as ``encoder(x)``, a dict as
            ``encoder(**x)``, a tuple as ``encoder(*x)`` (wrap it in a lambda otherwise).
        batch: a tensor, a dict of tensors (e.g. tokenizer output) or a tuple of tensors, all
            with the same number of rows.
        chunk_size: rows per encoder call.
        get_rep_fn: picks the embedding tensor from the encoder's output (e.g.
            ``lambda out: out["sentence_embedding"]``); default: the output itself.
        save_rng: restore each chunk's RNG state for the replay (identical dropout).
    """
    if not callable(encoder):
        raise ValueError(f"encoder must be callable, got {type(encoder).__name__}")
    chunks = split_batch(batch, chunk_size, name)
    cache = _Cache(encoder, chunks, get_rep_fn, save_rng, name)
    if not torch.is_grad_enabled():
        return cache.first_pass()
    anchor = torch.empty(0, requires_grad=True)  # puts the node on the graph
    return _CachedEmbeddings.apply(cache, anchor)


def _encoders_for(encoders, n_batches: int) -> list:
    if isinstance(encoders, nn.ModuleList):
        encoders = list(encoders)
    if isinstance(encoders, nn.Module) or (
        callable(encoders) and not isinstance(encoders, Sequence)
    ):
        return [encoders] * n_batches
    encoders = list(encoders)
    if len(encoders) == 1:
        return encoders * n_batches
    if len(encoders) != n_batches:
        raise ValueError(
            f"encoders must be one shared encoder or one per batch: got {len(encoders)} "
            f"encoders for {n_batches} batches"
        )
    return encoders


def _chunk_sizes(chunk_size, n_batches: int) -> list[int]:
    if isinstance(chunk_size, (tuple, list)):
        if len(chunk_size) != n_batches:
            raise ValueError(
                f"chunk_size must be one integer or one per batch: got {len(chunk_size)} "
                f"for {n_batches} batches"
            )
        return list(chunk_size)
    return [chunk_size] * n_batches


class GradCache:
    """GradCache (Gao et al. 2021, arXiv:2101.06983) for any encoders and any objective.

    ``GradCache(encoders, loss_fn, chunk_size)``; ``step(*batches, **loss_kwargs)`` embeds every
    batch with :func:`cached_embed`, evaluates ``loss_fn(*embeddings, **loss_kwargs)``, calls
    ``backward`` (parameter gradients accumulate in ``.grad`` as after an ordinary
    ``loss.backward()``; the optimiser step is left to the caller) and returns the detached loss.

    Args:
        encoders: one module shared by every batch, or one per batch (query / document towers).
        loss_fn: any callable on the embeddings, e.g. ``InfoNCE()`` or ``CLIP()`` (its
            learnable parameters receive their gradient in the same backward).
        chunk_size: rows per encoder call, one integer or one per batch.
        get_rep_fn: picks the embeddings from an encoder's output (default: the output).
        save_rng: save and restore each chunk's RNG state (dropout identical in both passes).
    """

    def __init__(
        self,
        encoders: Union[Callable, Sequence[Callable]],
        loss_fn: Callable,
        chunk_size: Union[int, Sequence[int]],
        *,
        get_rep_fn: Optional[Callable] = None,
        save_rng: bool = True,
    ):
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        for c in chunk_size if isinstance(chunk_size, (tuple, list)) else [chunk_size]:
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.encoders, self.loss_fn, self.chunk_size = encoders, loss_fn, chunk_size
        self.get_rep_fn, self.save_rng = get_rep_fn, save_rng

    def embed(self, *batches: Batch) -> list[Tensor]:
        """Cached embeddings of every batch (on the graph; see :func:`cached_embed`)."""
        if not batches:
            raise ValueError("give at least one batch")
        encoders = _encoders_for(self.encoders, len(batches))
        sizes = _chunk_sizes(self.chunk_size, len(batches))
        return [
            cached_embed(
                enc, b, c, get_rep_fn=self.get_rep_fn, save_rng=self.save_rng, name=f"batches[{i}]"
            )
            for i, (enc, b, c) in enumerate(zip(encoders, batches, sizes))
        ]

    def step(self, *batches: Batch, **loss_kwargs: Any) -> Tensor:
        """Forward and backward of one step; returns the loss (detached)."""
        loss = self.loss_fn(*self.embed(*batches), **loss_kwargs)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise ValueError(
                f"loss_fn must return a scalar tensor, got "
                f"{tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__}"
            )
        loss.backward()
        return loss.detach()

    __call__ = step


def grad_cache_step(
    encoders: Union[Callable, Sequence[Callable]],
    loss_fn: Callable,
    *batches: Batch,
    chunk_size: Union[int, Sequence[int]],
    get_rep_fn: Optional[Callable] = None,
    save_rng: bool = True,
    loss_kwargs: Optional[dict] = None,
) -> Tensor:
    """Functional :class:`GradCache`: one forward + backward, returns the detached loss."""
    gc = GradCache(encoders, loss_fn, chunk_size, get_rep_fn=get_rep_fn, save_rng=save_rng)
    return gc.step(*batches, **(loss_kwargs or {}))
