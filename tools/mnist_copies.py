"""Write MNIST in the other layouts netspec reads, to check that they train alike.

    python tools/mnist_copies.py --npz mnist.npz            # Keras's layout, all 70,000 images
    python tools/mnist_copies.py --folder digits --train-per-class 500 --test-per-class 100

The folder holds dark digits on white (the opposite of MNIST), as PNG files in class folders
named by the digit and its word (``train/7-seven/00017.png``), so that a run shows the names
and, since a folder's classes are its sorted folder names, class 7 is the digit 7.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from netspec.common.atomic import atomic_path
from netspec.common.errors import NetspecError
from netspec.data import load_mnist

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# "7-seven": sorted by name, the folders are in digit order, so class index = digit
CLASS_FOLDERS = tuple(f"{digit}-{word}" for digit, word in enumerate(WORDS))


def write_npz(path: Path, data_dir: str | None) -> str:
    """Write all of MNIST as a Keras-layout .npz; say what was written."""
    mnist = load_mnist(data_dir, download=False)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, x_train=mnist.train_images, y_train=mnist.train_labels,
                            x_test=mnist.test_images, y_test=mnist.test_labels,
                            class_names=np.array([str(d) for d in range(10)]))
    return (f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): "
            f"{len(mnist.train_images):,} training and {len(mnist.test_images):,} test images")


def write_folder(root: Path, data_dir: str | None, train_per_class: int,
                 test_per_class: int) -> str:
    """Write part of MNIST as a folder of PNG pictures; say what was written."""
    from PIL import Image

    mnist = load_mnist(data_dir, download=False)
    splits = (("train", mnist.train_images, mnist.train_labels, train_per_class),
              ("test", mnist.test_images, mnist.test_labels, test_per_class))
    counts = {}
    for split, images, labels, per_class in splits:
        counts[split] = 0
        for digit, name in enumerate(CLASS_FOLDERS):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in np.flatnonzero(labels == digit)[:per_class]:
                with atomic_path(folder / f"{index:05d}.png") as tmp:
                    Image.fromarray(255 - images[index]).save(tmp, format="PNG")
                counts[split] += 1
    return (f"wrote {root}: {counts['train']:,} training and {counts['test']:,} test pictures "
            f"(dark digits on white) in {root / 'train'} and {root / 'test'}, one folder per "
            f"class: {', '.join(CLASS_FOLDERS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="the MNIST IDX files (default: as netspec finds them)")
    parser.add_argument("--npz", type=Path, help="write a Keras-layout .npz here")
    parser.add_argument("--folder", type=Path, help="write a folder of PNG pictures here")
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args(argv)
    if not args.npz and not args.folder:
        parser.error("give --npz, --folder or both")
    try:
        if args.npz:
            print(write_npz(args.npz, args.data_dir), flush=True)
        if args.folder:
            print(write_folder(args.folder, args.data_dir, args.train_per_class,
                               args.test_per_class))
    except NetspecError as exc:
        print(f"mnist_copies: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
