"""The PyTorch counterparts of the tensor ops and of the any-rank forms of linear, softmax,
flatten and concat, for ``tests/test_parity_torch.py``. Importing this module does not import
torch (the parity suite skips cleanly without it)."""

from __future__ import annotations

from typing import Any

TENSOR_TORCH = frozenset({
    "flatten", "softmax", "concat", "reshape", "permute", "transpose", "select", "slice",
    "mean", "channel_shuffle", "parameter", "layernorm", "layernorm2d", "matmul",
    "multihead_attention",
})


def tensor_torch_apply(op_name: str, p: Any, xs: list, params: dict, batch: int) -> Any:
    """The torch value of one tensor op on torch tensors ``xs`` with ``params``; an op
    without inputs broadcasts to ``batch`` samples."""
    import torch
    import torch.nn.functional as F  # noqa: N812 - PyTorch's own spelling

    x = xs[0] if xs else None
    if op_name == "flatten":
        return torch.flatten(x, p.start_dim, p.end_dim)
    if op_name == "softmax":
        return F.softmax(x, dim=p.dim)
    if op_name == "concat":
        return torch.cat(xs, dim=p.axis + 1 if p.axis is not None else
                         p.dim)
    if op_name == "reshape":
        return x.reshape(x.shape[0], *p.shape)
    if op_name == "permute":
        return x.permute(*p.dims)
    if op_name == "transpose":
        return torch.transpose(x, p.dim0, p.dim1)
    if op_name == "select":
        return torch.select(x, p.dim, p.index)
    if op_name == "slice":
        index = [slice(None)] * x.dim()
        index[p.dim] = slice(p.start, p.end, p.step)
        return x[tuple(index)]
    if op_name == "mean":
        return torch.mean(x, dim=tuple(p.dim), keepdim=p.keepdim)
    if op_name == "channel_shuffle":
        return torch.nn.ChannelShuffle(p.groups)(x)
    if op_name == "parameter":
        tensor = params[""]
        sample = tensor[0] if p.batch_axis else tensor
        return sample.unsqueeze(0).expand(batch, *sample.shape)
    if op_name == "layernorm":
        shape = (p.normalized_shape,) if isinstance(p.normalized_shape, int) \
            else tuple(p.normalized_shape)
        return F.layer_norm(x, shape, params.get("weight"), params.get("bias"), p.eps)
    if op_name == "layernorm2d":
        # torchvision's LayerNorm2d
        last = F.layer_norm(x.permute(0, 2, 3, 1), (p.normalized_shape,),
                            params.get("weight"), params.get("bias"), p.eps)
        return last.permute(0, 3, 1, 2)
    if op_name == "matmul":
        return torch.matmul(xs[0], xs[1])
    if op_name == "multihead_attention":
        query, key, value = (xs * 3) if len(xs) == 1 else xs
        mask = None
        if p.causal:
            mask = torch.triu(torch.ones(query.shape[1], key.shape[1], dtype=torch.bool), 1)
        out, _ = F.multi_head_attention_forward(
            query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), p.embed_dim,
            p.num_heads, params["in_proj_weight"], params.get("in_proj_bias"), None, None,
            False, 0.0, params["out_proj.weight"], params.get("out_proj.bias"),
            training=False, need_weights=False, attn_mask=mask)
        return out.transpose(0, 1)
    raise KeyError(f"no torch translation for op '{op_name}'")
