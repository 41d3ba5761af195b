"""MNIST, the other data sets and file layouts, and the data helpers training needs; nothing
here knows about networks.

Files are located (explicit directory, user cache, download), verified against SHA-256 checksums
of their decoded bytes, and parsed with structure checks, so that bad data stops with a message
that names the file instead of a NumPy traceback.
"""

from netspec.data.batches import (
    augment_batch,
    iterate_minibatches,
    normalisation_stats,
    shift_rotate,
    split_train_validation,
)
from netspec.data.catalog import NAMED_SETS, load_named
from netspec.data.choice import DataChoice, choose_data, data_info, load_data
from netspec.data.dataset import DataInfo, Dataset, channel_stats
from netspec.data.download import MIRRORS, NPM_PACKAGE
from netspec.data.idx import read_idx
from netspec.data.mnist import (
    MNIST_FILES,
    MNIST_SHA256,
    MnistData,
    default_cache_dir,
    load_mnist,
    locate_mnist,
)

__all__ = [
    "MIRRORS",
    "MNIST_FILES",
    "MNIST_SHA256",
    "NAMED_SETS",
    "NPM_PACKAGE",
    "DataChoice",
    "DataInfo",
    "Dataset",
    "MnistData",
    "augment_batch",
    "channel_stats",
    "choose_data",
    "data_info",
    "load_data",
    "load_named",
    "default_cache_dir",
    "iterate_minibatches",
    "load_mnist",
    "locate_mnist",
    "normalisation_stats",
    "read_idx",
    "shift_rotate",
    "split_train_validation",
]
