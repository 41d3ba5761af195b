"""ResNet-18 and ResNet-34 as netspec builds them from their block specs, against PyTorch.

The PyTorch model here is an independently written twin of torchvision's ResNet (torchvision's
wheel is built against another torch than the local CPU build and does not load): BasicBlock
(conv1, bn1, relu, conv2, bn2, and a ``downsample`` of a 1x1 convolution and a batchnorm only
where the stride or the width changes) and ResNet (conv1 7x7/2, bn1, relu, maxpool 3/2/1,
layer1..layer4, avgpool, fc), with torchvision's module paths, so that its ``state_dict()``
keys are torchvision's. The twin's keys and shapes are checked against the reference list
written from torchvision's model definitions (``shared/reference`` beside the repository),
then netspec's parameters and buffers are copied into it by key and the float64 outputs,
gradients and running statistics compared in eval and in train mode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.lang.spec import parse_spec, resolve_spec_path

torch = pytest.importorskip("torch")
nn = torch.nn

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"
DEPTHS = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}
PARAMETERS = {"resnet18": 11_689_512, "resnet34": 21_797_672}
TOLERANCE = 1e-9
FULL_SIZE = 224
# the numeric comparisons in train mode run at this image size: float64 on two loaded cores
# takes tens of seconds per ResNet pass at 224
SMALL_SIZE = 48
SEED = 0


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut; ``shortcut=False`` drops the shortcut (a broken
    twin for the negative control)."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes))
        self.shortcut = shortcut

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class ResNet(nn.Module):
    """The ImageNet ResNet with basic blocks; ``broken`` names one block ("layer1.1") built
    without its shortcut."""

    def __init__(self, depths: list[int], classes: int = 1000, broken: str | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_planes = 64
        for stage, (planes, depth) in enumerate(zip([64, 128, 256, 512], depths), start=1):
            blocks = []
            for index in range(depth):
                stride = 2 if stage > 1 and index == 0 else 1
                name = f"layer{stage}.{index}"
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut=name != broken))
                in_planes = planes
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def reference(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """key -> (shape, "parameter" or "buffer") of torchvision's state_dict."""
    path = REFERENCE_DIR / f"torchvision_{name}_state_dict.tsv"
    if not path.is_file():
        pytest.skip(f"torchvision reference keys not found at {path}")
    entries = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#") or line.startswith("key\t"):
            continue
        key, shape, kind = line.split("\t")
        dims = shape.strip("()").replace(" ", "")
        entries[key] = (tuple(int(d) for d in dims.split(",") if d), kind)
    return entries


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-300))


def randomise_batchnorms(network: netspec.Network, rng: np.random.Generator) -> None:
    """Batchnorm scales, shifts and running statistics away from their initial 1 and 0, so
    that eval mode really uses them."""
    for key, array in {**network.params, **network.buffers}.items():
        node, _, name = key.rpartition(".")
        if network.plan.nodes[node].op_name != "batchnorm":
            continue
        if name == "weight":
            array[...] = rng.uniform(0.5, 1.5, array.shape)
        elif name in ("bias", "running_mean"):
            array[...] = rng.normal(0.0, 0.2, array.shape)
        elif name == "running_var":
            array[...] = rng.uniform(0.5, 2.0, array.shape)
    network.params["fc.bias"][...] = rng.normal(0.0, 0.1, network.params["fc.bias"].shape)


def twin_of(network: netspec.Network, depths: list[int], broken: str | None = None) -> ResNet:
    """A float64 twin holding netspec's parameters and buffers, copied by key (strictly:
    every key of either side is matched, torch's num_batches_tracked excepted)."""
    twin = ResNet(depths, broken=broken).double()
    state = {key: torch.from_numpy(np.array(value)) for key, value in network.state().items()}
    result = twin.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert all(key.endswith(".num_batches_tracked") for key in result.missing_keys)
    return twin


def images(batch: int, size: int) -> np.ndarray:
    return np.random.default_rng(SEED + 1).standard_normal((batch, 3, size, size))


def shipped(name: str, size: int = FULL_SIZE) -> netspec.Network:
    """The shipped spec compiled in float64 with randomised batchnorms; at another ``size``
    its text with only the input's shape changed (a global average pooling before ``fc``
    makes every parameter independent of the image size)."""
    path = resolve_spec_path(name)
    text = path.read_text()
    if size != FULL_SIZE:
        written = f"shape = [3, {FULL_SIZE}, {FULL_SIZE}]"
        assert text.count(written) == 1
        text = text.replace(written, f"shape = [3, {size}, {size}]")
    spec = parse_spec(text, file=path.name, directory=path.parent)
    network = netspec.compile(spec, seed=SEED, dtype="float64")
    randomise_batchnorms(network, np.random.default_rng(SEED + 2))
    return network


@pytest.fixture(scope="module", params=["resnet18", "resnet34"])
def compiled(request) -> tuple[str, netspec.Network]:
    torch.set_num_threads(2)
    return request.param, netspec.compile(request.param, seed=SEED, dtype="float64")


def test_parameter_counts(compiled):
    name, network = compiled
    assert network.plan.total_params == PARAMETERS[name]
    assert network.output_shape == (1000,)
    assert network.plan.nodes[network.plan.inputs[0]].shape == (3, 224, 224)


def test_keys_and_shapes_are_torchvisions(compiled):
    name, network = compiled
    expected = reference(name)
    wanted_params = {k: s for k, (s, kind) in expected.items() if kind == "parameter"}
    wanted_buffers = {k: s for k, (s, kind) in expected.items()
                      if kind == "buffer" and not k.endswith(".num_batches_tracked")}
    assert sum(int(np.prod(s)) for s in wanted_params.values()) == PARAMETERS[name]
    assert list(network.params) == list(wanted_params)
    assert set(network.buffers) == set(wanted_buffers)
    assert {k: v.shape for k, v in network.params.items()} == wanted_params
    assert {k: v.shape for k, v in network.buffers.items()} == wanted_buffers
    assert sorted(network.trainable) == sorted(wanted_params)


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_twin_has_torchvisions_state_dict(name):
    expected = reference(name)
    state = ResNet(DEPTHS[name]).state_dict()
    assert list(state) == list(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: s for k, (s, _) in
                                                              expected.items()}


def test_full_size_output_matches_in_eval_mode():
    network = shipped("resnet18")
    x = images(1, FULL_SIZE)
    twin = twin_of(network, DEPTHS["resnet18"]).eval()
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    error = relative_error(network.forward(x, train=False), expected)
    print(f"resnet18 at {FULL_SIZE}x{FULL_SIZE}, eval: relative error {error:.2e}")
    assert error < TOLERANCE


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_outputs_gradients_and_statistics_match_in_eval_and_train_mode(name):
    torch.set_num_threads(2)
    network = shipped(name, SMALL_SIZE)
    x = images(2, SMALL_SIZE)
    twin = twin_of(network, DEPTHS[name])

    twin.eval()
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    ours = network.forward(x, train=False)
    eval_error = relative_error(ours, expected)
    assert eval_error < TOLERANCE, f"{name} eval: relative error {eval_error:.3g}"

    twin.train()
    x_torch = torch.from_numpy(x.copy()).requires_grad_(True)
    expected_train = twin(x_torch)
    ours_train = network.forward(x, train=True)
    train_error = relative_error(ours_train, expected_train.detach().numpy())
    assert train_error < TOLERANCE, f"{name} train: relative error {train_error:.3g}"
    # batch statistics differ from the running ones, so the two modes must differ
    assert relative_error(ours_train, ours) > 1e-3

    # both updated their running statistics from the same batch
    twin_state = twin.state_dict()
    for key, value in network.buffers.items():
        error = relative_error(value, twin_state[key].numpy())
        assert error < TOLERANCE, f"{name} {key} after a training pass: {error:.3g}"

    dy = np.random.default_rng(SEED + 3).standard_normal(ours_train.shape)
    expected_train.backward(torch.from_numpy(dy))
    dx = network.backward(dy)
    dx_error = relative_error(dx, x_torch.grad.numpy())
    assert dx_error < TOLERANCE, f"{name} input gradient: relative error {dx_error:.3g}"
    twin_params = dict(twin.named_parameters())
    assert set(network.grads) == set(twin_params)
    errors = {key: relative_error(grad, twin_params[key].grad.numpy())
              for key, grad in network.grads.items()}
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] < TOLERANCE, f"{name} gradient of {worst}: {errors[worst]:.3g}"
    print(f"{name} at {SMALL_SIZE}x{SMALL_SIZE}: relative errors eval {eval_error:.2e}, "
          f"train {train_error:.2e}, input gradient {dx_error:.2e}, worst parameter "
          f"gradient {errors[worst]:.2e} ({worst})")


@pytest.fixture(scope="module")
def small_resnet18() -> tuple[netspec.Network, np.ndarray, np.ndarray]:
    network = shipped("resnet18", SMALL_SIZE)
    x = images(1, SMALL_SIZE)
    return network, x, network.forward(x)


def test_a_block_without_its_shortcut_does_not_match(small_resnet18):
    network, x, ours = small_resnet18
    for broken in (None, "layer1.1"):
        twin = twin_of(network, DEPTHS["resnet18"], broken=broken).eval()
        with torch.no_grad():
            error = relative_error(ours, twin(torch.from_numpy(x)).numpy())
        assert (error < TOLERANCE) if broken is None else (error > 1e-3), (broken, error)


def test_a_permuted_weight_does_not_match(small_resnet18):
    network, x, ours = small_resnet18
    twin = twin_of(network, DEPTHS["resnet18"]).eval()
    with torch.no_grad():
        weight = twin.layer3[1].conv1.weight
        # same shape, output and input channels exchanged
        weight.copy_(weight.transpose(0, 1).clone())
        error = relative_error(ours, twin(torch.from_numpy(x)).numpy())
    assert error > 1e-3
