"""Tensors of any rank beyond the shared tables (tests/tensor_cases.py): the harness catches a
broken backward of each new op (negative controls), a learned tensor's key is its path, an image
refuses linear while a permuted one does not, and the PyTorch export of the tensor ops equals
netspec in float64."""

from __future__ import annotations

import numpy as np
import pytest
from layer_harness import (
    ForwardMismatch,
    GradientMismatch,
    OpCase,
    build_network,
    build_op,
    check_gradients,
    make_tensors,
    run_layer_test,
    run_op,
)
from tensor_cases import EVERY_TENSOR_OP

from netspec.common.errors import SpecError
from netspec.lang.spec import parse_spec
from netspec.ops import REGISTRY
from netspec.plan.compiler import compile_plan


def _scaled(backward):
    """A backward whose every gradient is 10% too large."""
    def broken(self, cache, dy):
        dxs, grads = backward(self, cache, dy)
        return [None if dx is None else 1.1 * dx for dx in dxs], \
            {name: 1.1 * value for name, value in grads.items()}
    return broken


def _transposed(backward):
    """A backward that hands back its gradient with the last two axes swapped (a permute or
    transpose that forgets to undo itself, on a square shape so the shapes still agree)."""
    def broken(self, cache, dy):
        dxs, grads = backward(self, cache, dy)
        return [dx.swapaxes(-1, -2) for dx in dxs], grads
    return broken


NEGATIVE_CONTROLS = [
    (OpCase("permute", {"dims": [0, 1, 3, 2]}, ((2, 3, 3, 3),)), _transposed),
    (OpCase("transpose", {"dim0": 2, "dim1": 3}, ((2, 2, 3, 3),)), _transposed),
    (OpCase("reshape", {"shape": [3, 3]}, ((2, 9),)), _scaled),
    (OpCase("select", {"dim": 1, "index": 1}, ((2, 3, 4),)), _scaled),
    (OpCase("slice", {"dim": 1, "start": 1}, ((2, 3, 4),)), _scaled),
    (OpCase("mean", {"dim": [1]}, ((2, 3, 4),)), _scaled),
    (OpCase("channel_shuffle", {"groups": 2}, ((2, 4, 3),)), _scaled),
    (OpCase("parameter", {"shape": [1, 2, 3], "batch_axis": True}, ()), _scaled),
    (OpCase("linear", {"out_features": 2}, ((2, 3, 4),)), _scaled),
    (OpCase("softmax", {"dim": -1}, ((2, 3, 4),)), _scaled),
    (OpCase("flatten", {"start_dim": 2}, ((2, 3, 2, 2),)), _scaled),
    (OpCase("layernorm", {"normalized_shape": 4}, ((2, 3, 4),)), _scaled),
    (OpCase("layernorm2d", {"normalized_shape": 3}, ((2, 3, 2, 2),)), _scaled),
    (OpCase("matmul", {}, ((2, 3, 3), (2, 3, 3))), _transposed),
    (OpCase("multihead_attention", {"embed_dim": 4, "num_heads": 2}, ((2, 3, 4),)), _scaled),
    (OpCase("multihead_attention", {"embed_dim": 4, "num_heads": 2}, ((2, 4, 4),)),
     _transposed),
    (OpCase("multihead_attention", {"embed_dim": 4, "num_heads": 2, "causal": True},
            ((2, 4, 4),)), _transposed),
    (OpCase("multihead_attention", {"embed_dim": 4, "num_heads": 2},
            ((2, 2, 4), (2, 3, 4), (2, 3, 4))), _scaled),
    (OpCase("log_softmax", {"dim": 1}, ((2, 3, 4),)), _scaled),
    (OpCase("concat", {"dim": -1}, ((2, 3, 2), (2, 3, 4))), _scaled),
    (OpCase("concat", {"dim": 1}, ((2, 1, 4), (2, 3, 4))), _scaled),
]


@pytest.mark.parametrize(("case", "sabotage"), NEGATIVE_CONTROLS,
                         ids=[case.id for case, _ in NEGATIVE_CONTROLS])
def test_the_harness_catches_a_broken_backward(monkeypatch, case, sabotage) -> None:
    run_layer_test(case)  # the real op passes
    op_class = REGISTRY[case.op]
    monkeypatch.setattr(op_class, "backward", sabotage(op_class.backward))
    with pytest.raises(GradientMismatch):
        run_layer_test(case)


def test_the_harness_catches_an_attention_that_forgets_its_causal_mask(monkeypatch) -> None:
    case = OpCase("multihead_attention", {"embed_dim": 4, "num_heads": 2, "causal": True},
                  ((2, 4, 4),))
    run_layer_test(case)
    op_class = REGISTRY[case.op]
    forward = op_class.forward

    def unmasked(self, xs, params, buffers, ctx):
        unmasked_op = op_class(self.p.model_copy(update={"causal": False}))
        return forward(unmasked_op, xs, params, buffers, ctx)

    monkeypatch.setattr(op_class, "forward", unmasked)
    with pytest.raises(ForwardMismatch):
        run_layer_test(case)


# attention dropout: the harness's naive reference has no mask to follow, so the dropped
# weights are checked here, by finite differences with the seeded mask and against PyTorch's
# own nn.MultiheadAttention multiplying by netspec's mask
DROPPED = OpCase("multihead_attention", {"embed_dim": 6, "num_heads": 3, "dropout": 0.4,
                                         "causal": True}, ((3, 5, 6),), seed=2, train=True)


def _attention_with_mask(case: OpCase):
    op = build_op(case.op, case.params)
    xs, params, _ = make_tensors(op, case, distinct=False)
    y, cache, _ = run_op(op, xs, params, {}, case.train, case.seed)
    mask = cache[6]  # the weights' dropout mask, scaled by 1 / (1 - p)
    return op, xs, params, y, cache, mask


def test_attention_dropout_drops_weights_in_training_only() -> None:
    op, xs, params, y, _, mask = _attention_with_mask(DROPPED)
    keep = 1.0 - DROPPED.params["dropout"]
    assert mask.shape == (3, 3, 5, 5)
    assert set(np.unique(mask)) == {0.0, 1.0 / keep}
    assert 0.45 < float((mask > 0).mean()) < 0.75
    again = run_op(op, xs, params, {}, True, DROPPED.seed)[0]
    np.testing.assert_array_equal(y, again)  # one seed, one mask
    assert not np.allclose(y, run_op(op, xs, params, {}, True, DROPPED.seed + 1)[0])
    no_dropout = build_op("multihead_attention", {**DROPPED.params, "dropout": 0.0})
    inference = run_op(op, xs, params, {}, False, DROPPED.seed)[0]
    np.testing.assert_array_equal(inference, run_op(no_dropout, xs, params, {}, False, 0)[0])
    assert not np.allclose(y, inference)


def test_attention_dropout_gradients_equal_finite_differences() -> None:
    op = build_op(DROPPED.op, DROPPED.params)
    xs, params, _ = make_tensors(op, DROPPED)
    report = check_gradients(op, xs, params, {}, True, DROPPED.seed)
    assert report.passed, report.errors


@pytest.mark.parametrize("case", [
    DROPPED,
    OpCase("multihead_attention", {"embed_dim": 4, "num_heads": 2, "dropout": 0.5},
           ((2, 3, 4),), seed=5, train=True),
], ids=["causal", "plain"])
def test_attention_dropout_equals_pytorch_with_the_same_mask(monkeypatch, case) -> None:
    torch = pytest.importorskip("torch")
    op, xs, params, y, cache, mask = _attention_with_mask(case)
    dy = np.random.default_rng(case.seed + 1).normal(size=y.shape)
    dxs, grads = op.backward(cache, dy)

    embed, heads = case.params["embed_dim"], case.params["num_heads"]
    module = torch.nn.MultiheadAttention(embed, heads, dropout=case.params["dropout"],
                                         batch_first=True).double()
    module.load_state_dict({key: torch.from_numpy(value) for key, value in params.items()})
    module.train()
    # torch draws its own mask: multiply by netspec's instead, (N, heads, T, S) as torch's
    # (N * heads, T, S) attention weights are laid out
    theirs = torch.from_numpy(mask.reshape(-1, *mask.shape[2:]))
    monkeypatch.setattr(torch.nn.functional, "dropout", lambda weights, p: weights * theirs)
    x = torch.tensor(xs[0], requires_grad=True)
    tokens = x.shape[1]
    causal = (torch.triu(torch.ones(tokens, tokens, dtype=torch.bool), 1)
              if case.params.get("causal") else None)
    out, _ = module(x, x, x, need_weights=True, attn_mask=causal)
    out.backward(torch.from_numpy(dy))

    def error(ours, reference) -> float:
        reference = reference.detach().numpy()
        return float(np.abs(ours - reference).max() / np.abs(reference).max())

    assert error(y, out) < 1e-12
    assert error(dxs[0], x.grad) < 1e-12
    for key, parameter in module.named_parameters():
        assert error(grads[key], parameter.grad) < 1e-12, key


BLOCKED_TENSOR = """
[nodes.image]
op = "input"
shape = [4, 2, 3]

[blocks.encoder]
[blocks.encoder.nodes.tokens]
op = "flatten"
start_dim = 2

[blocks.encoder.nodes.pos_embedding]
op = "parameter"
shape = [1, 4, 6]
batch_axis = true
init = "normal"
init_scale = 0.02

[blocks.encoder.nodes.sum]
op = "add"
inputs = ["tokens", "pos_embedding"]

[nodes.encoder]
block = "encoder"
inputs = "image"

[nodes.class_token]
op = "parameter"
shape = [1, 1, 6]
batch_axis = true

[nodes.joined]
op = "concat"
inputs = ["class_token", "encoder"]
"""


def test_a_learned_tensor_is_keyed_by_its_path() -> None:
    net = build_network(BLOCKED_TENSOR, seed=0)
    assert set(net.params) == {"class_token", "encoder.pos_embedding"}
    assert net.params["class_token"].shape == (1, 1, 6)
    assert not net.params["class_token"].any()  # zeros by default
    assert 0.01 < float(net.params["encoder.pos_embedding"].std()) < 0.03
    assert net.plan.nodes["joined"].shape == (5, 6)
    x = np.random.default_rng(0).normal(size=(3, 4, 2, 3))
    y = net.forward(x, train=True)
    net.backward(np.ones_like(y))
    # every sample adds its gradient into the one shared tensor
    assert np.allclose(net.grads["class_token"], 3.0)
    assert np.allclose(net.grads["encoder.pos_embedding"], 3.0)


def test_a_fixed_learned_tensor_does_not_train() -> None:
    net = build_network(BLOCKED_TENSOR.replace('shape = [1, 1, 6]\nbatch_axis = true',
                                               'shape = [1, 1, 6]\nbatch_axis = true\n'
                                               'trainable = false\nvalue = 0.5'))
    assert "class_token" not in net.trainable and np.all(net.params["class_token"] == 0.5)


IMAGE_THEN = """
[nodes.image]
op = "input"
shape = [3, 4, 5]

[nodes.conv]
op = "conv2d"
out_channels = 6
kernel_size = 1
{between}
[nodes.fc]
op = "linear"
out_features = 2
"""


def test_linear_refuses_an_image_and_takes_a_permuted_one() -> None:
    with pytest.raises(SpecError) as caught:
        compile_plan(parse_spec(IMAGE_THEN.format(between=""), file="net.toml"))
    assert str(caught.value.diagnostics[0]) == (
        "net.toml:11: node 'fc' (linear): input has shape (6, 4, 5), an image (C, H, W); "
        "linear acts on the last axis only; add a flatten node before it (or a permute that "
        "puts the channels last, to act on them)")
    permuted = IMAGE_THEN.format(between='\n[nodes.last]\nop = "permute"\n'
                                         'dims = [0, 2, 3, 1]\n')
    plan = compile_plan(parse_spec(permuted, file="net.toml"))
    assert plan.nodes["fc"].shape == (4, 5, 2)
    assert plan.nodes["fc"].flops == 4 * 5 * (2 * 6 + 1) * 2


def test_the_input_takes_any_rank() -> None:
    for shape in ([7], [5, 4], [3, 4, 5], [2, 3, 4, 5], [1, 1, 2, 1, 3]):
        text = f'[nodes.x]\nop = "input"\nshape = {shape}\n'
        assert compile_plan(parse_spec(text)).nodes["x"].shape == tuple(shape)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_the_torch_module_of_the_tensor_ops_equals_netspec(train: bool) -> None:
    pytest.importorskip("torch")
    from torch_helpers import compare_with_netspec

    from netspec.interchange.torch_module import generate_source
    from netspec.interchange.torch_runtime import PlanModule, load_arrays

    net = build_network(EVERY_TENSOR_OP)
    assert {"parameter", "reshape", "permute", "transpose", "select", "slice", "mean",
            "channel_shuffle"} <= {n.op_name for n in net.plan.nodes.values()}
    model = PlanModule(net.plan).double()
    load_arrays(model, net.state())
    errors = compare_with_netspec(net, model, train, lambda masks: None)
    assert max(errors.values()) < 1e-9, errors
    source = generate_source(net.plan)
    assert "torch.permute(" in source and "torch.slice_copy(" in source
    assert "nn.Parameter(" in source


def test_the_onnx_export_of_the_tensor_ops_equals_onnxruntime() -> None:
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from netspec.interchange.onnx_export import check_exported, export_onnx

    net = build_network(EVERY_TENSOR_OP, dtype="float32")
    assert {"parameter", "reshape", "permute", "transpose", "select", "slice", "mean",
            "channel_shuffle"} <= {n.op_name for n in net.plan.nodes.values()}
    model = export_onnx(net.plan, net.state())
    check_exported(model)
    x = np.random.default_rng(0).normal(size=(3, 4, 3, 2)).astype(np.float32)
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {"image": x})
    ours = net.forward(x)
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


def test_the_onnx_import_reads_the_tensor_ops_back() -> None:
    """netspec's export of every tensor op (attention decomposed into MatMul, Reshape,
    Transpose, Mul, Softmax; the class token an Expand; the position embedding an Add of a
    weight) imports back to a spec whose outputs equal onnxruntime's."""
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from netspec.interchange.onnx_export import export_onnx
    from netspec.interchange.onnx_import import translate

    net = build_network(EVERY_TENSOR_OP.replace("causal = true", "causal = false"),
                        dtype="float32")
    model = export_onnx(net.plan, net.state())
    imported = translate(model)
    ops = {node.op_name for node in imported.plan.nodes.values()}
    assert {"parameter", "matmul", "permute", "layernorm", "select", "slice", "mean",
            "reshape", "softmax", "linear"} <= ops
    x = np.random.default_rng(0).normal(size=(3, 4, 3, 2)).astype(np.float32)
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {"image": x})
    assert np.abs(imported.network.forward(x) - theirs).max() <= 1e-5 * np.abs(theirs).max()


# each bad value of the tensor ops with the exact message `netspec compile` prints, as
# docs/bad_inputs.md lists it ("Fields of the tensor ops")
TENSOR_OP_FIELDS = [
    ([16, 5, 5], 'op = "reshape"\nshape = [5, 5]'),
    ([16, 5, 5], 'op = "reshape"\nshape = [3, -1]'),
    ([16, 5, 5], 'op = "reshape"\nshape = [-1, -1]'),
    ([197, 768], 'op = "permute"\ndims = [0, 1, 1]'),
    ([197, 768], 'op = "permute"\ndims = [1, 0, 2]'),
    ([197, 768], 'op = "transpose"\ndim0 = 0\ndim1 = 1'),
    ([197, 768], 'op = "select"\ndim = 1\nindex = 197'),
    ([16, 5, 5], 'op = "slice"\ndim = 1\nstart = 8\nend = 4'),
    ([197, 768], 'op = "mean"\ndim = [1, -2]'),
    ([768], 'op = "mean"\ndim = [1]'),
    ([197, 768], 'op = "softmax"\ndim = 3'),
    ([116, 28, 28], 'op = "channel_shuffle"\ngroups = 3'),
    ([96, 7, 7], 'op = "flatten"\nstart_dim = 3\nend_dim = 2'),
    ([197, 768], 'op = "concat"\ninputs = ["x", "x"]\ndim = 0'),
    ([197, 768], 'op = "parameter"\nshape = [2, 768]\nbatch_axis = true'),
    ([197, 768], 'op = "multihead_attention"\nembed_dim = 512\nnum_heads = 8'),
    ([197, 768], 'op = "multihead_attention"\nembed_dim = 768\nnum_heads = 5'),
    ([768, 14, 14], 'op = "multihead_attention"\nembed_dim = 768\nnum_heads = 12'),
    ([197, 768], 'op = "layernorm"\nnormalized_shape = 512'),
    ([197, 768], 'op = "layernorm2d"\nnormalized_shape = 768'),
    ([12, 197, 64], 'op = "matmul"\ninputs = ["x", "x"]'),
    ([96, 56, 56], 'op = "linear"\nout_features = 384'),
    # audit of issue 25: the any-axis and arity cases
    ([197, 768], 'op = "log_softmax"\ndim = 0'),
    ([197, 768], 'op = "layernorm"\nnormalized_shape = [197, 512]'),
    ([197, 768], 'op = "select"\ndim = -3\nindex = 0'),
    ([197, 768], 'op = "matmul"\ninputs = ["x", "x", "x"]'),
    ([197, 768], 'op = "multihead_attention"\nembed_dim = 768\nnum_heads = 12\n'
                 'inputs = ["x", "x"]'),
    ([197, 768], 'op = "multihead_attention"\nembed_dim = 768\nnum_heads = 12\n'
                 'inputs = ["x", "x", "x", "x"]'),
    ([197, 768], 'op = "multihead_attention"\nembed_dim = 768\nnum_heads = 12\ndropout = 1.0'),
    ([197, 768], 'op = "parameter"\nshape = [1, 768]\ninputs = "x"'),
    ([197, 768], 'op = "reshape"\nshape = [0, 768]'),
    ([197, 768], 'op = "permute"\ndims = [0, 1, 5]'),
    ([197, 768], 'op = "channel_shuffle"\ngroups = 2'),
    ([197, 768], 'op = "conv2d"\nout_channels = 8\nkernel_size = 3'),
    ([197, 768], 'op = "parameter"\nshape = [197, 768]'),
    # a second node z, after y, makes the other shape y reads
    ([197, 768], 'op = "concat"\ninputs = ["x", "z"]\ndim = 1\n[nodes.z]\nop = "slice"\n'
                 'inputs = "x"\ndim = 2\nstart = 0\nend = 512'),
    ([197, 768], 'op = "concat"\ninputs = ["x", "z"]\ndim = 1\n[nodes.z]\nop = "select"\n'
                 'inputs = "x"\ndim = 2\nindex = 0'),
    ([196, 768], 'op = "concat"\ninputs = ["z", "x"]\ndim = 1\n[nodes.z]\n'
                 'op = "parameter"\nshape = [1, 1, 512]\nbatch_axis = true'),
    ([197, 768], 'op = "multihead_attention"\nembed_dim = 768\nnum_heads = 12\n'
                 'inputs = ["x", "z", "z"]\n[nodes.z]\nop = "transpose"\ninputs = "x"\n'
                 'dim0 = 1\ndim1 = 2'),
    ([12, 197, 64], 'op = "matmul"\ninputs = ["x", "z"]\n[nodes.z]\nop = "reshape"\n'
                    'inputs = "x"\nshape = [197, 768]'),
]


def _compile_error(shape: list[int], node: str, tmp_path, monkeypatch, capsys) -> str:
    from netspec.cli import main

    (tmp_path / "net.toml").write_text(f'[nodes.x]\nop = "input"\nshape = {shape}\n\n'
                                       f'[nodes.y]\n{node}\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code = main(["compile", "net.toml"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize(("shape", "node"), TENSOR_OP_FIELDS,
                         ids=[node.replace("\n", "; ")[:50] for _, node in TENSOR_OP_FIELDS])
def test_bad_fields_of_the_tensor_ops_are_in_the_docs_as_printed(shape, node, tmp_path,
                                                                 monkeypatch, capsys) -> None:
    from pathlib import Path

    message = _compile_error(shape, node, tmp_path, monkeypatch, capsys)
    docs = (Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md").read_text(
        encoding="utf-8")
    row = f"| {shape}, `{node.replace(chr(10), '; ')}` | 1 | {message} |"
    assert row in docs, row


def test_the_language_server_shows_token_shapes_and_a_learned_tensor_by_its_key(
        tmp_path) -> None:
    from netspec.editor.features import analyse, hover

    text = BLOCKED_TENSOR + '\n[nodes.attn]\nop = "multihead_attention"\nembed_dim = 6\n' \
        'num_heads = 2\n'
    analysis = analyse(text, tmp_path / "net.toml")
    lines = text.splitlines()
    shown = hover(analysis, lines.index("[nodes.attn]"), 8)
    assert "**attn** · `multihead_attention`" in shown and "output `(5, 6)` per sample" in shown
    assert "`in_proj_weight` (18, 6)" in shown and "`out_proj.weight` (6, 6)" in shown
    token = hover(analysis, lines.index("[nodes.class_token]"), 8)
    assert "output `(1, 6)` per sample" in token and "`class_token` (1, 1, 6)" in token


def test_diagrams_label_the_tensor_ops_with_their_dims_and_shapes() -> None:
    from netspec.pictures import node_label

    plan = build_network(EVERY_TENSOR_OP).plan
    assert node_label(plan.nodes["class_token"]).lines == (
        "class_token", "parameter", "tensor (1, 1, 4)", "out (1, 4)", "4 params")
    assert node_label(plan.nodes["keys"]).lines[2] == "dim0 -1 · dim1 -2"
    assert node_label(plan.nodes["attn"]).lines[2:4] == ("num_heads 2", "out (7, 4)")


def _rank_section() -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "spec_language.md").read_text(
        encoding="utf-8")
    return text.split("### Values of any rank", 1)[1].split("\n## ", 1)[0]


def test_the_language_docs_state_the_ranks_of_every_op() -> None:
    """docs/spec_language.md's table says what each op takes and gives: a new op adds a row."""
    import re

    section = _rank_section()
    listed = {name for row in section.splitlines() if row.startswith("| `")
              for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert listed == set(REGISTRY)


def test_the_language_docs_vit_stem_has_the_shapes_it_states() -> None:
    import re

    snippet = _rank_section().split("```toml\n", 1)[1].split("```", 1)[0]
    plan = compile_plan(parse_spec('[nodes]\nx = { op = "input", shape = [3, 224, 224] }\n'
                                   + snippet, file="stem.toml"))
    for line in snippet.splitlines():
        stated = re.match(r"(\w+) = .*# (\(.*\))$", line)
        if stated:
            assert str(plan.nodes[stated[1]].shape) == stated[2], line
    assert plan.nodes["tokens"].shape == (197, 768)
