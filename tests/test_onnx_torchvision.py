"""What ``torch.onnx.export`` writes for torchvision's mobile networks imports into netspec,
computes what onnxruntime computes on the same file, and netspec's export of it passes ONNX's
full checker. The two smallest (MNASNet 0.5, MobileNetV3-Small) run here at 64x64, exported
from one example image (the file fixes its batch at 1) and with a symbolic batch;
``tools/onnx_torchvision.py`` runs all six at 224x224."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.torchvision_helpers import torchvision_models

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from netspec.interchange.onnx_export import check_exported, export_onnx  # noqa: E402
from netspec.interchange.onnx_import import import_onnx  # noqa: E402
from netspec.interchange.onnx_verify import compare_with_onnxruntime  # noqa: E402

SIZE = 64


def trained_like(model):
    """Batchnorm statistics and affine values away from 0 and 1, as after training."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor, low, high in ((module.running_mean, -0.2, 0.2),
                                          (module.running_var, 0.5, 1.5),
                                          (module.weight, 0.5, 1.5), (module.bias, -0.2, 0.2)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator)
                                 * (high - low) + low)
    return model.eval()


@pytest.fixture(scope="module", params=[("mnasnet0_5", False), ("mnasnet0_5", True),
                                        ("mobilenet_v3_small", False),
                                        ("mobilenet_v3_small", True)],
                ids=lambda p: f"{p[0]}-{'dynamic' if p[1] else 'batch1'}")
def exported(request, tmp_path_factory) -> tuple[str, Path, object]:
    name, dynamic = request.param
    torch.manual_seed(0)
    model = trained_like(getattr(torchvision_models(), name)())
    path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, torch.randn(1, 3, SIZE, SIZE), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}
                          if dynamic else None)
    return name, path, model


def test_the_export_imports_and_equals_onnxruntime(exported) -> None:
    name, path, model = exported
    imported = import_onnx(path)
    error = compare_with_onnxruntime(path, imported.network, input_names=imported.input_ids)
    assert error is not None and error < 1e-5, (name, error)
    # and torch's own output, at a batch the file may not fix: netspec's network takes any
    x = np.random.default_rng(0).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    ours = imported.network.forward(x)
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()


def test_the_imported_network_exports_a_model_the_checker_passes(exported) -> None:
    _, path, _ = exported
    imported = import_onnx(path)
    model = export_onnx(imported.plan, imported.network.state())
    check_exported(model)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    ours = imported.network.forward(x)
    theirs = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert np.abs(ours - theirs.reshape(ours.shape)).max() <= 1e-5 * np.abs(ours).max()


class UNet(torch.nn.Module):
    """Two levels down by max pooling, up once by a transposed convolution and once by nearest
    upsampling, each joined with its skip (tools/onnx_torchvision.py's)."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn

        def double(cin: int, cout: int) -> torch.nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.down1, self.down2, self.bottom = double(3, 8), double(8, 16), double(16, 32)
        self.pool = nn.MaxPool2d(2)
        self.up1 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec1 = double(32, 16)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = double(24, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        d1 = self.down1(x)
        d2 = self.down2(self.pool(d1))
        bottom = self.bottom(self.pool(d2))
        u1 = self.dec1(torch.cat([self.up1(bottom), d2], 1))
        return self.head(self.dec2(torch.cat([self.up2(u1), d1], 1)))


def test_a_unet_exported_from_one_image_imports_equals_onnxruntime_and_reexports(
        tmp_path) -> None:
    torch.manual_seed(0)
    model = trained_like(UNet())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, 3, 32, 32), str(tmp_path / "unet.onnx"),
                          dynamo=False, opset_version=17)
    imported = import_onnx(tmp_path / "unet.onnx")
    ops = {node.op_name for node in imported.plan.nodes.values()}
    assert {"conv_transpose2d", "upsample", "concat", "maxpool2d"} <= ops
    assert imported.static_batch == 1
    error = compare_with_onnxruntime(tmp_path / "unet.onnx", imported.network,
                                     input_names=imported.input_ids)
    assert error is not None and error < 1e-5
    check_exported(export_onnx(imported.plan, imported.network.state()))
