"""The tables of cases of the tensor ops (reshape, permute, transpose, select, slice, mean,
channel_shuffle, parameter, layernorm, matmul, multihead_attention) and of the any-rank forms
of linear, softmax, flatten and concat. The shared suites add them to their own tables:
``tests/test_ops.py`` (layer harness), ``tests/test_compiler.py`` (shapes, parameters, FLOPs,
shape errors) and ``tests/test_parity_torch.py`` (PyTorch)."""

from __future__ import annotations

from layer_harness import OpCase

TOKENS = (2, 5, 4)  # a batch of two sequences of 5 tokens of 4 features

LAYER_CASES = [
    # linear on the last axis of any rank
    OpCase("linear", {"out_features": 3}, (TOKENS,)),
    OpCase("linear", {"out_features": 2, "bias": False}, ((2, 3, 2, 4),)),
    # softmax and concat over any dim
    OpCase("softmax", {"dim": -1}, (TOKENS,)),
    OpCase("softmax", {"dim": 2}, ((2, 3, 4, 2),)),
    OpCase("softmax", {"dim": -1}, ((2, 3, 4, 2),), channels_last=True),
    OpCase("concat", {"dim": 1}, ((2, 1, 4), TOKENS)),
    OpCase("concat", {"dim": -1}, ((2, 5, 2), TOKENS)),
    # flatten over a range of axes
    OpCase("flatten", {"start_dim": 2}, ((2, 3, 2, 4),)),
    OpCase("flatten", {"start_dim": 1, "end_dim": 2}, ((2, 3, 2, 4),)),
    OpCase("flatten", {"start_dim": -2, "end_dim": -1}, ((2, 3, 2, 4),), channels_last=True),
    # reshape
    OpCase("reshape", {"shape": [4, 5]}, (TOKENS,)),
    OpCase("reshape", {"shape": [2, -1, 2]}, ((2, 3, 2, 2),)),
    OpCase("reshape", {"shape": [-1]}, ((2, 3, 2, 2),), channels_last=True),
    # permute and transpose
    OpCase("permute", {"dims": [0, 2, 3, 1]}, ((2, 3, 2, 4),)),
    OpCase("permute", {"dims": [0, 3, 1, 2]}, ((2, 3, 2, 4),), channels_last=True),
    OpCase("permute", {"dims": [0, -1, 1]}, (TOKENS,)),
    OpCase("transpose", {"dim0": 1, "dim1": 2}, (TOKENS,)),
    OpCase("transpose", {"dim0": -1, "dim1": 1}, ((2, 3, 2, 4),)),
    # select and slice
    OpCase("select", {"dim": 1, "index": 0}, (TOKENS,)),
    OpCase("select", {"dim": -1, "index": -1}, ((2, 3, 2, 4),)),
    OpCase("slice", {"dim": 1, "start": 0, "end": 2}, ((2, 4, 3, 2),)),
    OpCase("slice", {"dim": 1, "start": 2}, ((2, 4, 3, 2),), channels_last=True),
    OpCase("slice", {"dim": -1, "start": -3, "step": 2}, (TOKENS,)),
    # mean
    OpCase("mean", {"dim": [2, 3]}, ((2, 3, 2, 4),)),
    OpCase("mean", {"dim": [-1], "keepdim": True}, (TOKENS,)),
    OpCase("mean", {"dim": [1]}, (TOKENS,)),
    # channel shuffle
    OpCase("channel_shuffle", {"groups": 2}, ((2, 4, 2, 3),)),
    OpCase("channel_shuffle", {"groups": 3}, ((2, 6, 2, 2),), channels_last=True),
    # learned tensors, with and without a batch axis
    OpCase("parameter", {"shape": [1, 3, 4], "batch_axis": True}, ()),
    OpCase("parameter", {"shape": [4, 1, 1]}, ()),
    # stochastic depth on tokens, as on images: whole samples kept or dropped
    OpCase("stochastic_depth", {"p": 0.5}, ((6, 5, 4),), seed=1, train=True),
    OpCase("stochastic_depth", {"p": 0.5}, ((2, 3, 2, 2, 2),), train=True),
    # layer norms
    OpCase("layernorm", {"normalized_shape": 4}, (TOKENS,)),
    OpCase("layernorm", {"normalized_shape": [3, 4], "eps": 1e-3}, ((2, 2, 3, 4),)),
    OpCase("layernorm", {"normalized_shape": 4, "elementwise_affine": False}, (TOKENS,)),
    OpCase("layernorm", {"normalized_shape": 4, "bias": False}, ((2, 3, 2, 4),),
           channels_last=True),
    OpCase("layernorm2d", {"normalized_shape": 3}, ((2, 3, 2, 4),)),
    OpCase("layernorm2d", {"normalized_shape": 3}, ((2, 3, 2, 4),), channels_last=True),
    # matmul, with broadcast leading axes
    OpCase("matmul", {}, ((2, 3, 4), (2, 4, 2))),
    OpCase("matmul", {}, ((2, 2, 3, 4), (2, 1, 4, 5))),
    OpCase("matmul", {}, ((2, 1, 3, 4), (2, 2, 4, 2))),
    # attention: self, causal, query/key/value of another length
    OpCase("multihead_attention", {"embed_dim": 4, "num_heads": 2}, ((2, 3, 4),)),
    OpCase("multihead_attention", {"embed_dim": 4, "num_heads": 1, "causal": True},
           ((2, 4, 4),)),
    OpCase("multihead_attention", {"embed_dim": 4, "num_heads": 2, "bias": False},
           ((2, 3, 4),), train=True),
    OpCase("multihead_attention", {"embed_dim": 4, "num_heads": 2},
           ((2, 2, 4), (2, 3, 4), (2, 3, 4))),
]

PARITY_CASES = [
    OpCase("linear", {"out_features": 3}, (TOKENS,)),
    OpCase("softmax", {"dim": -1}, (TOKENS,)),
    OpCase("concat", {"dim": 1}, ((2, 1, 4), TOKENS)),
    OpCase("flatten", {"start_dim": 2}, ((2, 3, 2, 4),)),
    OpCase("reshape", {"shape": [2, -1, 2]}, ((2, 3, 2, 2),)),
    OpCase("permute", {"dims": [0, 2, 3, 1]}, ((2, 3, 2, 4),)),
    OpCase("transpose", {"dim0": 1, "dim1": 2}, (TOKENS,)),
    OpCase("select", {"dim": 1, "index": 0}, (TOKENS,)),
    OpCase("slice", {"dim": 1, "start": 2}, ((2, 4, 3, 2),)),
    OpCase("slice", {"dim": -1, "start": 1, "end": 4, "step": 2}, (TOKENS,)),
    OpCase("mean", {"dim": [2, 3], "keepdim": True}, ((2, 3, 2, 4),)),
    OpCase("mean", {"dim": [1]}, (TOKENS,)),
    OpCase("channel_shuffle", {"groups": 2}, ((2, 4, 2, 3),)),
    OpCase("parameter", {"shape": [1, 3, 4], "batch_axis": True}, ()),
    OpCase("parameter", {"shape": [4, 1, 1]}, ()),
    OpCase("stochastic_depth", {"p": 0.5}, ((6, 5, 4),), seed=1, train=True),
    OpCase("layernorm", {"normalized_shape": 4}, (TOKENS,)),
    OpCase("layernorm", {"normalized_shape": [3, 4], "eps": 1e-3}, ((2, 2, 3, 4),)),
    OpCase("layernorm2d", {"normalized_shape": 3}, ((2, 3, 2, 4),)),
    OpCase("matmul", {}, ((2, 2, 3, 4), (2, 1, 4, 5))),
    OpCase("multihead_attention", {"embed_dim": 4, "num_heads": 2}, ((2, 3, 4),)),
    OpCase("multihead_attention", {"embed_dim": 6, "num_heads": 3, "causal": True},
           ((2, 5, 6),)),
    OpCase("multihead_attention", {"embed_dim": 4, "num_heads": 2},
           ((2, 2, 4), (2, 3, 4), (2, 3, 4))),
]

# (op, params, input shapes, output shape, trainable params, forward FLOPs per sample)
OP_CASES = [
    ("linear", {"out_features": 3072}, [(197, 768)], (197, 3072),
     768 * 3072 + 3072, 197 * (2 * 768 + 1) * 3072),
    ("softmax", {"dim": -1}, [(12, 197, 197)], (12, 197, 197), 0, 5 * 12 * 197 * 197),
    ("concat", {"dim": 1}, [(1, 768), (196, 768)], (197, 768), 0, 0),
    ("flatten", {"start_dim": 2}, [(768, 14, 14)], (768, 196), 0, 0),
    ("reshape", {"shape": [2, 58, -1]}, [(116, 28, 28)], (2, 58, 784), 0, 0),
    ("permute", {"dims": [0, 2, 3, 1]}, [(96, 56, 56)], (56, 56, 96), 0, 0),
    ("transpose", {"dim0": 1, "dim1": 2}, [(768, 196)], (196, 768), 0, 0),
    ("select", {"dim": 1, "index": 0}, [(197, 768)], (768,), 0, 0),
    ("slice", {"dim": 1, "start": 58}, [(116, 28, 28)], (58, 28, 28), 0, 0),
    ("mean", {"dim": [2, 3], "keepdim": True}, [(96, 7, 7)], (96, 1, 1), 0, 96 * 49),
    ("channel_shuffle", {"groups": 2}, [(116, 28, 28)], (116, 28, 28), 0, 0),
    ("parameter", {"shape": [1, 197, 768], "batch_axis": True}, [], (197, 768), 197 * 768,
     0),
    ("parameter", {"shape": [96, 1, 1], "value": 1e-6}, [], (96, 1, 1), 96, 0),
    ("layernorm", {"normalized_shape": 768}, [(197, 768)], (197, 768), 2 * 768,
     7 * 197 * 768),
    ("layernorm2d", {"normalized_shape": 96}, [(96, 56, 56)], (96, 56, 56), 2 * 96,
     7 * 96 * 56 * 56),
    ("matmul", {}, [(12, 197, 64), (12, 64, 197)], (12, 197, 197), 0,
     2 * 12 * 197 * 197 * 64),
    ("multihead_attention", {"embed_dim": 768, "num_heads": 12}, [(197, 768)], (197, 768),
     4 * 768 * 768 + 4 * 768,
     3 * 197 * (2 * 768 + 1) * 768 + 4 * 197 * 197 * 768 + 5 * 12 * 197 * 197
     + 197 * (2 * 768 + 1) * 768),
]

# (op, params, input shapes, the message after "node 'x' (op): ")
SHAPE_ERRORS = [
    ("reshape", {"shape": [5, 5]}, [(16, 5, 5)],
     "cannot reshape (16, 5, 5) (400 values) to (5, 5) (25 values); the sizes must multiply "
     "to 400"),
    ("reshape", {"shape": [3, -1]}, [(16, 5, 5)],
     "cannot reshape (16, 5, 5) (400 values) to (3, -1): 400 is not a multiple of the 3 the "
     "other sizes hold"),
    ("permute", {"dims": [0, 1, 1]}, [(197, 768)],
     "input shape (197, 768): dims [0, 1, 1] is not a permutation of the axes 0 to 2 of the "
     "input (N, 197, 768); name each axis exactly once"),
    ("permute", {"dims": [1, 0, 2]}, [(197, 768)],
     "input shape (197, 768): dims [1, 0, 2] moves the batch axis 0; keep 0 first, the other "
     "axes are per sample"),
    ("permute", {"dims": [0, 2, 1]}, [(96, 56, 56)],
     "input shape (96, 56, 56): dims [0, 2, 1] has 3 entries; the input (N, 96, 56, 56) has 4 "
     "axes, the batch's included, and dims must name each once"),
    ("transpose", {"dim0": 0, "dim1": 1}, [(197, 768)],
     "input shape (197, 768): dim0 0 is the batch axis of the input (N, 197, 768); use a dim "
     "from 1 to 2 (or -2 to -1)"),
    ("select", {"dim": 1, "index": 197}, [(197, 768)],
     "index 197 is out of range for dim 1 of size 197 (input (197, 768)); use -197 to 196"),
    ("slice", {"dim": 1, "start": 8, "end": 4}, [(16, 5, 5)],
     "slice 8:4 of dim 1 (size 16, input (16, 5, 5)) keeps nothing; it needs start < end "
     "within 0 to 16"),
    ("mean", {"dim": [1, -2]}, [(197, 768)],
     "input shape (197, 768): dim [1, -2] names an axis of the input (N, 197, 768) twice; "
     "name each once"),
    ("softmax", {"dim": 3}, [(197, 768)],
     "input shape (197, 768): dim 3 is out of range for the input (N, 197, 768); use a dim "
     "from 1 to 2 (or -2 to -1)"),
    ("channel_shuffle", {"groups": 3}, [(116, 28, 28)],
     "116 channels (input (116, 28, 28)) do not split into 3 equal groups; use a groups that "
     "divides 116"),
    ("flatten", {"start_dim": 3, "end_dim": 2}, [(96, 7, 7)],
     "start_dim 3 comes after end_dim 2 for an input of shape (96, 7, 7); swap them"),
    ("multihead_attention", {"embed_dim": 512, "num_heads": 8}, [(197, 768)],
     "input has shape (197, 768); embed_dim 512 does not match its last axis 768"),
    ("multihead_attention", {"embed_dim": 768, "num_heads": 12}, [(768, 14, 14)],
     "input has shape (768, 14, 14); multihead_attention takes tokens (T, D) per sample, "
     "reshape or flatten it to two axes first"),
    ("layernorm", {"normalized_shape": 512}, [(197, 768)],
     "input has shape (197, 768); normalized_shape (512,) does not match its last axis "
     "(768,)"),
    ("layernorm2d", {"normalized_shape": 96}, [(197, 768)],
     "layernorm2d input must be 3-D per sample, got shape (197, 768); it takes an image "
     "(C, H, W): reshape, flatten or permute the value first"),
    ("matmul", {}, [(12, 197, 64), (64, 197)],
     "inputs have shapes (12, 197, 64) and (64, 197); matmul needs as many axes in both "
     "(PyTorch would broadcast the batch axis against a per-sample one); reshape the shorter "
     "with leading axes of size 1"),
    ("matmul", {}, [(12, 197, 64), (12, 197, 64)],
     "inputs have shapes (12, 197, 64) and (12, 197, 64); the first's last axis 64 must "
     "equal the second's next-to-last 197"),
]

# every tensor op in one network, with a class token and a position embedding as ViT's and a
# channel split and shuffle as ShuffleNet's (``tests/test_parity_torch.py`` runs it in torch)
EVERY_TENSOR_OP = """
[nodes.image]
op = "input"
shape = [4, 3, 2]

[nodes.flat]
op = "flatten"
start_dim = 2

[nodes.tokens]
op = "transpose"
dim0 = 1
dim1 = 2

[nodes.class_token]
op = "parameter"
shape = [1, 1, 4]
batch_axis = true
init = "normal"
init_scale = 0.5

[nodes.joined]
op = "concat"
inputs = ["class_token", "tokens"]
dim = 1

[nodes.pos_embedding]
op = "parameter"
shape = [7, 4]
init = "normal"
init_scale = 0.5

[nodes.embedded]
op = "add"
inputs = ["joined", "pos_embedding"]

[nodes.norm]
op = "layernorm"
normalized_shape = 4

[nodes.attn]
op = "multihead_attention"
embed_dim = 4
num_heads = 2
causal = true

[nodes.fc]
op = "linear"
out_features = 4

[nodes.keys]
op = "transpose"
dim0 = -1
dim1 = -2

[nodes.scores]
op = "matmul"
inputs = ["fc", "keys"]

[nodes.attention]
op = "softmax"
dim = -1

[nodes.first]
op = "select"
dim = 1
index = 0

[nodes.image_norm]
op = "layernorm2d"
inputs = "image"
normalized_shape = 4

[nodes.shuffled]
op = "channel_shuffle"
groups = 2

[nodes.half]
op = "slice"
dim = 1
start = 2

[nodes.channels_last]
op = "permute"
dims = [0, 2, 3, 1]

[nodes.pooled]
op = "mean"
dim = [1, 2]

[nodes.rows]
op = "reshape"
inputs = "fc"
shape = [4, -1]

[nodes.row_means]
op = "mean"
dim = [-1]

[nodes.features]
op = "concat"
inputs = ["first", "pooled", "row_means"]
dim = -1

[nodes.head]
op = "linear"
out_features = 5
"""
