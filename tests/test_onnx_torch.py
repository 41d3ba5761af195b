"""Models written in PyTorch and exported with ``torch.onnx.export`` import into netspec and
compute what onnxruntime computes: a torchvision-style ResNet-18 (the layout and names of
torchvision's, written here with torch.nn since torchvision does not load with this torch) and
a DenseNet-style network whose dense blocks concatenate every earlier layer's features."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
nn = torch.nn
F = torch.nn.functional

from netspec.interchange.onnx_import import import_onnx  # noqa: E402
from netspec.plan.compiler import compile_plan  # noqa: E402
from netspec.weights.checkpoint import load_weights  # noqa: E402


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: two 3x3 convolutions and the residual sum."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)

class ResNet(nn.Module):
    """torchvision's ResNet layout and module names; (2, 2, 2, 2) blocks is ResNet-18."""

    def __init__(self, layers=(2, 2, 2, 2), num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)
    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv-BN-ReLU-3x3 conv on the concatenation of every earlier output."""

    def __init__(self, cin, growth):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(4 * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)
    def forward(self, features):
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))

class DenseBlock(nn.ModuleDict):
    def __init__(self, n, cin, growth):
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth))
    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)

class DenseNet(nn.Module):
    """Two dense blocks joined by a transition (1x1 conv, 2x2 average pooling); the head
    flattens with view(N, -1), which the exporter writes as Shape/Gather/Concat/Reshape."""

    def __init__(self, growth=8, blocks=(3, 3), stem=16, num_classes=10):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(1, stem, 3, padding=1, bias=False))
        channels = stem
        for i, n in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(n, channels, growth))
            channels += n * growth
            if i != len(blocks) - 1:
                self.features.add_module(f"transition{i + 1}", nn.Sequential(
                    nn.BatchNorm2d(channels), nn.ReLU(),
                    nn.Conv2d(channels, channels // 2, 1, bias=False), nn.AvgPool2d(2, 2)))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, num_classes)
    def forward(self, x):
        out = F.relu(self.features(x))
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.classifier(out.view(out.size(0), -1))


def randomise_batchnorm(model: nn.Module, seed: int) -> None:
    """Running statistics and affine parameters away from the identity, as after training."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                for tensor, low, high in ((module.running_mean, -0.2, 0.2),
                                          (module.running_var, 0.5, 1.5),
                                          (module.weight, 0.5, 1.5), (module.bias, -0.2, 0.2)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator)
                                 * (high - low) + low)


def export(model: nn.Module, shape: tuple[int, ...], path: Path, **options) -> None:
    model.eval()
    with warnings.catch_warnings():
        # the TorchScript exporter works offline; the newer one needs onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, *shape), str(path), dynamo=False,
                          input_names=["input"], output_names=["logits"], opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          **options)


CASES = {
    # name: (model, input shape per sample, export options, ONNX nodes, netspec nodes)
    # the exporter folds each batchnorm into the convolution before it...
    # (GlobalAveragePool keeps its 1x1 axes, as ONNX's does, and the Flatten after it is a
    # flatten node: one node more than ONNX's count of the pair would suggest)
    "resnet18": (ResNet, (3, 64, 64), {}, 49, 50),
    # ...unless constant folding is off: then BatchNormalization nodes carry the statistics
    "resnet18-batchnorm": (ResNet, (3, 64, 64), {"do_constant_folding": False}, 69, 70),
    "densenet": (DenseNet, (1, 28, 28), {}, 55, 47),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory) -> tuple[str, Path, nn.Module]:
    torch.manual_seed(0)
    make, shape, options, _, _ = CASES[request.param]
    model = make()
    randomise_batchnorm(model, seed=1)
    path = tmp_path_factory.mktemp(request.param) / f"{request.param}.onnx"
    export(model, shape, path, **options)
    return request.param, path, model


def test_pytorch_exported_models_import_and_match_onnxruntime(exported) -> None:
    name, path, _ = exported
    _, shape, _, onnx_nodes, netspec_nodes = CASES[name]
    imported = import_onnx(path)
    assert imported.onnx_nodes == onnx_nodes
    assert len(imported.plan.nodes) == netspec_nodes
    x = np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32)
    ours = imported.network.forward(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"input": x})[0]
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()


def test_the_spec_keeps_pytorchs_module_paths(exported) -> None:
    name, path, model = exported
    imported = import_onnx(path)
    nodes = imported.plan.nodes
    if name == "resnet18-batchnorm":
        # parameter keys are PyTorch's state_dict keys, shapes and all
        theirs = {key: tuple(value.shape) for key, value in model.state_dict().items()
                  if not key.endswith("num_batches_tracked")}
        ours = {key: value.shape for key, value in imported.network.state().items()}
        assert ours == theirs
        assert imported.plan.total_params == sum(p.numel() for p in model.parameters())
        # and netspec's own resnet18 has the same keys and shapes: its weights fit either way
        shipped = compile_plan("resnet18")
        assert ours == {f"{node.id}.{name}": spec.shape for node in shipped.nodes.values()
                        for name, spec in {**node.param_specs, **node.buffer_specs}.items()}
    if name.startswith("resnet18"):
        for node_id in ("conv1", "maxpool", "layer1.0.conv1", "layer2.0.downsample.0",
                        "layer4.1.conv2", "fc"):
            assert node_id in nodes, node_id
        assert nodes["layer2.0.downsample.0"].op_name == "conv2d"
        assert nodes["layer1.0"].op_name == "add"  # the block's residual sum
    else:
        assert nodes["features.denseblock1.denselayer3.norm1"].op_name == "batchnorm"
        concat = nodes["features.denseblock1.denselayer3"]
        assert concat.op_name == "concat" and len(concat.inputs) == 3
        assert nodes["features.transition1.3"].op_name == "avgpool2d"
        assert nodes["classifier"].op_name == "linear"


def test_the_imported_files_work_with_the_cli(exported, tmp_path: Path) -> None:
    from netspec.cli import main
    from netspec.runtime.executor import compile

    name, path, _ = exported
    assert main(["import", str(path), "-o", str(tmp_path / "net.toml")]) == 0
    net = compile(tmp_path / "net.toml")
    load_weights(tmp_path / "net.npz", net)
    assert main(["export", str(tmp_path / "net.toml"), "--weights", str(tmp_path / "net.npz"),
                 "-o", str(tmp_path / "again.onnx")]) == 0
