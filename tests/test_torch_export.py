"""``netspec export -o model.py``: the generated PyTorch module equals netspec in float64 (eval
and train mode, loaded strictly from model.pt), hostile names stay data, and .pt files come
back in as weights with every mismatch named."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netspec.common.errors import NetspecError, WeightsError
from netspec.lang.spec import parse_spec, shipped_architectures
from netspec.ops import REGISTRY
from netspec.plan.compiler import Plan, compile_plan
from netspec.runtime.executor import Network
from netspec.weights.checkpoint import load_weights, save_checkpoint

torch = pytest.importorskip("torch")

from layer_harness import affordable_architectures  # noqa: E402
from torch_helpers import (  # noqa: E402 - after importorskip
    MaskedDropout,
    compare_with_netspec,
    import_file,
    relative_error,
    toml_string,
)

from netspec.common.extras import install_line  # noqa: E402
from netspec.interchange.torch_classes import class_name  # noqa: E402
from netspec.interchange.torch_module import export_pytorch, generate_source  # noqa: E402
from netspec.interchange.torch_ops import (  # noqa: E402
    TORCH_FORMS,
    TORCH_REFUSED,
)
from netspec.interchange.torch_runtime import PlanModule, load_arrays  # noqa: E402

TOLERANCE = 1e-9
# PyTorch's hardsigmoid backward multiplies by 1/6 as a float32 constant even in float64
# (0.1666666716..., 3e-8 off): gradients through it agree to that rounding, not to float64's
ROUNDED_IN_TORCH = {"hardsigmoid"}


def tolerance(plan: Plan) -> float:
    ops = {node.op_name for node in plan.nodes.values()}
    return 1e-7 if ops & ROUNDED_IN_TORCH else TOLERANCE
REPO = Path(__file__).resolve().parents[1]

# every op, two inputs, dotted ids, concat on two axes, a frozen layer, 1-D batchnorm
EVERY_OP = """
[network]
name = "every-op net"
description = "branches of every op"

[nodes.image]
op = "input"
shape = [2, 12, 12]

[nodes.aux]
op = "input"
shape = [5]

[nodes."stem.conv"]
op = "conv2d"
inputs = "image"
out_channels = 4
kernel_size = 3
padding = 1

[nodes."stem.bn"]
op = "batchnorm"

[nodes.act]
op = "leaky_relu"
negative_slope = 0.1

[nodes.avg]
op = "avgpool2d"
kernel_size = 3
stride = 2
padding = 1

[nodes.max]
op = "maxpool2d"
inputs = "act"
kernel_size = 2

[nodes.sum]
op = "add"
inputs = ["avg", "max", "avg"]

[nodes.cat]
op = "concat"
inputs = ["sum", "avg"]

[nodes.wide]
op = "concat"
inputs = ["sum", "max"]
axis = 2

[nodes.t]
op = "tanh"

[nodes.gap]
op = "global_avgpool"

[nodes.frozen]
op = "conv2d"
inputs = "cat"
out_channels = 3
kernel_size = 1
bias = false
trainable = false

[nodes.sig]
op = "sigmoid"

[nodes.flat]
op = "flatten"

[nodes.joined]
op = "concat"
inputs = ["flat", "gap", "aux"]

[nodes."head.fc1"]
op = "linear"
out_features = 16

[nodes."head.bn"]
op = "batchnorm"

[nodes.relu]
op = "relu"

[nodes.drop]
op = "dropout"
p = 0.3

[nodes."head.fc2"]
op = "linear"
out_features = 10

[nodes.probs]
op = "softmax"
"""


# blocks nested three deep, two entries, a repeat inside a block, a conditional node that
# changes another node's input, and a setting that differs between instances
NESTED = """[network]
name = "nested blocks"

[blocks.unit]
args = ["width"]
defaults = { pool = false }

[blocks.unit.nodes]
conv = { op = "conv2d", out_channels = "= width", kernel_size = 3, padding = 1 }
down = { if = "= pool", op = "maxpool2d", kernel_size = 2 }
act = { op = "relu", inputs = "= 'down' if pool else 'conv'" }

[blocks.pair]
args = ["width"]
inputs = ["a", "b"]

[blocks.pair.nodes]
left = { block = "unit", inputs = "a", width = "= width" }
right = { block = "unit", inputs = "b", width = "= width" }
sum = { op = "add", inputs = ["left", "right"] }
chain = { block = "unit", repeat = 2, width = "= width", pool = "= index == 1" }

[nodes]
image = { op = "input", shape = [2, 8, 8] }
stem = { op = "conv2d", out_channels = 3, kernel_size = 1 }
p1 = { block = "pair", inputs = ["stem", "image"], width = 2 }
pooled = { op = "maxpool2d", inputs = "image", kernel_size = 2 }
p2 = { block = "pair", inputs = ["p1", "pooled"], width = 5 }
gap = { op = "global_avgpool" }
fc = { op = "linear", out_features = 3 }
"""


# function settings that differ between instances: kept on the module
BLOCK_SETTINGS = """[blocks.down]
args = ["k"]
[blocks.down.nodes]
conv = { op = "conv2d", out_channels = 2, kernel_size = 1 }
pool = { op = "maxpool2d", kernel_size = "= k" }
drop = { op = "dropout", p = "= 0.1 * k" }
[nodes]
image = { op = "input", shape = [1, 12, 12] }
a = { block = "down", k = 2 }
b = { block = "down", k = 3 }
"""


def _plan(text: str, tmp_path: Path):
    return compile_plan(parse_spec(text, file="net.toml", directory=tmp_path))


def _trained_looking(plan, seed: int = 0) -> Network:
    """A float64 network whose batchnorm statistics are not the initial zeros and ones."""
    net = Network(plan, seed=seed, dtype="float64")
    rng = np.random.default_rng(seed + 1)
    for key, value in net.buffers.items():
        value[...] = rng.uniform(0.5, 1.5, value.shape) if key.endswith("var") else \
            rng.normal(0, 0.3, value.shape)
    return net


def _export(plan, net: Network, tmp_path: Path):
    """model.py and model.pt through the public path (a .npz in, export_pytorch out)."""
    weights = tmp_path / "weights.npz"
    save_checkpoint(weights, net, meta={"mean": 0.1, "std": 0.3})
    py_path, pt_path = export_pytorch(plan, tmp_path / "model.py", weights=weights)
    module = import_file(py_path)
    # the network's class (the others are its blocks'); float64 before loading, as
    # load_state_dict copies into the module's own dtype
    model = getattr(module, class_name(plan.name))().double()
    model.load_state_dict(torch.load(pt_path, weights_only=True), strict=True)
    return module, model


# The shipped networks carried to PyTorch here: the affordable ones (the 28x28 and 32x32
# networks, vit_mnist among them) and the two ImageNet ResNets. The other ImageNet networks are
# compared with torchvision's own modules, by key and by output
# (tests/test_torchvision_convnets.py, tests/test_zoo_torchvision.py,
# tests/test_transformer_zoo.py, and below for the exported ViT-B/16 and ConvNeXt-Tiny); in
# float64 here they would cost minutes each.
CARRIED = {path.stem for path in affordable_architectures()} | {"resnet18", "resnet34"}


def _carried_plans() -> dict[str, Plan]:
    return {path.stem: compile_plan(path) for path in shipped_architectures()
            if path.stem in CARRIED}


# learned tensors (op parameter) in a block class whose instances differ in size (a layer
# scale of shape (dim, 1, 1), as ConvNeXt's), in a repeat's Sequential, beside a module under
# one prefix ("head.fc" and "head.shift", frozen), at a name that is no Python identifier, with
# every initialiser family, and as the network's output's input through concat and add
LEARNED = """[network]
name = "learned tensors"

[blocks.scaled]
args = ["dim"]
[blocks.scaled.nodes]
layer_scale = { op = "parameter", shape = ["= dim", 1, 1], value = 0.5 }
conv = { op = "conv2d", inputs = "x", out_channels = "= dim", kernel_size = 1 }
scaled = { op = "mul", inputs = ["layer_scale", "conv"] }

[nodes]
image = { op = "input", shape = [2, 4, 4] }
features = { block = "scaled", repeat = 2, dim = "= 2 + index" }
grid = { op = "reshape", shape = [3, 16] }
tokens = { op = "permute", dims = [0, 2, 1] }
class_token = { op = "parameter", shape = [1, 1, 3], batch_axis = true, init = "normal", \
init_scale = 0.5 }
joined = { op = "concat", inputs = ["class_token", "tokens"], dim = 1 }
"pos-embedding" = { op = "parameter", shape = [17, 3], init = "he_uniform" }
embedded = { op = "add", inputs = ["joined", "pos-embedding"] }
first = { op = "select", dim = 1, index = 0 }
"head.fc" = { op = "linear", out_features = 4 }
"head.shift" = { op = "parameter", shape = [4], init = "uniform", init_scale = 0.3, \
trainable = false }
out = { op = "add", inputs = ["head.fc", "head.shift"] }
"""

# a block holding a learned tensor and no input to count the batch from: written flat
TOKEN_BLOCK = """[network]
name = "token block"

[blocks.token]
[blocks.token.nodes]
value = { op = "parameter", shape = [1, 1, 5], batch_axis = true, init = "glorot_normal" }

[nodes]
image = { op = "input", shape = [3, 5] }
extra = { block = "token" }
both = { op = "concat", inputs = ["extra", "image"], dim = 1 }
fc = { op = "linear", out_features = 2 }
"""


# a named instance whose path is inside a repeat's Sequential: written flat
NAMED_IN_REPEAT = NESTED.replace('chain = { block = "unit", repeat = 2,',
                                 'extra = { block = "unit", name = "chain.extra", width = 2 }\n'
                                 'chain = { block = "unit", repeat = 2,')


def test_learned_tensors_are_parameters_at_their_paths(tmp_path):
    source = generate_source(_plan(LEARNED, tmp_path))
    # in the block's class, the axis equal to the block argument is written as it
    assert "self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 0.5))" in source
    assert "layer_scale = self.layer_scale.expand(x.shape[0], -1, -1, -1)" in source
    assert "self.class_token = nn.Parameter(torch.empty((1, 1, 3)).normal_(0.0, 0.5))" in source
    assert "class_token = self.class_token.expand(image.shape[0], -1, -1)" in source
    # he_uniform on (17, 3): fan_in 3, bound sqrt(6 / 3), as netspec draws it
    assert ("self.register_parameter('pos-embedding', nn.Parameter(torch.empty((17, 3))"
            ".uniform_(-1.4142135623730951, 1.4142135623730951)))") in source
    assert "getattr(self, 'pos-embedding').expand(image.shape[0], -1, -1)" in source
    # a parameter beside a module in one container: an attribute of the ModuleDict
    assert "self.head['fc'] = nn.Linear(" in source
    assert ("self.head.shift = nn.Parameter(torch.empty((4,)).uniform_(-0.3, 0.3), "
            "requires_grad=False)") in source
    (tmp_path / "learned.py").write_text(source)
    model = import_file(tmp_path / "learned.py").LearnedTensors()
    assert not model.head.shift.requires_grad and model.class_token.requires_grad
    # a module's own parameters come before its children's, as in every torch module
    assert list(model.state_dict()) == [
        "class_token", "pos-embedding", "features.0.layer_scale", "features.0.conv.weight",
        "features.0.conv.bias", "features.1.layer_scale", "features.1.conv.weight",
        "features.1.conv.bias", "head.shift", "head.fc.weight", "head.fc.bias"]
    flat = generate_source(_plan(TOKEN_BLOCK, tmp_path))
    assert "Written as one class, not one per block: block 'token' holds a learned tensor " \
        "but takes no input to count the batch from" in flat
    assert "extra_value = self.extra.value.expand(image.shape[0], -1, -1)" in flat


HOSTILE_TENSOR_IDS = ['"); import os; os.system("touch PWNED"); ("', "t\u2028'''.x",
                      "__import__('os').system('touch PWNED')"]


def test_hostile_learned_tensor_ids_stay_data(tmp_path):
    lines = ["[nodes.image]", 'op = "input"', "shape = [3]"]
    previous = "image"
    for index, node_id in enumerate(HOSTILE_TENSOR_IDS):
        lines += [f"[nodes.{toml_string(node_id)}]", 'op = "parameter"', "shape = [3]",
                  'init = "normal"', f"[nodes.sum{index}]", 'op = "add"',
                  f"inputs = [{toml_string(previous)}, {toml_string(node_id)}]"]
        previous = f"sum{index}"
    plan = _plan("\n".join(lines) + "\n", tmp_path)
    net = _trained_looking(plan)
    module, model = _export(plan, net, tmp_path)
    source = (tmp_path / "model.py").read_text()
    tree = ast.parse(source)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "os" not in names and "__import__" not in names and source.isascii()
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    assert set(dict(model.named_parameters())) == set(HOSTILE_TENSOR_IDS)
    net64 = Network(plan, dtype="float64")
    load_weights(tmp_path / "weights.npz", net64)
    errors = compare_with_netspec(net64, model, True, lambda masks: None)
    assert max(errors.values()) < TOLERANCE, errors


def test_an_op_without_a_pytorch_form_is_refused_with_its_reason(monkeypatch):
    # every registered op has a form today: take the learned tensor's away, once with a
    # stated reason and once without any entry
    plan = compile_plan("vit_mnist")
    monkeypatch.delitem(TORCH_FORMS, "parameter")
    for reason, said in (("no nn.Parameter today", "no nn.Parameter today"),
                         (None, "no PyTorch form for this op")):
        if reason is None:
            monkeypatch.delitem(TORCH_REFUSED, "parameter")
        else:
            monkeypatch.setitem(TORCH_REFUSED, "parameter", reason)
        for build, verb in ((lambda: PlanModule(plan), "cannot run in PyTorch"),
                            (lambda: generate_source(plan), "cannot export to PyTorch")):
            with pytest.raises(NetspecError) as error:
                build()
            assert f"vit_mnist: {verb}: node 'class_token' (parameter): {said}" in \
                str(error.value)
            assert "node 'encoder.pos_embedding' (parameter)" in str(error.value)


def _shipped_and_test_plans(tmp_path: Path):
    plans = _carried_plans()
    plans["every-op"] = _plan(EVERY_OP, tmp_path)
    plans["learned"] = _plan(LEARNED, tmp_path)
    plans["token-block"] = _plan(TOKEN_BLOCK, tmp_path)
    plans["named-in-repeat"] = _plan(NAMED_IN_REPEAT, tmp_path)
    plans["nested"] = _plan(NESTED, tmp_path)
    plans["block-settings"] = _plan(BLOCK_SETTINGS, tmp_path)
    # one value feeding both entries of a block: written as one flat class
    plans["nested-flat"] = _plan(NESTED.replace('inputs = ["p1", "pooled"]',
                                                'inputs = ["p1", "p1"]').replace(
        "width = 5 }", "width = 2 }"), tmp_path)
    return plans


def test_blocks_become_nested_classes(tmp_path):
    source = generate_source(_plan(NESTED, tmp_path))
    tree = ast.parse(source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert list(classes) == ["Unit", "Pair", "NestedBlocks"]
    assert "self.p1 = Pair(left_conv_in_channels=3, width=2)" in source
    assert "Unit(conv_in_channels=width, width=width, with_down=True)," in source
    assert "def __init__(self, conv_in_channels, width, with_down=False):" in source
    assert "def forward(self, x0, x1):" in source
    flat = generate_source(_plan(NESTED.replace('inputs = ["p1", "pooled"]',
                                                'inputs = ["p1", "p1"]'), tmp_path))
    assert "Written as one class, not one per block: instances of block 'pair' take " \
        "different numbers of inputs" in flat
    assert [n.name for n in ast.parse(flat).body if isinstance(n, ast.ClassDef)] == \
        ["NestedBlocks"]


def test_named_instances_at_dotted_paths_are_modules_in_containers(tmp_path):
    # ViT's encoder layers: a repeat named "layers.encoder_layer_{index}", each a class's
    # instance in the ModuleDict "layers", as torchvision's
    source = generate_source(compile_plan("vit_mnist"))
    classes = [n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]
    assert classes == ["EncoderLayer", "Encoder", "VitMnist"]
    assert "        self.layers = nn.ModuleDict()\n" \
        "        self.layers['encoder_layer_0'] = EncoderLayer()\n" in source
    assert "layers_encoder_layer_1 = self.layers.encoder_layer_1(layers_encoder_layer_0)" \
        in source
    assert "self.encoder = Encoder()" in source
    # a named instance inside a repeat's Sequential cannot be: written flat
    flat = generate_source(_plan(NAMED_IN_REPEAT, tmp_path))
    assert "Written as one class, not one per block: 'chain.extra' of block 'pair' would sit " \
        "inside the Sequential of repeat 'chain'" in flat


def test_every_registered_op_has_a_form_or_a_refusal():
    assert set(REGISTRY) == set(TORCH_FORMS) | set(TORCH_REFUSED)
    assert not set(TORCH_FORMS) & set(TORCH_REFUSED)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_exported_module_equals_netspec_in_float64(tmp_path, train):
    for name, plan in _shipped_and_test_plans(tmp_path).items():
        directory = tmp_path / f"{name}-{train}"
        directory.mkdir()
        net = _trained_looking(plan)
        module, model = _export(plan, net, directory)
        net = Network(plan, dtype="float64")
        load_weights(directory / "weights.npz", net)

        def use_masks(masks: MaskedDropout, module=module) -> None:
            module.F = masks

        errors = compare_with_netspec(net, model, train, use_masks)
        assert max(errors.values()) < tolerance(plan), (name, errors)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_engine_module_equals_netspec_in_float64(tmp_path, monkeypatch, train):
    # the ImageNet ResNets take the same code path as resnet_mnist, at 60 times the cost
    plans = {name: plan for name, plan in _shipped_and_test_plans(tmp_path).items()
             if name not in ("resnet18", "resnet34")}
    for name, plan in plans.items():
        net = _trained_looking(plan)
        model = PlanModule(plan).double()
        load_arrays(model, net.state())

        def use_masks(masks: MaskedDropout) -> None:
            monkeypatch.setattr(torch.nn.functional, "dropout", masks.dropout)

        errors = compare_with_netspec(net, model, train, use_masks)
        assert max(errors.values()) < tolerance(plan), (name, errors)


HOSTILE_IDS = [
    'conv "quoted"',
    "lin'\u2028'",  # a line separator: control characters (\n, \t, DEL) are refused earlier
    '"""',
    "'''",
    "__import__('os').system('touch PWNED')",
    '"); import os; os.system("touch PWNED"); ("',
    "# comment\u2029import os",
    "back\\slash\\",
    "trojan\u202esource\u2028line",
    "ünïcode",
    "nbsp\u00a0and\u200bzero-width",
    "evil.0",
]
HOSTILE_NAME = '"""; import os; os.system("touch PWNED") #'
HOSTILE_DESCRIPTION = "'''\n\"\"\"\nimport os\nos.system('touch PWNED')\n\"\"\"\\"


def _hostile_spec() -> str:
    """A chain alternating layers (modules) and activations (locals), every id hostile."""
    lines = ["[network]", f"name = {toml_string(HOSTILE_NAME)}",
             f"description = {toml_string(HOSTILE_DESCRIPTION)}", "",
             f"[nodes.{toml_string('in put')}]", 'op = "input"', "shape = [1, 6, 6]"]
    ops = ["conv2d", "relu", "conv2d", "tanh", "batchnorm", "relu"]
    for index, node_id in enumerate(HOSTILE_IDS[:-3]):
        op = ops[index % len(ops)]
        lines += ["", f"[nodes.{toml_string(node_id)}]", f'op = "{op}"']
        if op == "conv2d":
            lines += ["out_channels = 2", "kernel_size = 3", "padding = 1"]
    lines += ["", '[nodes."flat"]', 'op = "flatten"']
    for node_id in HOSTILE_IDS[-3:]:
        lines += ["", f"[nodes.{toml_string(node_id)}]", 'op = "linear"', "out_features = 4"]
    return "\n".join(lines) + "\n"


def test_hostile_names_stay_data(tmp_path):
    plan = _plan(_hostile_spec(), tmp_path)
    assert set(HOSTILE_IDS) <= set(plan.nodes)
    net = _trained_looking(plan)
    module_dir = tmp_path / "out"
    module_dir.mkdir()
    save_checkpoint(tmp_path / "w.npz", net)
    py_path, pt_path = export_pytorch(plan, module_dir / "model.py", weights=tmp_path / "w.npz")
    source = py_path.read_text()
    assert source.isascii()
    tree = ast.parse(source)

    # the only names are the file's own and plain identifiers it chose; no hostile text is code
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for name in names | attributes:
        assert name.isidentifier() and name.isascii(), name
    assert not any(name in ("os", "system") or "__import__" in name
                   for name in names | attributes)
    calls = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            calls.add(ast.unparse(node.func).split("(")[0].split("[")[0])
    for call in calls:
        assert call.split(".")[0] in {"nn", "F", "torch", "self", "super", "getattr"}, call
    imports = [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert imports == ["import torch", "import torch.nn.functional as F", "from torch import nn"]
    # every hostile id that names a module is there, exactly, as a string constant
    constants = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                 and isinstance(n.value, str)}
    layer_ids = [n.id for n in plan.nodes.values() if n.param_specs]
    for node_id in layer_ids:
        assert node_id.split(".")[0] in constants or node_id.split(".")[0].isidentifier()
    assert HOSTILE_NAME in constants  # SPEC_NAME
    docstring = ast.get_docstring(tree)
    # the docstring shows plain text as written and anything else as an escaped literal
    assert docstring.startswith(HOSTILE_NAME + ":") and ascii(HOSTILE_DESCRIPTION) in docstring

    # importing, building and running the module executes nothing from the spec
    script = (f"import sys, torch; sys.path.insert(0, {str(module_dir)!r}); import model; "
              f"net = model.{class_name(HOSTILE_NAME)}(); "
              f"net.load_state_dict(torch.load({str(pt_path)!r}, weights_only=True)); "
              f"print(sorted(k for k in net.state_dict() if 'num_batches' not in k) == "
              f"sorted(model.SPEC_NAME and {sorted(net.state())!r})); "
              f"print(net(torch.zeros(2, 1, 6, 6)).shape)")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["True", "torch.Size([2, 4])"]
    assert not list(tmp_path.rglob("PWNED"))

    # and it computes what netspec computes
    module = import_file(py_path)
    model = getattr(module, class_name(HOSTILE_NAME))().double()
    model.load_state_dict(torch.load(pt_path, weights_only=True))
    net64 = Network(plan, dtype="float64")
    load_weights(tmp_path / "w.npz", net64)
    errors = compare_with_netspec(net64, model, True, lambda masks: None)
    assert max(errors.values()) < TOLERANCE, errors


HOSTILE_BLOCKS = r"""[network]
name = "hostile blocks"

[blocks."b\"; import os; os.system('touch PWNED') #"]
args = ["w"]
[blocks."b\"; import os; os.system('touch PWNED') #".nodes]
"c'\u2028" = { op = "conv2d", out_channels = "= w", kernel_size = 1 }
r = { op = "relu" }

[nodes]
image = { op = "input", shape = [1, 4, 4] }
"i\"x" = { block = "b\"; import os; os.system('touch PWNED') #", repeat = 2, w = "= 2 + index" }
"j\u2028" = { block = "b\"; import os; os.system('touch PWNED') #", w = 2 }
"""


def test_hostile_block_and_instance_names_stay_data(tmp_path):
    plan = _plan(HOSTILE_BLOCKS, tmp_path)
    net = _trained_looking(plan)
    module, model = _export(plan, net, tmp_path)
    source = (tmp_path / "model.py").read_text()
    tree = ast.parse(source)
    assert [n.name for n in tree.body if isinstance(n, ast.ClassDef)] == \
        ["BImportOsOsSystemTouchPWNED", "HostileBlocks"]
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "os" not in names and all(name.isascii() for name in names)
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    net64 = Network(plan, dtype="float64")
    load_weights(tmp_path / "weights.npz", net64)
    errors = compare_with_netspec(net64, model, True, lambda masks: None)
    assert max(errors.values()) < TOLERANCE, errors


def test_source_check_refuses_what_the_generator_does_not_write(tmp_path):
    from netspec.interchange.torch_module import verify_source

    source = generate_source(compile_plan("lenet5"))
    verify_source(source)
    for tampered in (source + "import os\n", source + "print('hi')\n",
                     source.replace("F.relu(", "eval("), source + "class Other(nn.Module):\n"
                     "    pass\n", source.replace("def forward", "def backward")):
        with pytest.raises(NetspecError, match="refusing"):
            verify_source(tampered)


@pytest.mark.parametrize(("ids", "message"), [
    (["forward"], "'forward' is an attribute of PyTorch modules"),
    (["state_dict.x"], "'state_dict' is an attribute"),
    (["a..b"], "empty part"),
    (["conv", "conv.extra"], "inside node 'conv'"),
])
def test_ids_that_cannot_be_module_paths_are_refused_by_name(tmp_path, ids, message):
    lines = ['[nodes.image]', 'op = "input"', 'shape = [4]']
    for node_id in ids:
        lines += [f"[nodes.{toml_string(node_id)}]", 'op = "linear"', "out_features = 4"]
    plan = _plan("\n".join(lines), tmp_path)
    for build in (lambda: generate_source(plan), lambda: PlanModule(plan)):
        with pytest.raises(NetspecError, match="cannot be PyTorch module paths") as caught:
            build()
        assert message in str(caught.value)
        assert "rename them" in str(caught.value)


def test_export_without_weights_writes_only_the_module(tmp_path):
    written = export_pytorch("lenet5", tmp_path / "lenet.py")
    assert written == [tmp_path / "lenet.py"]
    module = import_file(written[0])
    assert module.SPEC_NAME == "lenet5" and module.OUTPUT_SHAPE == (10,)
    assert module.Lenet5()(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


# ---- PyTorch weights in ------------------------------------------------------------------


def _lenet_state(seed: int = 0) -> dict:
    net = Network(compile_plan("lenet5"), seed=seed)
    return {key: torch.from_numpy(value.copy()) for key, value in net.state().items()}


def test_pt_weights_load_by_key_with_prefix_and_wrapper(tmp_path):
    state = _lenet_state(seed=4)
    for name, saved in {"plain.pt": state,
                        "ddp.pth": {f"module.{k}": v for k, v in state.items()},
                        "checkpoint.pt": {"state_dict": state, "epoch": 3}}.items():
        torch.save(saved, tmp_path / name)
        net = Network(compile_plan("lenet5"))
        load_weights(tmp_path / name, net)
        for key, value in state.items():
            np.testing.assert_array_equal(net.state()[key], value.numpy())


def test_pt_mismatches_are_all_named(tmp_path):
    state = _lenet_state()
    del state["fc2.bias"]
    state["fc9.weight"] = torch.zeros(3)
    state["conv1.weight"] = torch.zeros(6, 1, 3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(WeightsError) as caught:
        load_weights(tmp_path / "bad.pt", Network(compile_plan("lenet5")))
    message = str(caught.value)
    assert "missing 'fc2.bias'" in message and "unexpected 'fc9.weight'" in message
    assert "'conv1.weight' is (6, 1, 3, 3), the network needs (6, 1, 5, 5)" in message


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize(("content", "message"), [
    ({"conv1.weight": _Evil()}, "never unpickles"),
    ({"conv1.weight": torch.as_strided(torch.zeros(4), (10**6, 10**6), (0, 0))},
     "claims 1,000,000,000,000 values"),
    ([1, 2, 3], "not a state_dict"),
    ({"conv1.weight": [1.0, 2.0]}, "'conv1.weight' is a list, not a tensor"),
    ({"conv1.weight": torch.full((6, 1, 5, 5), float("nan"))}, "NaN or infinite"),
    ({"conv1.weight": torch.zeros(2, dtype=torch.complex64)}, "not real numbers"),
])
def test_hostile_pt_files_are_refused(tmp_path, monkeypatch, content, message):
    monkeypatch.chdir(tmp_path)
    torch.save(content, tmp_path / "x.pt")
    with pytest.raises(WeightsError, match=message):
        load_weights(tmp_path / "x.pt", Network(compile_plan("lenet5")))
    assert not (tmp_path / "PWNED").exists()


def test_truncated_and_foreign_pt_files_are_refused(tmp_path):
    torch.save(_lenet_state(), tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("not weights")
    for name in ("cut.pt", "text.pt", "absent.pt"):
        with pytest.raises(WeightsError, match=name):
            load_weights(tmp_path / name, Network(compile_plan("lenet5")))


def test_cli_export_and_evaluate_with_pt(tmp_path, capsys, mnist_dir):
    from netspec.cli import main
    from netspec.data.choice import MNIST
    from netspec.train.data import prepare_data
    from netspec.train.loop import recipe_normalisation, stats_meta

    plan = compile_plan("lenet5")
    net = Network(plan, seed=2)
    # a .pt holds no normalisation: evaluate uses the recipe's, which a run would have saved
    mean, std = recipe_normalisation("lenet5", prepare_data(plan, MNIST, data_dir=mnist_dir))
    save_checkpoint(tmp_path / "w.npz", net, meta={"mean": stats_meta(mean),
                                                   "std": stats_meta(std)})
    assert main(["export", "lenet5", "--weights", str(tmp_path / "w.npz"),
                 "-o", str(tmp_path / "lenet.py")]) == 0
    assert (tmp_path / "lenet.pt").exists()
    assert main(["evaluate", "lenet5", "--weights", str(tmp_path / "lenet.pt"),
                 "--data-dir", str(mnist_dir)]) == 0
    from_pt = capsys.readouterr().out.splitlines()[-14]
    assert main(["evaluate", "lenet5", "--weights", str(tmp_path / "w.npz"),
                 "--data-dir", str(mnist_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[-14] == from_pt
    assert main(["export", "lenet5", "-o", str(tmp_path / "x.weird")]) == 1
    assert "use one of .onnx, .py" in capsys.readouterr().err


def test_without_torch_the_export_says_what_to_install(tmp_path, monkeypatch, capsys):
    from netspec.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["export", "lenet5", "-o", str(tmp_path / "m.py")]) == 1
    assert install_line("torch") in capsys.readouterr().err
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(NetspecError, match=re.escape(install_line("torch"))):
        load_weights(tmp_path / "w.pt", Network(compile_plan("lenet5")))


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_exported_resnets_hold_torchvisions_state_dict(tmp_path, name):
    """The exported module's keys and shapes are torchvision's, as recorded from it."""
    reference = REPO.parent / "shared/reference" / f"torchvision_{name}_state_dict.tsv"
    if not reference.is_file():
        pytest.skip(f"no torchvision reference at {reference}")
    rows = [line.split("\t") for line in reference.read_text().splitlines()
            if line and not line.startswith("#")][1:]
    expected = {key: tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
                for key, shape, _ in rows}
    module = import_file(export_pytorch(name, tmp_path / f"{name}.py")[0])
    model = getattr(module, class_name(name))()
    got = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert got == expected


# ---- the exported transformers are torchvision's modules ---------------------------------

# name -> (torchvision's model from its module, netspec overrides, image size): ViT-B/16 with
# one encoder layer at its 224 and 197 tokens, ConvNeXt-Tiny with blocks [1, 1, 2, 1] at 64x64;
# stochastic depth at 0, so that train mode is deterministic on both sides
TRANSFORMERS = {
    "vit_b_16": (lambda models: models.vision_transformer.VisionTransformer(
        image_size=224, patch_size=16, num_layers=1, num_heads=12, hidden_dim=768,
        mlp_dim=3072), {"layers": 1}, 224),
    "convnext_tiny": (lambda models: models.convnext.ConvNeXt(
        [models.convnext.CNBlockConfig(96, 192, 1), models.convnext.CNBlockConfig(192, 384, 1),
         models.convnext.CNBlockConfig(384, 768, 2), models.convnext.CNBlockConfig(768, None, 1)],
        stochastic_depth_prob=0.0), {"depths": [1, 1, 2, 1], "stochastic_depth_prob": 0.0}, 64),
}


@pytest.mark.parametrize("name", list(TRANSFORMERS))
def test_exported_transformers_are_torchvisions_modules_and_equal_netspec(tmp_path, name):
    from torchvision_helpers import torchvision_models

    from netspec.lang.spec import resolve_spec_path

    build, overrides, size = TRANSFORMERS[name]
    models = torchvision_models()
    torch.manual_seed(0)
    theirs = build(models).double()
    # the learned tensors and norms away from their starting 0, 1 and 1e-6, so that each counts
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, value in theirs.state_dict().items():
            if value.ndim <= 1 or key.endswith(("class_token", "pos_embedding", "layer_scale")):
                value.copy_(torch.randn(value.shape, generator=generator, dtype=value.dtype)
                            * 0.5 + (1.0 if key.endswith(("weight", "layer_scale")) else 0.0))
    path = resolve_spec_path(name)
    text = path.read_text()
    assert size == 224 or text.count("shape = [3, 224, 224]") == 1
    text = text.replace("shape = [3, 224, 224]", f"shape = [3, {size}, {size}]")
    plan = compile_plan(parse_spec(text, file=path.name, directory=path.parent,
                                   overrides=overrides))
    module = import_file(export_pytorch(plan, tmp_path / f"{name}.py")[0])
    ours = getattr(module, class_name(name))().double()
    # torchvision's keys, shapes and order, which a strict load then fills
    assert [(key, value.shape) for key, value in ours.state_dict().items()] == \
        [(key, value.shape) for key, value in theirs.state_dict().items()]
    ours.load_state_dict(theirs.state_dict(), strict=True)
    net = Network(plan, dtype="float64")
    net.load_state({key: value.numpy() for key, value in theirs.state_dict().items()})

    x = torch.from_numpy(np.random.default_rng(2).standard_normal((2, 3, size, size)))
    for train in (False, True):
        ours.train(train)
        theirs.train(train)
        inputs = [x.clone().requires_grad_(train) for _ in range(2)]
        outputs = [model(value) for model, value in zip((ours, theirs), inputs)]
        assert relative_error(outputs[0].detach().numpy(), outputs[1]) < TOLERANCE, train
        if train:
            dy = torch.from_numpy(np.random.default_rng(3).standard_normal(outputs[0].shape))
            for output in outputs:
                output.backward(dy)
            assert relative_error(inputs[0].grad.numpy(), inputs[1].grad) < TOLERANCE
            grads = dict(theirs.named_parameters())
            for key, parameter in ours.named_parameters():
                assert relative_error(parameter.grad.numpy(), grads[key].grad) < TOLERANCE, key
    ours.zero_grad(set_to_none=True)
    errors = compare_with_netspec(net, ours, True, lambda masks: None)
    assert max(errors.values()) < TOLERANCE, errors
