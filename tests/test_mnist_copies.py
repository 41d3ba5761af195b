"""tools/mnist_copies.py: MNIST as a Keras .npz and as a folder of pictures, each saying what
it wrote, with folder classes that are the digits they hold."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import mnist_copies  # noqa: E402 - a tool beside the package, not part of it

from netspec.data import load_mnist  # noqa: E402
from netspec.data.folder import load_folder  # noqa: E402


def test_the_folder_classes_are_the_digits(tmp_path, mnist_dir, capsys):
    pytest.importorskip("PIL")
    root = tmp_path / "digits"
    code = mnist_copies.main(["--data-dir", str(mnist_dir), "--folder", str(root),
                              "--train-per-class", "3", "--test-per-class", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert out == (f"wrote {root}: 30 training and 20 test pictures (dark digits on white) in "
                   f"{root / 'train'} and {root / 'test'}, one folder per class: 0-zero, "
                   "1-one, 2-two, 3-three, 4-four, 5-five, 6-six, 7-seven, 8-eight, 9-nine\n")
    data = load_folder(root, 1)
    assert data.class_names == mnist_copies.CLASS_FOLDERS
    mnist = load_mnist(mnist_dir)
    # each picture is its MNIST image inverted, and its class index is its digit
    for images, labels, source_images, source_labels, per_class in (
            (data.train_images, data.train_labels, mnist.train_images, mnist.train_labels, 3),
            (data.test_images, data.test_labels, mnist.test_images, mnist.test_labels, 2)):
        expected = {digit: [255 - source_images[i]
                            for i in np.flatnonzero(source_labels == digit)[:per_class]]
                    for digit in range(10)}
        for image, label in zip(images, labels, strict=True):
            assert any(np.array_equal(image.reshape(28, 28), candidate)
                       for candidate in expected[int(label)])


def test_the_npz_says_what_it_wrote(tmp_path, mnist_dir, capsys):
    path = tmp_path / "mnist.npz"
    assert mnist_copies.main(["--data-dir", str(mnist_dir), "--npz", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {path} (") and out.endswith(
        "MiB): 60,000 training and 10,000 test images\n")
    with np.load(path) as saved:
        assert saved["x_train"].shape == (60000, 28, 28)


def test_without_mnist_it_says_so(tmp_path, capsys):
    assert mnist_copies.main(["--data-dir", str(tmp_path), "--npz",
                              str(tmp_path / "m.npz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnist_copies: error: ") and "Traceback" not in err
    assert not (tmp_path / "m.npz").exists()
