"""Products of values: ``matmul`` (batched per sample, two inputs) and PyTorch's
``multihead_attention`` (torch.nn.MultiheadAttention with batch_first=True, its parameters
under its keys). Every product is one NumPy matmul over the whole batch and every head (BLAS
per matrix inside NumPy), never a Python loop over samples, heads or tokens."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from netspec.common.errors import ShapeError
from netspec.common.lazy import lazy_import
from netspec.ops.activations import softmax, sum_of_products
from netspec.ops.base import Array, Context, Grads, NodeParams, Op, ParamSpec, register
from netspec.ops.core import MAX_INPUT_DIM
from netspec.ops.shapes import Shape, format_shape, numel, reduce_to

np = lazy_import("numpy")


class MatmulParams(NodeParams):
    op: Literal["matmul"]


@register
class Matmul(Op):
    """torch.matmul of two inputs of one rank, 2 or more per sample: (..., n, k) @ (..., k, m)
    gives (..., n, m), leading axes of size 1 broadcast (attention's scores are q @ k^T)."""

    name = "matmul"
    Params = MatmulParams
    min_inputs = 2
    max_inputs = 2
    keeps_image = False

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        a, b = in_shapes
        if len(a) < 2 or len(b) < 2:
            raise ShapeError(f"inputs have shapes {format_shape(a)} and {format_shape(b)}; "
                             f"matmul needs two axes or more per sample in each (add a "
                             f"reshape to make a vector a (1, k) or (k, 1) matrix)")
        if len(a) != len(b):
            raise ShapeError(f"inputs have shapes {format_shape(a)} and {format_shape(b)}; "
                             f"matmul needs as many axes in both (PyTorch would broadcast the "
                             f"batch axis against a per-sample one); reshape the shorter with "
                             f"leading axes of size 1")
        if a[-1] != b[-2]:
            raise ShapeError(f"inputs have shapes {format_shape(a)} and {format_shape(b)}; "
                             f"the first's last axis {a[-1]} must equal the second's "
                             f"next-to-last {b[-2]}")
        try:
            lead = np.broadcast_shapes(a[:-2], b[:-2])
        except ValueError:
            raise ShapeError(f"inputs have shapes {format_shape(a)} and {format_shape(b)}; "
                             f"their leading axes {format_shape(a[:-2])} and "
                             f"{format_shape(b[:-2])} do not broadcast") from None
        return (*lead, a[-2], b[-1])

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return 2 * numel(out_shape) * in_shapes[0][-1]

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        a, b = xs
        return np.matmul(a, b), (a, b)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        a, b = cache
        da = reduce_to(np.matmul(dy, b.swapaxes(-1, -2)), a.shape)
        db = reduce_to(np.matmul(a.swapaxes(-1, -2), dy), b.shape)
        return [da, db], {}


class MultiheadAttentionParams(NodeParams):
    op: Literal["multihead_attention"]
    embed_dim: int = Field(gt=0, le=MAX_INPUT_DIM,
                           description="Features of each token (the last axis of the input).")
    num_heads: int = Field(gt=0, le=MAX_INPUT_DIM,
                           description="Heads, each attending with embed_dim / num_heads "
                                       "features; must divide embed_dim.")
    dropout: float = Field(default=0.0, ge=0, lt=1,
                           description="Dropout on the attention weights in training.")
    bias: bool = Field(default=True,
                       description="Learn in_proj_bias and out_proj.bias.")
    causal: bool = Field(default=False,
                         description="Each token attends only to itself and the tokens "
                                     "before it (PyTorch's is_causal mask).")
    batch_first: Literal[True] = Field(
        default=True, description="Values are (N, T, D), as PyTorch's batch_first=True: "
                                  "netspec's per-sample shape is (T, D).")

    @model_validator(mode="after")
    def _heads_divide(self) -> MultiheadAttentionParams:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} does not divide embed_dim "
                             f"{self.embed_dim}; each head takes embed_dim / num_heads "
                             f"features (e.g. 12 heads of 64 for 768)")
        return self


@register
class MultiheadAttention(Op):
    """torch.nn.MultiheadAttention (batch_first=True): tokens (T, D) in, (T, D) out. One
    input is self-attention; three are query, key and value ((T, D), (S, D), (S, D)). The
    keys are PyTorch's: in_proj_weight (3D, D), in_proj_bias, out_proj.weight,
    out_proj.bias."""

    name = "multihead_attention"
    Params = MultiheadAttentionParams
    min_inputs = 1
    max_inputs = 3
    keeps_image = False

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        if len(in_shapes) == 2:
            raise ShapeError("takes one input (self-attention) or three (query, key, value), "
                             "got 2; name the key input twice for key = value")
        embed = self.p.embed_dim
        roles = ("input",) if len(in_shapes) == 1 else ("query", "key", "value")
        for role, shape in zip(roles, in_shapes):
            if len(shape) != 2:
                raise ShapeError(f"{role} has shape {format_shape(shape)}; "
                                 f"multihead_attention takes tokens (T, D) per sample, "
                                 f"reshape or flatten it to two axes first")
            if shape[-1] != embed:
                raise ShapeError(f"{role} has shape {format_shape(shape)}; embed_dim {embed} "
                                 f"does not match its last axis {shape[-1]}")
        if len(in_shapes) == 3 and in_shapes[1][0] != in_shapes[2][0]:
            raise ShapeError(f"key {format_shape(in_shapes[1])} and value "
                             f"{format_shape(in_shapes[2])} must have as many tokens")
        if self.p.causal and len(in_shapes) == 3 and in_shapes[0][0] != in_shapes[1][0]:
            raise ShapeError(f"a causal mask needs as many queries as keys, got "
                             f"{in_shapes[0][0]} and {in_shapes[1][0]}")
        return in_shapes[0]

    def param_specs(self, in_shapes: Sequence[Shape]) -> dict[str, ParamSpec]:
        embed = self.p.embed_dim
        specs = {"in_proj_weight": ParamSpec((3 * embed, embed), "weight")}
        if self.p.bias:
            specs["in_proj_bias"] = ParamSpec((3 * embed,), "zeros")
        specs["out_proj.weight"] = ParamSpec((embed, embed), "weight")
        if self.p.bias:
            specs["out_proj.bias"] = ParamSpec((embed,), "zeros")
        return specs

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        embed, queries, keys = self.p.embed_dim, in_shapes[0][0], in_shapes[-1][0]
        bias = int(self.p.bias)
        projections = (queries + 2 * keys) * (2 * embed + bias) * embed
        products = 2 * 2 * queries * keys * embed  # scores and the weighted sum
        return projections + products + 5 * self.p.num_heads * queries * keys \
            + queries * (2 * embed + bias) * embed

    def _heads(self, x: Array) -> Array:
        """(N, T, D) -> (N, heads, T, D / heads), a view."""
        n, tokens, _ = x.shape
        return x.reshape(n, tokens, self.p.num_heads, -1).transpose(0, 2, 1, 3)

    def forward(self, xs: list[Array], params: dict[str, Array], buffers,
                ctx: Context) -> tuple[Array, tuple]:
        embed, heads = self.p.embed_dim, self.p.num_heads
        head_dim = embed // heads
        weight, bias = params["in_proj_weight"], params.get("in_proj_bias")
        n, queries = xs[0].shape[0], xs[0].shape[1]
        if len(xs) == 1:
            # self-attention: the three projections are one product, whose (N, T, 3, heads,
            # head_dim) layout the products by head read in place (BLAS takes the strides)
            rows_in: tuple[Array, ...] = (xs[0].reshape(-1, embed),)
            qkv = rows_in[0] @ weight.T
            if bias is not None:
                qkv += bias
            q, k, v = qkv.reshape(n, queries, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
        else:
            rows_in = tuple(x.reshape(-1, embed) for x in xs)
            q, k, v = (
                self._heads((r @ weight[i * embed:(i + 1) * embed].T
                             + (0 if bias is None else bias[i * embed:(i + 1) * embed])
                             ).reshape(x.shape[0], x.shape[1], embed))
                for i, (r, x) in enumerate(zip(rows_in, xs)))
        scale = 1.0 / math.sqrt(head_dim)
        # scaled before the product: the queries are T x D, the scores heads x T x S
        q = q * q.dtype.type(scale)
        scores = np.matmul(q, k.swapaxes(-1, -2))
        if self.p.causal:
            scores[..., np.triu(np.ones(scores.shape[-2:], dtype=bool), 1)] = -np.inf
        weights = softmax(scores, -1, overwrite=True)
        mask = None
        dropped = weights
        if ctx.train and self.p.dropout > 0:
            keep = 1.0 - self.p.dropout
            mask = (ctx.rng.random(weights.shape, dtype=np.float32) < keep).astype(
                weights.dtype) * weights.dtype.type(1.0 / keep)
            dropped = weights * mask
        # the heads' outputs land side by side in the (N, T, D) rows of the out projection
        joined = np.empty((n, queries, embed), np.result_type(dropped, v))
        np.matmul(dropped, v, out=self._heads(joined))
        joined = joined.reshape(n * queries, embed)
        out = joined @ params["out_proj.weight"].T
        if self.p.bias:
            out += params["out_proj.bias"]
        cache = (rows_in, [x.shape for x in xs], q, k, v, weights, mask, dropped, joined,
                 scale, params["in_proj_weight"], params["out_proj.weight"])
        return out.reshape(n, queries, embed), cache

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        (rows_in, shapes, q, k, v, weights, mask, dropped, joined, scale, in_weight,
         out_weight) = cache
        embed = self.p.embed_dim
        n, queries = dy.shape[0], dy.shape[1]
        dy_rows = dy.reshape(-1, embed)
        grads = {"out_proj.weight": dy_rows.T @ joined}
        if self.p.bias:
            grads["out_proj.bias"] = dy_rows.sum(axis=0)
        d_heads_out = self._heads((dy_rows @ out_weight).reshape(n, queries, embed))
        # d_scores, in the array of the weights' gradient: softmax's backward,
        # weights * (d_weights - sum(d_weights * weights))
        d_scores = np.matmul(d_heads_out, v.swapaxes(-1, -2))
        if mask is not None:
            d_scores *= mask
        d_scores -= sum_of_products(d_scores, weights, -1)
        d_scores *= weights
        if len(rows_in) == 1:
            # the three gradients land in the (N, T, 3, heads, head_dim) layout of the
            # projection's output, which is one product with the weight
            d_qkv = np.empty((n, queries, 3 * embed), d_scores.dtype)
            dq, dk, dv = d_qkv.reshape(n, queries, 3, self.p.num_heads, -1).transpose(
                2, 0, 3, 1, 4)
            # the scale on the scores' side: that array is contiguous, dq is strided
            np.matmul(d_scores * d_scores.dtype.type(scale), k, out=dq)
            np.matmul(d_scores.swapaxes(-1, -2), q, out=dk)
            np.matmul(dropped.swapaxes(-1, -2), d_heads_out, out=dv)
            d_qkv = d_qkv.reshape(-1, 3 * embed)
            grads["in_proj_weight"] = d_qkv.T @ rows_in[0]
            if self.p.bias:
                grads["in_proj_bias"] = d_qkv.sum(axis=0)
            return [(d_qkv @ in_weight).reshape(shapes[0])], grads
        dqh = np.matmul(d_scores, k)
        dqh *= dqh.dtype.type(scale)
        dkh = np.matmul(d_scores.swapaxes(-1, -2), q)
        dvh = np.matmul(dropped.swapaxes(-1, -2), d_heads_out)

        def tokens_of(heads: Array) -> Array:
            return heads.transpose(0, 2, 1, 3).reshape(-1, embed)

        d_projected = [tokens_of(dqh), tokens_of(dkh), tokens_of(dvh)]
        grads["in_proj_weight"] = np.concatenate(
            [d.T @ r for d, r in zip(d_projected, rows_in)], axis=0)
        if self.p.bias:
            grads["in_proj_bias"] = np.concatenate([d.sum(axis=0) for d in d_projected])
        dxs = [(d @ in_weight[i * embed:(i + 1) * embed]).reshape(shape)
               for i, (d, shape) in enumerate(zip(d_projected, shapes))]
        return dxs, grads
