"""FrameFusion's tensor math, shared by the dynamic reference and the static-schedule decoder.

Numerics: similarities, importances and merge averages are computed in float32 whatever the
model's dtype (returned values are cast back), so fp16/bf16 graphs keep the precision these
decisions need. For a float32 model this is exactly the authors' arithmetic; the authors compute
them in the model's dtype, so bf16 runs can differ from theirs in the last bits.

Everything here works on the current visual span only (``n`` tokens, one row per token, in
sequence order) and is written for export: shapes depend only on Python ints given by the caller
(``n``, ``m``, ``k``), never on tensor values; no ``.item()``, no data-dependent branching.

Vocabulary (see ``shared/FRAMEFUSION.md``):
    patch id      position of a visual token inside its frame, ``(i - s) mod P`` before reduction;
                  carried along as tokens are removed.
    patch order   visual tokens sorted by patch id, then by time (sequence order): the order in which
                  FrameFusion compares each token with the same patch in the previous frame.
"""

from __future__ import annotations

import torch

#: similarity given to tokens with no predecessor in their patch chain (never merged)
NO_PREDECESSOR = -2.0


def _chain_places(patch_ids: torch.Tensor, num_patches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's place in patch order and its rank in its patch chain (earlier tokens of its
    patch), both [n] int64: float32 cumulative sums over a one-hot [n, P] matrix (exact below 2**24)."""
    patches = torch.arange(num_patches, dtype=patch_ids.dtype, device=patch_ids.device)
    onehot = (patch_ids.unsqueeze(1) == patches.unsqueeze(0)).to(torch.float32)  # [n, P]
    per_patch = onehot.sum(dim=0)
    before = torch.cumsum(per_patch, dim=0) - per_patch  # tokens of smaller patch ids
    rank = (torch.cumsum(onehot, dim=0) * onehot).sum(dim=1) - 1.0  # earlier tokens of the same patch
    return (before.index_select(0, patch_ids) + rank).to(torch.int64), rank.to(torch.int64)


def _num_patches(patch_ids: torch.Tensor, num_patches: int | None) -> int:
    if num_patches is not None:
        return num_patches
    return int(patch_ids.max()) + 1 if patch_ids.shape[0] else 1  # eager callers only (reads a value)


def patch_order(patch_ids: torch.Tensor, num_patches: int | None = None) -> torch.Tensor:
    """Permutation that sorts visual tokens patch-major (by patch id, then by position).

    ``patch_ids`` [n] int64 in ``[0, num_patches)``. A counting sort with static shapes and no
    TopK/Sort (TensorRT's TopK stops at K < 3840; a real bucket has 8192 tokens): a token's place is
    the number of tokens of smaller patch ids plus the number of earlier tokens of its own patch,
    both from float32 cumulative sums over a one-hot [n, P] matrix; a scatter inverts the places.
    ``num_patches`` is P (the decoder passes it; eager callers may omit it).
    """
    n = patch_ids.shape[0]
    place, _ = _chain_places(patch_ids, _num_patches(patch_ids, num_patches))
    positions = torch.arange(n, dtype=torch.int64, device=patch_ids.device)
    return torch.zeros(n, dtype=torch.int64, device=patch_ids.device).scatter(0, place, positions)


def chain_predecessor(patch_ids: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's predecessor in its patch chain, in sequence order: ``(previous, has)``, [n] int64
    span positions and [n] bool (False for a chain's first token, whose ``previous`` is arbitrary).

    The predecessor is the token one place earlier in patch order (``order``), when it has the same
    patch id. [n] integer work only, so callers compare rows in sequence order with one gather
    instead of permuting [n, D] rows to patch order and slicing them.
    """
    n = order.shape[0]
    positions = torch.arange(n, dtype=torch.int64, device=order.device)
    place = torch.zeros(n, dtype=torch.int64, device=order.device).scatter(0, order, positions)
    earlier = torch.cat([order[:1], order[:-1]])  # the token one place earlier in patch order
    previous = earlier.index_select(0, place)
    return previous, (place > 0) & (patch_ids.index_select(0, previous) == patch_ids)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity, as the authors compute it (no epsilon)."""
    dot = (a * b).sum(dim=-1)
    return dot / (torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1))


def chain_similarity(visual: torch.Tensor, patch_ids: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Similarity of each token to its predecessor in its patch chain, in patch order.

    ``visual`` [n, D]; returns [n] (same dtype): ``cosine(token, previous token of the same patch)``,
    or ``NO_PREDECESSOR`` for the first token of each chain.
    """
    xs = visual.index_select(0, order).to(torch.float32)
    ps = patch_ids.index_select(0, order)
    sim = cosine(xs[1:], xs[:-1])
    sim = torch.where(ps[1:] == ps[:-1], sim, torch.full_like(sim, NO_PREDECESSOR))
    head = torch.full((1,), NO_PREDECESSOR, dtype=sim.dtype, device=sim.device)
    return torch.cat([head, sim])


def chain_closeness(visual: torch.Tensor, patch_ids: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The key top-M merge selection ranks by, in patch order: ``-|a/|a| - b/|b||^2 / 2`` for a token
    ``a`` and its chain predecessor ``b`` (``NO_PREDECESSOR * 4`` for a chain's first token).

    Mathematically ``cos(a, b) - 1``, so it ranks like the similarity; numerically it resolves
    near-duplicates: for static content ``1 - cos`` is ~1e-6 and the cosine carries it with two
    digits at best, while the distance of the normalized rows keeps its relative precision, so two
    backends agree on the order (see :func:`top_flags`).

    The rows are compared in sequence order (each with its predecessor, one gather: see
    :func:`chain_predecessor`) and only the [n] keys are permuted to patch order: the same operations
    on the same rows as comparing neighbours in patch order, so the same bits, with two fewer passes
    over [n, D].
    """
    xs = visual.to(torch.float32)
    unit = xs / torch.linalg.vector_norm(xs, dim=-1, keepdim=True)
    previous, has = chain_predecessor(patch_ids, order)
    gap = -0.5 * ((unit - unit.index_select(0, previous)) ** 2).sum(dim=-1)
    gap = torch.where(has, gap, torch.full_like(gap, 4 * NO_PREDECESSOR))
    return gap.index_select(0, order)


#: merge keys (``chain_closeness``) within this distance of the cut count as tied
SIMILARITY_EPS = 1e-9
#: importances whose log2 lie within this distance of the cut's count as tied (about 7e-6 relative)
IMPORTANCE_EPS = 1e-5
_BISECT_STEPS = 40


def selection_key(scores: torch.Tensor, *, relative: bool = False) -> torch.Tensor:
    """The float32 value top-k selection ranks by: the similarity itself, or log2 of an importance
    (``relative``: positive softmax means of any magnitude, compared by ratio). NaN ranks last."""
    x = scores.to(torch.float32)
    if relative:
        x = torch.log2(x.clamp_min(torch.finfo(torch.float32).tiny))
    nan = torch.isnan(x)
    lowest = torch.where(nan, torch.full_like(x, float("inf")), x).min()
    return torch.where(nan, lowest - 1.0, x)  # just below every real score: bisection stays fine


@torch.library.custom_op("ffexport::selection_cut", mutates_args=())
def selection_cut(key: torch.Tensor, count: int) -> torch.Tensor:
    """The cut of top-``count`` selection: ``low`` after :data:`_BISECT_STEPS` float32 bisection steps
    on ``count(key >= mid) >= count`` from ``[key.min(), key.max() + 1]``, a float32 scalar.

    One custom op, so an exported graph holds the bisection once, as an ONNX ``Loop`` of
    ``_BISECT_STEPS`` iterations (``ffexport.export.selection``), not 40 unrolled copies: the same
    float32 operations in the same order, so ONNX Runtime and TensorRT get the same ``low`` as this
    eager code, bit for bit. ``key`` [n] float32 (:func:`selection_key`), ``1 <= count <= n``.
    """
    low = key.min()  # count(key >= low) = n >= count
    high = key.max() + 1.0  # count(key >= high) = 0 < count
    for _ in range(_BISECT_STEPS):
        mid = (low + high) / 2
        enough = (key >= mid).to(torch.float32).sum() >= count
        low = torch.where(enough, mid, low)
        high = torch.where(enough, high, mid)
    return low.clone()  # custom op outputs must be fresh tensors


@selection_cut.register_fake
def _selection_cut_shape(key: torch.Tensor, count: int) -> torch.Tensor:
    return key.new_empty((), dtype=torch.float32)


def top_flags(scores: torch.Tensor, count: int, *, relative: bool = False) -> torch.Tensor:
    """float32 0/1 flags marking the ``count`` highest scores; near-ties at the cut go by position.

    Backend-stable: static content gives tokens whose scores differ only in the last bits
    (similarities 0.99999994, 1.0, 1.00000012), and two backends round them differently. So the
    cut value ``v`` (the count-th largest) is found by bisection (``count(x >= v) >= count``: 40
    compare-and-sum steps, no TopK, so no K limit; :func:`selection_cut`, one ONNX ``Loop`` in a
    graph); every score above ``v + eps`` is taken, and
    the rest come from the scores within ``eps`` of ``v``, lowest positions first (a cumulative sum).
    ``eps`` is :data:`SIMILARITY_EPS` (for merge keys from :func:`chain_closeness`), or
    :data:`IMPORTANCE_EPS` in log2 for ``relative`` scores.
    A token only changes sides if its score lies within rounding of ``v +- eps``.
    """
    n = scores.shape[0]
    if count == 0:
        return torch.zeros(n, dtype=torch.float32, device=scores.device)
    x = selection_key(scores, relative=relative)
    eps = IMPORTANCE_EPS if relative else SIMILARITY_EPS
    low = torch.ops.ffexport.selection_cut(x, count)
    # compare distances to the cut with eps (not x with low + eps): the ONNX optimizer treats an Add
    # of a constant below ~1e-8 as an Add of zero and drops it
    distance = x - low
    above = (distance > eps).to(torch.float32)
    within = (distance >= -eps).to(torch.float32)  # above, or near the cut
    near = within - above
    need = count - above.sum()
    # near the cut: taken while the near ones so far fit in ``need`` (then ``within`` = 1 is the flag);
    # otherwise the flag is ``above`` (1 above the cut, 0 near or below it)
    return torch.where(torch.cumsum(near, dim=0) <= need, within, above)


def compact_index(keep: torch.Tensor, count: int) -> torch.Tensor:
    """Positions of the ``count`` rows with ``keep`` == 1, ascending, without a data-dependent shape.

    ``keep`` [n] float 0/1 with exactly ``count`` ones. Each kept row goes to its rank among kept
    rows (a cumulative sum), each dropped row to ``count`` + its rank among dropped rows: the slots
    are a permutation of ``0 .. n-1``, so the scatter writes every slot of an ``[n]`` output once
    (TensorRT's ScatterElements wants indices no longer than the data on every axis) and the first
    ``count`` slots are the answer.
    """
    n = keep.shape[0]
    # counts in float32: exact below 2**24 tokens whatever the model dtype (bf16 holds integers
    # only up to 256), and TensorRT's CumSum takes float types only
    kept_upto = torch.cumsum(keep.to(torch.float32), dim=0).to(torch.int64)  # kept rows in 0..i
    positions = torch.arange(n, dtype=torch.int64, device=keep.device)
    slot = torch.where(keep > 0, kept_upto - 1, count + positions - kept_upto)
    out = torch.zeros(n, dtype=torch.int64, device=keep.device)
    return out.scatter(0, slot, positions)[:count]


def merge(
    visual: torch.Tensor,
    patch_ids: torch.Tensor,
    order: torch.Tensor,
    merged: torch.Tensor,
    m: int,
    max_run: int | None = None,
    num_patches: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the flagged tokens into the unmerged token before them in their patch chain.

    ``merged`` [n] 0/1 flags in patch order (exactly ``m`` ones; a chain's first token is never
    flagged). Each maximal run of flagged tokens is averaged, with equal weights, together with the
    unflagged token just before it. Returns ``(kept, values)``: the ``n - m`` surviving rows' positions
    in the span (ascending) and their new values [n - m, D], in that order. ``max_run`` bounds a
    chain's length (the number of frames); None allows any. ``num_patches`` is P (the decoder passes
    it; eager callers may omit it).

    How, in a fixed number of passes over the [n, D] rows whatever the frames: the rows are laid out
    as a [P, T] grid of patch chains (cell ``(p, r)``: the ``r``-th token of patch ``p``; T = the
    chain bound; empty cells read row 0 with weight 0), a group is an unmerged token and the run after
    it, and each chain's group means are one product of a [T, T] matrix with the chain's rows (a
    batched MatMul): row r weighs every cell of r's group by 1/size, the others by 0. Gathers, small
    integer scatters and a MatMul: no scatter-add (a TensorRT plugin), no running sums over [n, D]
    (cancellation), and an unmerged token with no run keeps its row exactly (weight 1, the rest 0).
    A non-finite row spoils the means of its chain (0 x inf): hidden states are finite.
    """
    n, width = visual.shape[0], visual.shape[-1]
    frames = min(max_run if max_run is not None else n, n)  # no chain is longer than the rows
    patches = _num_patches(patch_ids, num_patches)
    cells = patches * frames
    _, rank = _chain_places(patch_ids, patches)
    slot = patch_ids * frames + rank  # each token's cell, [n] in sequence order
    positions = torch.arange(n, dtype=torch.int64, device=visual.device)
    unmerged = torch.zeros(n, dtype=torch.float32, device=visual.device).scatter(
        0, order, 1.0 - merged.to(torch.float32))  # by span position
    # an empty cell starts a group of its own, so it never shares one with a token
    starts = torch.ones(cells, dtype=torch.float32, device=visual.device).scatter(0, slot, unmerged)
    group = torch.cumsum(starts.reshape(patches, frames, 1), dim=1)  # [P, T, 1]: float32, exact
    same = (group == group.transpose(1, 2)).to(torch.float32)  # [P, T, T]: cells r and j share a group
    weights = same / same.sum(dim=2, keepdim=True)  # row r: 1/size on its group's cells
    source = torch.zeros(cells, dtype=torch.int64, device=visual.device).scatter(0, slot, positions)
    rows = visual.index_select(0, source).to(torch.float32).reshape(patches, frames, width)
    means = torch.matmul(weights, rows).reshape(cells, width)
    kept = compact_index(unmerged, n - m)
    values = means.index_select(0, slot.index_select(0, kept))
    return kept, values.to(visual.dtype)


def last_query_importance(query: torch.Tensor, key: torch.Tensor, num_queries: int = 4) -> torch.Tensor:
    """Attention the last ``num_queries`` positions pay to every key, averaged over heads and queries.

    ``query`` [1, H, L, d] and ``key`` [1, H, L, d] (keys already repeated to H heads, RoPE applied).
    Causal: the query at position ``L - q + j`` sees keys ``0 .. L - q + j``. Returns [L].
    """
    length = query.shape[-2]
    q = query[:, :, -num_queries:, :].to(torch.float32)
    key = key.to(torch.float32)
    rows = q.shape[-2]
    scale = 1.0 / (query.shape[-1] ** 0.5)
    scores = torch.matmul(q, key.transpose(-2, -1)) * scale
    query_pos = torch.arange(rows, device=query.device).unsqueeze(1) + (length - rows)
    key_pos = torch.arange(length, device=query.device).unsqueeze(0)
    scores = scores.masked_fill(key_pos > query_pos, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return probs.mean(dim=(1, 2))[0]


def prune(importance: torch.Tensor, k: int) -> torch.Tensor:
    """Positions (ascending) of the ``k`` most important visual tokens. ``importance`` [n]."""
    return compact_index(top_flags(importance, k, relative=True), k)
