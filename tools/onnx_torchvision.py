"""Import what ``torch.onnx.export`` writes for torchvision's models (and a small U-Net), and
check each against onnxruntime and ONNX's checker.

    python tools/onnx_torchvision.py                     # all, at 224x224 (the U-Net at 64)
    python tools/onnx_torchvision.py mnasnet0_5 unet --size 64

For each model: torchvision's model (batchnorm statistics moved away from 0 and 1, as after
training) is exported by the TorchScript exporter from one example image (a file that fixes
its batch at 1, as most exported files do) and, with ``--dynamic``, with a symbolic batch;
``netspec import`` translates it; netspec's output is compared with onnxruntime's on the same
file (relative to the output's largest magnitude; the contract is <= 1e-5); and netspec's
export of the imported network passes ``onnx.checker.check_model(full_check=True)``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

MODELS = ("mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf",
          "mnasnet0_5", "googlenet", "unet")
AGREEMENT = 1e-5


def torchvision_models() -> Any:
    import torch

    original = torch.library.register_fake
    torch.library.register_fake = lambda *args, **kwargs: (lambda function: function)
    try:
        import torchvision.models
    finally:
        torch.library.register_fake = original
    return torchvision.models


def small_unet() -> Any:
    """A two-level U-Net: convolutions down with max pooling, up once by a transposed
    convolution and once by nearest upsampling, each joined with its skip connection."""
    import torch
    from torch import nn

    def double(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down1, self.down2, self.bottom = double(3, 8), double(8, 16), double(16, 32)
            self.pool = nn.MaxPool2d(2)
            self.up1 = nn.ConvTranspose2d(32, 16, 2, stride=2)
            self.dec1 = double(32, 16)
            self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
            self.dec2 = double(24, 8)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            d1 = self.down1(x)
            d2 = self.down2(self.pool(d1))
            bottom = self.bottom(self.pool(d2))
            u1 = self.dec1(torch.cat([self.up1(bottom), d2], 1))
            u2 = self.dec2(torch.cat([self.up2(u1), d1], 1))
            return self.head(u2)

    return UNet()


def model_of(name: str) -> Any:
    import torch

    if name == "unet":
        model = small_unet()
    elif name == "googlenet":
        model = torchvision_models().googlenet(aux_logits=False, init_weights=False)
    else:
        model = getattr(torchvision_models(), name)()
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


def export(model: Any, size: int, path: Path, dynamic: bool) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, torch.randn(1, 3, size, size), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}
                          if dynamic else None)


def check(name: str, size: int, dynamic: bool, directory: Path) -> dict[str, Any]:
    from netspec.interchange.onnx_export import check_exported, export_onnx
    from netspec.interchange.onnx_import import import_onnx
    from netspec.interchange.onnx_verify import compare_with_onnxruntime

    path = directory / f"{name}{'-dynamic' if dynamic else ''}.onnx"
    start = time.perf_counter()
    export(model_of(name), size, path, dynamic)
    imported = import_onnx(path)
    error = compare_with_onnxruntime(path, imported.network, input_names=imported.input_ids)
    check_exported(export_onnx(imported.plan, imported.network.state()))
    return {"onnx nodes": imported.onnx_nodes, "netspec nodes": len(imported.plan.nodes),
            "params": imported.plan.total_params, "relative": error,
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", choices=[[], *MODELS], default=[],
                        help="models (default: all)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--dynamic", action="store_true",
                        help="export with a symbolic batch instead of the example's 1")
    args = parser.parse_args(argv)
    failures = 0
    print(f"{'model':<20} {'ONNX nodes':>10} {'netspec':>8} {'params':>11} {'relative':>9} "
          f"{'seconds':>8}  result")
    with tempfile.TemporaryDirectory() as directory:
        for name in args.names or MODELS:
            size = min(args.size, 64) if name == "unet" else args.size
            try:
                row = check(name, size, args.dynamic, Path(directory))
            except Exception as exc:  # noqa: BLE001 - a report, one line per model
                failures += 1
                first = str(exc).splitlines()
                print(f"{name:<20} failed: {' | '.join(first[:4])}")
                continue
            ok = row["relative"] is not None and row["relative"] <= AGREEMENT
            failures += not ok
            print(f"{name:<20} {row['onnx nodes']:>10} {row['netspec nodes']:>8} "
                  f"{row['params']:>11,} {row['relative']:>9.1e} {row['seconds']:>8.1f}  "
                  f"{'ok' if ok else 'DIFFERS'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
