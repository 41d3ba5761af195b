"""ONNX's own backend node tests (written by others, with reference outputs) run on netspec.

Every node test of an op netspec imports runs, except those that exercise what netspec cannot
express; each exclusion carries the reason, and a test checks that netspec really refuses
each excluded case with that reason rather than computing something else.
"""

from __future__ import annotations

import re
import unittest
import warnings

import numpy as np
import pytest

pytest.importorskip("onnx")

import onnx.backend.test  # noqa: E402

from netspec.interchange import onnx_backend  # noqa: E402
from netspec.interchange.onnx_import import OnnxImportError  # noqa: E402

# the ONNX ops netspec imports, as their node tests are named
OPS = ("relu", "leakyrelu", "sigmoid", "tanh", "softmax", "conv", "basic_conv", "maxpool",
       "averagepool", "globalaveragepool", "gemm", "matmul", "batchnorm", "add", "sum",
       "concat", "flatten", "reshape", "dropout", "training_dropout", "identity",
       "mul", "clip", "hardswish", "hardsigmoid", "logsoftmax", "reducemean", "convtranspose",
       "resize", "gelu", "upsample")
INCLUDE = rf"^test_({'|'.join(OPS)})(_.*)?_cpu$"

# test-name pattern -> (why netspec does not run it, a fragment of netspec's refusal)
EXCLUDED = {
    # the ops of the convolutional networks (issue 24); first, as some of these names end in
    # "_expanded" too (HardSwish's expansion, HardSigmoid and Mul, does import)
    r"^test_clip_(default_inbounds(_expanded)?|example|inbounds|min_greater_than_max|outbounds"
    r"|splitbounds)_cpu$|^test_gelu_(default|tanh)_1_cpu$|^test_hardsigmoid_example_cpu$"
    r"|^test_mul_(example|bcast)_cpu$": (
        "an input with no axis besides the batch (netspec inputs have a per-sample shape)",
        "no axis besides the batch"),
    r"^test_mul_u?int|^test_clip_default_int8": (
        "integer tensors: netspec computes in floating point", "values are not supported"),
    r"^test_clip_default_max_cpu$": ("a Clip with an upper bound only",
                                     "netspec clips between two bounds"),
    r"^test_convtranspose_(1d|3d)_cpu$": ("1-D and 3-D transposed convolutions",
                                          "transposed convolution is not supported"),
    r"^test_convtranspose_autopad_same_cpu$": ("SAME padding (auto_pad)", "auto_pad=SAME_UPPER"),
    r"^test_convtranspose_(kernel_shape|output_shape)_cpu$": (
        "an output_shape attribute instead of pads", "attribute 'output_shape'"),
    r"^test_hardsigmoid_(default_)?cpu$": ("alpha and beta other than PyTorch's hardsigmoid's",
                                           "netspec's hardsigmoid is PyTorch's"),
    r"^test_logsoftmax_axis_0_cpu$": ("normalising over the batch axis", "is the batch axis"),
    r"^test_resize_.*(axes|not_larger|not_smaller)_": ("resizing chosen axes (axes, "
                                                       "keep_aspect_ratio_policy)",
                                                       "attribute 'axes' is not supported"),
    r"^test_resize_(downsample_|tf_crop)|^test_resize_upsample_sizes_(cubic|nearest)_cpu$"
    r"|^test_resize_upsample_scales_linear_half_pixel_symmetric_cpu$": (
        "downsampling and non-integer scales: netspec's upsample has integer factors",
        "by integer factors only"),
    r"^test_resize_upsample_(scales|sizes)_(cubic|linear_align_corners"
    r"|nearest_ceil_half_pixel|nearest_floor_align_corners"
    r"|nearest_round_prefer_ceil_asymmetric)": (
        "interpolation other than PyTorch's nearest and bilinear (align_corners=False)",
        "netspec's upsample is PyTorch's nearest, or bilinear"),
    r"(?<!hardswish)_expanded(_ver18)?_cpu$": (
        "the op expanded into its ONNX function body uses ops netspec does not import (Where, "
        "Max, Div, Exp, ...)", "is not supported"),
    r"^test_(sigmoid|tanh|leakyrelu)_example_cpu$|^test_sum_|^test_dropout_default_old_cpu$"
    r"|^test_matmul_1d_|^test_add_bcast_cpu$|^test_concat_1d_": (
        "the input has no axis besides the batch (netspec inputs have a per-sample shape)",
        "no axis besides the batch"),
    r"^test_add_u?int|^test_maxpool_2d_uint8_cpu$": (
        "integer tensors: netspec computes in floating point", "values are not supported"),
    r"^test_identity_(opt|sequence)_cpu$": ("optional and sequence values",
                                            "inputs are not supported"),
    r"^test_(max|average)pool_(1d|3d)_": ("1-D and 3-D pooling", "only 2-D pooling"),
    r"^test_(max|average)pool_2d_dilations_cpu$": ("dilated pooling", "dilations="),
    r"^test_(max|average)pool_2d_pads(_count_include_pad)?_cpu$": (
        "padding larger than half the kernel", "at most half the kernel"),
    r"^test_(max|average)pool_2d_same_(upper|lower)_cpu$": (
        "SAME padding that differs between the two sides of an axis",
        "pads the two sides differently"),
    r"^test_maxpool_with_argmax_": ("the Indices output", "a netspec network has one"),
    r"_training_mode_cpu$|^test_training_dropout": (
        "training mode (batch statistics, random masks)", "training_mode"),
    r"^test_dropout_default_mask": ("the mask output", "a netspec network has one"),
    r"^test_concat_(2d_axis_(0|negative_2)|3d_axis_(0|negative_3))_cpu$": (
        "joining along the batch axis", "joins along the batch"),
    r"^test_flatten_(axis[023]|negative_axis[124])_cpu$": (
        "flattening at another axis than 1", "flattens all but the batch axis"),
    r"^test_gemm_(transposeA|all_attributes)_cpu$": ("transA=1", "transA=1"),
    r"^test_gemm_default_matrix_bias_cpu$": ("a bias that varies along the batch",
                                             "one value per output feature"),
    r"^test_matmul_(3d|4d|bcast|4d_1d)_cpu$": ("batched matrix products",
                                               "only a 2-D weight"),
    r"^test_reshape_(allowzero_reordered|negative_extended_dims|one_dim|reordered_all_dims)"
    r"_cpu$": ("reshapes that move values across the batch axis", "changes the batch axis"),
    r"^test_softmax_axis_0_cpu$": ("softmax over the batch axis", "normalises over the batch"),
}

with warnings.catch_warnings():
    # ONNX computes every node test's reference outputs here; those of other ops overflow
    warnings.simplefilter("ignore", RuntimeWarning)
    backend_test = onnx.backend.test.BackendTest(onnx_backend, __name__)
_node_items = backend_test._test_items["NodeModel"]  # the node tests, by name


def _excluded(name: str) -> str | None:
    return next((pattern for pattern in EXCLUDED if re.search(pattern, name)), None)


INCLUDED = sorted(name for name in _node_items
                  if re.search(INCLUDE, name) and _excluded(name) is None)
EXCLUDED_CASES = sorted(name for name in _node_items
                        if re.search(INCLUDE, name) and _excluded(name) is not None)

# the included node tests as one unittest class: ONNX's own test functions, comparisons
# and tolerances
OnnxNodeConformance = type("OnnxNodeConformance", (unittest.TestCase,),
                           {name: _node_items[name].func for name in INCLUDED})


def counts_per_op() -> dict[str, int]:
    """How many included node tests each ONNX op has (for the record)."""
    counts: dict[str, int] = {}
    for name in INCLUDED:
        op = next(op for op in sorted(OPS, key=len, reverse=True)
                  if name.startswith(f"test_{op}"))
        counts[op] = counts.get(op, 0) + 1
    return counts


def test_every_supported_op_has_node_tests_that_run() -> None:
    counts = counts_per_op()
    for op in ("relu", "leakyrelu", "sigmoid", "tanh", "softmax", "conv", "maxpool",
               "averagepool", "globalaveragepool", "gemm", "matmul", "batchnorm", "add",
               "concat", "flatten", "dropout", "identity"):
        assert counts.get(op, 0) >= 1, f"no node test of {op} runs"
    assert len(INCLUDED) >= 45


@pytest.mark.parametrize("name", EXCLUDED_CASES)
def test_excluded_cases_are_refused_for_the_stated_reason(name: str) -> None:
    reason, fragment = EXCLUDED[_excluded(name)]
    case = next(case for case in onnx.backend.test.loader.load_model_tests(kind="node")
                if f"{case.name}_cpu" == name)
    inputs = [np.asarray(onnx.numpy_helper.to_array(x) if hasattr(x, "dims") else x)
              for x in case.data_sets[0][0]]
    with pytest.raises(OnnxImportError) as refusal:
        onnx_backend.prepare(case.model).run(inputs)
    assert fragment in str(refusal.value), (reason, str(refusal.value))
