"""Digit images for prediction (``load_digit_images``) and ``netspec predict``."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

from netspec.cli import main
from netspec.common.errors import DataError
from netspec.data import load_mnist
from netspec.data.images import load_digit_images, load_images
from netspec.runtime.executor import compile
from netspec.train.evaluate import evaluate, normalise_images
from netspec.train.loop import start_run
from netspec.weights.checkpoint import load_weights


def digit() -> np.ndarray:
    """A light stroke on a dark background, as in MNIST."""
    image = np.zeros((28, 28), dtype=np.uint8)
    image[6:22, 12:16] = 200
    image[6:9, 9:16] = 255
    return image


def save_npy(path: Path, array: np.ndarray) -> Path:
    # through a handle, so that numpy does not append ".npy" to other names
    with path.open("wb") as handle:
        np.save(handle, array)
    return path


def save_png(path: Path, array: np.ndarray, mode: str = "L") -> Path:
    image = pytest.importorskip("PIL.Image")
    image.fromarray(array).convert(mode).save(path, format="PNG")
    return path


IMAGE = digit()
LOADS = {
    "uint8 image": (lambda d: save_npy(d / "a.npy", IMAGE), IMAGE[None]),
    "a stack": (lambda d: save_npy(d / "a.npy", np.stack([IMAGE, IMAGE.T, IMAGE[::-1]])),
                np.stack([IMAGE, IMAGE.T, IMAGE[::-1]])),
    "floats in [0, 1]": (lambda d: save_npy(d / "a.npy", IMAGE / 255.0), IMAGE[None]),
    "floats in [0, 255]": (lambda d: save_npy(d / "a.npy", IMAGE.astype(np.float32)),
                           IMAGE[None]),
    "int64": (lambda d: save_npy(d / "a.npy", IMAGE.astype(np.int64)), IMAGE[None]),
    "white background": (lambda d: save_npy(d / "a.npy", 255 - IMAGE), IMAGE[None]),
    "white background floats": (lambda d: save_npy(d / "a.npy", 1.0 - IMAGE / 255.0),
                                IMAGE[None]),
    "upper-case suffix": (lambda d: save_npy(d / "a.NPY", IMAGE), IMAGE[None]),
    "greyscale png": (lambda d: save_png(d / "a.png", IMAGE), IMAGE[None]),
    "white-background rgb png": (lambda d: save_png(d / "a.png", 255 - IMAGE, "RGB"),
                                 IMAGE[None]),
    "png without a suffix": (lambda d: save_png(d / "digit", IMAGE), IMAGE[None]),
}


@pytest.mark.parametrize("case", LOADS.values(), ids=LOADS.keys())
def test_load_digit_images(tmp_path, case):
    write, expected = case
    images = load_digit_images([write(tmp_path)])
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images, expected)


@pytest.mark.parametrize("ink", [0, 255], ids=["dark ink", "light ink"])
def test_a_digit_drawn_on_a_transparent_background_is_seen(tmp_path, ink):
    # dropping the alpha channel alone made every such picture one flat colour
    image = pytest.importorskip("PIL.Image")
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., :3] = ink
    rgba[..., 3] = IMAGE  # opaque where the digit is
    path = tmp_path / "transparent.png"
    image.fromarray(rgba, "RGBA").save(path, format="PNG")
    loaded = load_digit_images([path])[0].astype(int)
    assert np.abs(loaded - IMAGE).max() <= 1  # compositing rounds


def test_a_large_png_is_resized_to_28_pixels(tmp_path):
    big = np.kron(IMAGE, np.ones((4, 4), dtype=np.uint8))
    images = load_digit_images([save_png(tmp_path / "big.png", big)])
    assert images.shape == (1, 28, 28)
    # the stroke is where it was, within a pixel of resampling blur
    assert np.abs(images[0].astype(int) - IMAGE).mean() < 10


def test_several_files_are_stacked_in_order(tmp_path):
    first = save_npy(tmp_path / "a.npy", np.stack([IMAGE, IMAGE.T]))
    second = save_npy(tmp_path / "b.npy", 255 - IMAGE[::-1])
    np.testing.assert_array_equal(load_digit_images([first, second]),
                                  np.stack([IMAGE, IMAGE.T, IMAGE[::-1]]))


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


SHAPE = r"expected a 28x28 image \(or a stack K x 28 x 28\), got shape "
BAD = {
    "too narrow": (lambda d: save_npy(d / "a.npy", np.zeros((28, 27))), SHAPE + r"\(28, 27\)"),
    "a flat vector": (lambda d: save_npy(d / "a.npy", np.zeros(784)), SHAPE + r"\(784,\)"),
    "with a channel axis": (lambda d: save_npy(d / "a.npy", np.zeros((2, 1, 28, 28))),
                            SHAPE + r"\(2, 1, 28, 28\)"),
    "an empty stack": (lambda d: save_npy(d / "a.npy", np.zeros((0, 28, 28))),
                       SHAPE + r"\(0, 28, 28\)"),
    "NaN": (lambda d: save_npy(d / "a.npy", np.full((28, 28), np.nan)), r"finite numbers"),
    "text": (lambda d: save_npy(d / "a.npy", np.full((28, 28), "x")), r"finite numbers"),
    "a pickled array": (lambda d: save_npy(d / "a.npy", np.array([[{}]] * 28 * 28, dtype=object)
                                           .reshape(28, 28)), r"not a readable \.npy array"),
    "garbage .npy": (lambda d: write_bytes(d / "a.npy", b"\x93NUMPY garbage"),
                     r"not a readable \.npy array"),
    # np.load would call this a pickle and advise loading it unsafely
    "a text file named .npy": (lambda d: write_bytes(d / "a.npy", b"1 2 3\n"),
                               r"not a \.npy file \(no NumPy header\)"),
    "garbage .png": (lambda d: (pytest.importorskip("PIL"),
                                write_bytes(d / "a.png", b"\x89PNG not really"))[1],
                     r"not a readable image"),
    "missing": (lambda d: d / "nowhere.npy", r"no such file"),
    "a directory": (lambda d: d, r"no such file"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_unusable_images_raise_data_error_naming_the_file(tmp_path, case):
    write, message = case
    path = write(tmp_path)
    with pytest.raises(DataError, match=message) as caught:
        load_digit_images([path])
    assert str(caught.value).startswith(f"{path}: ")


def test_no_files_is_an_error():
    with pytest.raises(DataError, match="no image files given"):
        load_digit_images([])


def run_cli(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def predictions(out: str) -> dict[str, tuple[int, float, np.ndarray]]:
    """input -> (digit, confidence, probabilities) from ``netspec predict`` output."""
    lines = out.splitlines()
    assert lines[0].split() == ["input", "digit", "confidence", "probabilities", "0..9"]
    assert set(lines[1]) == {"-"}
    rows = {}
    for line in lines[2:]:
        name, digit_, confidence, *probs = line.split()
        rows[name] = int(digit_), float(confidence), np.array([float(p) for p in probs])
    return rows


# a one-hidden-layer MLP that reaches about 87 % in a tenth of a second of training
MLP64 = """\
[network]
name = "mlp64"

[nodes.image]
op = "input"
shape = [1, 28, 28]

[nodes.flatten]
op = "flatten"

[nodes.hidden]
op = "linear"
out_features = 64

[nodes.relu]
op = "relu"

[nodes.logits]
op = "linear"
out_features = 10

[train]
epochs = 1
batch_size = 32
validation = 100
limit = 3000

[train.optimizer]
type = "adam"
lr = 0.002
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory, mnist_dir) -> tuple[Path, Path]:
    """(spec, best weights) of a short training run."""
    directory = tmp_path_factory.mktemp("predict")
    spec = directory / "mlp64.toml"
    spec.write_text(MLP64, encoding="utf-8")
    result = start_run(spec, directory / "run", data_dir=mnist_dir).run()
    assert result.test.accuracy > 0.8
    return spec, directory / "run" / "best.npz"


def test_predict_real_digits_from_npy_and_png(tmp_path, mnist_dir, model):
    spec, weights = model
    data = load_mnist(mnist_dir)
    images, labels = data.test_images[:30], data.test_labels[:30].astype(np.int64)
    paths = [save_npy(tmp_path / f"digit{i}.npy", image) for i, image in enumerate(images[:15])]
    # black on white, as a digit drawn in a paint program
    paths += [save_png(tmp_path / f"digit{i}.png", 255 - image)
              for i, image in enumerate(images[15:], start=15)]
    code, out, err = run_cli("predict", spec, "--weights", weights, *paths)
    assert code == 0
    # the pictures drawn dark on light are inverted, and predict says so; the .npy are not
    assert err == "".join(f"{path}: inverted, a dark drawing on a light background; the "
                          "network reads light on dark\n" for path in paths[15:])
    rows = predictions(out)
    assert list(rows) == [str(p) for p in paths]

    net = compile(spec)
    meta = load_weights(weights, net).meta
    expected = evaluate(net, normalise_images(images, meta["mean"], meta["std"]), labels)
    for (digit_, confidence, probs), predicted in zip(rows.values(), expected.predictions):
        assert digit_ == predicted == probs.argmax()
        assert probs.shape == (10,) and probs.sum() == pytest.approx(1, abs=0.03)
        assert confidence == pytest.approx(probs.max(), abs=0.006)
    assert (expected.predictions == labels).mean() >= 0.7


def test_predict_names_every_image_of_a_stack(tmp_path, mnist_dir, model):
    spec, weights = model
    test_images = load_mnist(mnist_dir).test_images
    stack = save_npy(tmp_path / "stack.npy", test_images[:3])
    single = save_npy(tmp_path / "one.npy", test_images[3])
    code, out, _ = run_cli("predict", spec, "--weights", weights, stack, single)
    assert code == 0
    rows = predictions(out)
    assert list(rows) == [f"{stack}[0]", f"{stack}[1]", f"{stack}[2]", str(single)]
    code, alone, _ = run_cli("predict", spec, "--weights", weights, single)
    assert predictions(alone)[str(single)][0] == rows[str(single)][0]


@pytest.mark.parametrize(("argv", "message"), [
    (["{spec}", "--weights", "{weights}", "{tmp}/nowhere.npy"], r"{tmp}/nowhere.npy: no such "
                                                                r"file"),
    (["mlp", "--weights", "{weights}", "{tmp}/x.npy"], r"{weights}: these weights belong to "
                                                       r"spec 'mlp64'"),
    (["{spec}", "--weights", "{tmp}/w.npz", "{tmp}/x.npy"], r"{tmp}/w.npz: no such weights "
                                                            r"file"),
])
def test_predict_errors(tmp_path, model, argv, message):
    spec, weights = model
    save_npy(tmp_path / "x.npy", IMAGE)
    fill = {"spec": spec, "weights": weights, "tmp": tmp_path}
    code, out, err = run_cli("predict", *(a.format(**fill) for a in argv))
    assert (code, out) == (1, "")
    assert re.fullmatch(r"netspec predict: error: " + message.format(
        **{k: re.escape(str(v)) for k, v in fill.items()}) + r"[^\n]*\n", err)


def test_predict_says_when_it_resized_or_inverted_a_picture(tmp_path, model):
    """The shipped example inputs of the README: one as MNIST draws it (nothing said), one
    scanned from paper (resized and inverted), one stack (nothing said)."""
    spec, weights = model
    digits = Path(__file__).resolve().parents[1] / "docs" / "digits"
    inputs = [digits / "7.png", digits / "2-on-paper.png", digits / "0-1-4.npy"]
    code, out, err = run_cli("predict", spec, "--weights", weights, *inputs)
    assert code == 0, err
    paper = digits / "2-on-paper.png"
    assert err == (f"{paper}: resized from 112x112 to 28x28\n"
                   f"{paper}: inverted, a dark drawing on a light background; the network "
                   "reads light on dark\n")
    assert [digit_ for digit_, _, _ in predictions(out).values()] == [7, 2, 0, 1, 4]


def test_load_images_notes_name_only_the_images_changed(tmp_path):
    stack = np.zeros((3, 28, 28), dtype=np.uint8)
    stack[1] = 255 - stack[1]  # a light background: inverted
    path = save_npy(tmp_path / "three.npy", stack)
    notes: list[str] = []
    loaded = load_images([path], (1, 28, 28), light_on_dark=True, notes=notes)
    assert notes == [f"{path}: inverted (1 of its 3 images), a dark drawing on a light "
                     "background; the network reads light on dark"]
    assert loaded[1].max() == 0 and loaded[0].max() == 0
    notes.clear()
    load_images([path], (1, 28, 28), light_on_dark=False, notes=notes)
    assert notes == []
