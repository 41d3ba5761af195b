"""The NumPy executor: parameters initialised from one seed, forward and backward over a plan."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from netspec.common.errors import NetspecError
from netspec.lang.spec import Spec
from netspec.ops import Context
from netspec.ops.base import NO_FUSION, Fusion, param_key
from netspec.ops.shapes import format_shape
from netspec.plan.budget import inference_chunk
from netspec.plan.compiler import Plan, compile_plan
from netspec.runtime.initializers import initialise

DTYPES = {"float32": np.float32, "float64": np.float64}


class Network:
    """A compiled network with live parameters.

    ``params`` and ``buffers`` map ``"node.name"`` to arrays in PyTorch layouts; writing into
    them in place changes the network. ``grads`` is filled by :meth:`backward`, with the same
    keys as ``params``; ``trainable`` lists the keys an optimizer should update.
    ``node_timer``, when set, is called with (node id, ``"forward"`` or ``"backward"``,
    seconds) after every node runs (:mod:`netspec.train.profile` times nodes with it).

    ``fuse`` (default) lets adjacent nodes run as one where the graph allows it, in training
    and in inference without kept caches (see :meth:`_plan_fusions`): the same values, bit for
    bit, except the batchnorms folded into convolutions in inference (equal up to rounding).
    """

    def __init__(self, plan: Plan, seed: int = 0, dtype: str = "float32", fuse: bool = True):
        if dtype not in DTYPES:
            raise NetspecError(f"dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
        self.plan = plan
        self.dtype = np.dtype(DTYPES[dtype])
        init_seed, dropout_seed = np.random.SeedSequence(seed).spawn(2)
        self.params: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.trainable: list[str] = []
        self._init_parameters(np.random.default_rng(init_seed))
        self.grads: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(dropout_seed)
        self._node_params = {
            node_id: {name: self.params[param_key(node_id, name)] for name in node.param_specs}
            for node_id, node in plan.nodes.items()
        }
        self._node_buffers = {
            node_id: {name: self.buffers[param_key(node_id, name)] for name in node.buffer_specs}
            for node_id, node in plan.nodes.items()
        }
        self._caches: dict[str, Any] | None = None
        self._inference_chunk = inference_chunk(plan, dtype)
        # whether a node or anything upstream of it has parameters: without an input
        # gradient, backward stops where this is False
        self._param_ancestry: dict[str, bool] = {}
        for node_id, node in plan.nodes.items():
            self._param_ancestry[node_id] = bool(node.param_specs) or any(
                self._param_ancestry[s] for s in node.inputs)
        self._kept_output_shape: tuple[int, ...] = ()
        self.node_timer: Callable[[str, str, float], None] | None = None
        # every node's consumers, once per input they take it as
        self._consumers: dict[str, list[str]] = {node_id: [] for node_id in plan.nodes}
        for node_id, node in plan.nodes.items():
            for source in node.inputs:
                self._consumers[source].append(node_id)
        self._after_pool = self._activations_after_pool()
        self._moved = frozenset(self._after_pool.values())
        self.fuse = fuse
        self._plan_fusions()
        self._caches_fused = False

    def _activations_after_pool(self) -> dict[str, str]:
        """Max poolings, by id, mapped to the activation that feeds them and that runs after
        them instead (see ``Op.commutes_with_max_pool``): values and gradients are the same,
        the activation's work is the pooled size."""
        moved = {}
        for node_id, node in self.plan.nodes.items():
            users = self._consumers[node_id]
            if (node.op.commutes_with_max_pool and node_id != self.plan.output
                    and len(users) == 1 and self.plan.nodes[users[0]].op.is_max_pool):
                moved[users[0]] = node_id
        return moved

    def _plan_fusions(self) -> None:
        """Which nodes run as one, decided once from the graph.

        * A ReLU that is the only consumer of a batchnorm, an add or a max pooling runs
          inside it, in place on its output (``_absorbed``, by the ReLU's id, and
          ``_fusions[...].relu``); so does a ReLU that runs behind a max pooling
          (``_pool_relus``, by the pooling's id).
        * A node that is the only reader of an array nobody else refers to (a convolution's,
          a linear layer's, an add's, a concat's or a max pooling's output, a batchnorm's
          without a ReLU) may work in that array's memory (``_fusions[...].overwrite_input``):
          a batchnorm centres it in place, a ReLU clips it in place, an add sums into it.
        * In inference, a batchnorm that is a convolution's only consumer is folded into the
          convolution's weight and bias (``_folded``: convolution id -> batchnorm id).
        """
        plan, nodes = self.plan, self.plan.nodes

        def only_consumer(node_id: str) -> str | None:
            users = self._consumers[node_id]
            return users[0] if len(users) == 1 and node_id != plan.output else None

        relu_into: dict[str, str] = {}
        for node_id, node in nodes.items():
            user = only_consumer(node_id)
            if (node.op.absorbs_relu and user is not None and nodes[user].op_name == "relu"
                    and user not in self._moved):
                relu_into[node_id] = user
        self._absorbed = frozenset(relu_into.values())
        self._fusions: dict[str, Fusion] = {}
        for node_id, node in nodes.items():
            source = node.inputs[0] if node.inputs else None
            overwrite = (source is not None
                         and nodes[source].op.output_is_fresh(Fusion(relu=source in relu_into))
                         and only_consumer(source) == node_id
                         and node_id not in self._moved and node_id not in self._absorbed)
            if overwrite or node_id in relu_into:
                self._fusions[node_id] = Fusion(relu=node_id in relu_into,
                                                overwrite_input=overwrite)
        # a ReLU moved behind a max pooling runs inside the pooling, like one after it
        self._pool_relus = frozenset(
            pool_id for pool_id, activation in self._after_pool.items()
            if nodes[pool_id].op.absorbs_relu and nodes[activation].op_name == "relu")
        for pool_id in self._pool_relus:
            self._fusions[pool_id] = Fusion(
                relu=True, overwrite_input=self._fusions.get(pool_id, NO_FUSION).overwrite_input)
        self._folded: dict[str, str] = {}
        for node_id, node in nodes.items():
            user = only_consumer(node_id)
            if (user is not None and hasattr(node.op, "infer_scaled")
                    and hasattr(nodes[user].op, "inference_affine")):
                self._folded[node_id] = user
        self._folded_into = frozenset(self._folded.values())

    @property
    def order(self) -> list[str]:
        return self.plan.order

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return self.plan.shapes

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.plan.nodes[self.plan.output].shape

    def _init_parameters(self, rng: np.random.Generator) -> None:
        # one generator walks the nodes in topological order, so a seed fixes every value
        for node_id, node in self.plan.nodes.items():
            for name, spec in node.param_specs.items():
                key = param_key(node_id, name)
                if spec.init == "weight":
                    if node.fixed_weight is not None:
                        values = node.fixed_weight
                    else:
                        scale = getattr(node.params, "init_scale", None)
                        values = initialise(node.weight_init, spec.shape, rng, scale)
                elif spec.init == "bias":
                    values = np.full(spec.shape, node.params.bias_init)
                elif spec.init == "value":
                    values = np.full(spec.shape, node.params.value)
                else:
                    values = np.zeros(spec.shape) if spec.init == "zeros" else np.ones(spec.shape)
                self.params[key] = values.astype(self.dtype)
                if name in node.trainable_names:
                    self.trainable.append(key)
            for name, spec in node.buffer_specs.items():
                fill = np.zeros if spec.init == "zeros" else np.ones
                self.buffers[param_key(node_id, name)] = fill(spec.shape, dtype=self.dtype)

    def _inputs(self, x: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        given = dict(x) if isinstance(x, Mapping) else {self.plan.inputs[0]: x}
        if isinstance(x, Mapping):
            missing = set(self.plan.inputs) - set(given)
            unknown = set(given) - set(self.plan.inputs)
            if missing or unknown:
                raise NetspecError(f"inputs must be given for {sorted(self.plan.inputs)}; "
                                   f"missing {sorted(missing)}, unknown {sorted(unknown)}")
        elif len(self.plan.inputs) != 1:
            raise NetspecError(f"this network has inputs {list(self.plan.inputs)}; pass a dict")
        batch = None
        for input_id, array in given.items():
            array = np.asarray(array)
            expected = self.plan.nodes[input_id].shape
            if array.shape[1:] != expected or array.ndim != len(expected) + 1:
                raise NetspecError(f"input '{input_id}' must have shape (N, "
                                   f"{', '.join(map(str, expected))}), got "
                                   f"{format_shape(array.shape)}")
            if array.shape[0] == 0:
                raise NetspecError(f"input '{input_id}' holds no samples (batch size 0)")
            if batch is not None and array.shape[0] != batch:
                raise NetspecError("all inputs must have the same batch size")
            batch = array.shape[0]
            given[input_id] = array.astype(self.dtype, copy=False)
        return given

    def forward(self, x: np.ndarray | Mapping[str, np.ndarray], train: bool = False,
                keep: bool | None = None) -> np.ndarray:
        """Run the network on a batch and return the output node's value.

        ``keep`` (default: ``train``) keeps the caches that :meth:`backward` needs.
        """
        keep = train if keep is None else keep
        given = self._inputs(x)
        batch = len(next(iter(given.values())))
        if train or keep or batch <= self._inference_chunk:
            return self._forward(given, train, keep)
        # inference in chunks whose working set stays in the CPU caches; when not training
        # every op treats samples independently, so the values are those of one pass
        parts = -(-batch // self._inference_chunk)
        size = -(-batch // parts)
        out = np.concatenate([
            self._forward({key: value[start:start + size] for key, value in given.items()},
                          train, keep)
            for start in range(0, batch, size)])
        self._kept_output_shape = out.shape
        return out

    def _forward(self, given: dict[str, np.ndarray], train: bool, keep: bool) -> np.ndarray:
        ctx = Context(train=train, rng=self.rng, batch=len(next(iter(given.values()))))
        values: dict[str, np.ndarray] = {}
        caches: dict[str, Any] = {}
        remaining_uses = {node_id: len(users) for node_id, users in self._consumers.items()}
        # an inference whose caches are kept (for a backward through it) runs node by node
        fused = self.fuse and (train or not keep)
        folding = fused and not train
        for node_id, node in self.plan.nodes.items():
            xs = [given[node_id]] if node.op_name == "input" else [values[s] for s in node.inputs]
            activation = None if fused and node_id in self._pool_relus \
                else self._after_pool.get(node_id)
            if node_id in self._moved or (fused and node_id in self._absorbed) or (
                    folding and node_id in self._folded_into):
                # it runs after the pooling it feeds, or ran inside the node before it:
                # its value is its input's
                out = xs[0]
            elif folding and node_id in self._folded:
                out = self._infer_folded(node_id, xs[0])
            else:
                out, cache = self._forward_node(
                    node_id, xs, ctx, self._fusions.get(node_id, NO_FUSION) if fused
                    else NO_FUSION)
                if keep:
                    caches[node_id] = cache
            if activation is not None:
                # the pooled output is new and only the activation reads it
                out, cache = self._forward_node(
                    activation, [out], ctx,
                    Fusion(overwrite_input=True) if fused and node.op.fresh_output
                    else NO_FUSION)
                if keep:
                    caches[activation] = cache
            values[node_id] = out
            if not keep:
                # free activations nobody needs any more: inference memory stays flat (an
                # unkept cache may refer to an input too)
                cache = None
                for source in node.inputs:
                    remaining_uses[source] -= 1
                    if remaining_uses[source] == 0 and source != self.plan.output:
                        del values[source]
        self._caches = caches if keep else None
        self._caches_fused = fused
        self._kept_output_shape = values[self.plan.output].shape
        # ops may leave outputs in another memory order (a convolution's is batch-innermost);
        # callers get ordinary C-ordered arrays
        return np.ascontiguousarray(values[self.plan.output])

    def _forward_node(self, node_id: str, xs: list[np.ndarray], ctx: Context,
                      fusion: Fusion = NO_FUSION) -> tuple[Any, Any]:
        start = perf_counter() if self.node_timer else 0.0
        out = self.plan.nodes[node_id].op.fused_forward(
            xs, self._node_params[node_id], self._node_buffers[node_id], ctx, fusion)
        if self.node_timer:
            self.node_timer(node_id, "forward", perf_counter() - start)
        return out

    def _infer_folded(self, conv_id: str, x: np.ndarray) -> np.ndarray:
        """Inference of a convolution with the batchnorm after it folded in (and the ReLU
        after that, if the batchnorm absorbs one); computed from the live parameters on every
        call, which costs a pass over the weights only."""
        start = perf_counter() if self.node_timer else 0.0
        norm_id = self._folded[conv_id]
        scale, shift = self.plan.nodes[norm_id].op.inference_affine(
            self._node_params[norm_id], self._node_buffers[norm_id])
        relu = norm_id in self._fusions and self._fusions[norm_id].relu
        out = self.plan.nodes[conv_id].op.infer_scaled(x, self._node_params[conv_id], scale,
                                                       shift, relu)
        if self.node_timer:
            self.node_timer(conv_id, "forward", perf_counter() - start)
        return out

    def _backward_node(self, node_id: str, cache: Any, grad: np.ndarray,
                       need_dx: bool) -> tuple[list[np.ndarray | None], dict[str, np.ndarray]]:
        op = self.plan.nodes[node_id].op
        start = perf_counter() if self.node_timer else 0.0
        if need_dx or not hasattr(op, "param_grads"):
            dxs, dparams = op.backward(cache, grad)
        else:
            dxs, dparams = [], op.param_grads(cache, grad)
        if self.node_timer:
            self.node_timer(node_id, "backward", perf_counter() - start)
        return dxs, dparams

    def backward(self, dy: np.ndarray,
                 need_input_grad: bool = True) -> np.ndarray | dict[str, np.ndarray] | None:
        """Backpropagate ``dy`` (gradient w.r.t. the output); fill ``grads`` and return the
        gradient w.r.t. the input (a dict when the network has several inputs).

        ``need_input_grad=False`` (training) returns None and skips the work that only the
        input gradient needs, such as the first convolution's im2col transpose.
        """
        if self._caches is None:
            raise NetspecError("backward needs a forward pass with train=True (or keep=True) "
                               "first")
        dy = np.asarray(dy)
        # the batch must match the forward's too: a smaller dy would broadcast silently
        if dy.shape != self._kept_output_shape:
            raise NetspecError(f"dy must have the shape of the forward's output "
                               f"{format_shape(self._kept_output_shape)}, got "
                               f"{format_shape(dy.shape)}")
        caches, self._caches = self._caches, None
        upstream: dict[str, np.ndarray] = {self.plan.output: dy.astype(self.dtype, copy=False)}
        input_grads: dict[str, np.ndarray] = {}
        wanted = None if need_input_grad else self._param_ancestry
        for node_id in reversed(self.plan.order):
            node = self.plan.nodes[node_id]
            grad = upstream.pop(node_id, None)
            if grad is None:
                continue
            sources_want = wanted is None or any(wanted[s] for s in node.inputs)
            if node_id in self._moved or (self._caches_fused and node_id in self._absorbed):
                # its backward ran with the pooling's, or runs with the node before it (whose
                # output it is): the gradient is for its input already
                if sources_want:
                    source = node.inputs[0]
                    upstream[source] = grad if source not in upstream else upstream[source] + grad
                continue
            cache = caches.pop(node_id)
            if not sources_want and not node.param_specs:
                continue
            activation = None if self._caches_fused and node_id in self._pool_relus \
                else self._after_pool.get(node_id)
            if activation is not None:
                grad = self._backward_node(activation, caches.pop(activation), grad, True)[0][0]
            dxs, dparams = self._backward_node(node_id, cache, grad, sources_want)
            for name, value in dparams.items():
                self.grads[param_key(node_id, name)] = value
            if node.op_name == "input":
                # a copy: ops may hand the same array to several inputs, or return dy itself
                input_grads[node_id] = np.array(dxs[0], order="C")
                continue
            for source, dx in zip(node.inputs, dxs):
                if dx is None or (wanted is not None and not wanted[source]):
                    continue
                # a node feeding several others receives the sum of their gradients
                upstream[source] = dx if source not in upstream else upstream[source] + dx
        if not need_input_grad:
            return None
        for node_id in self.plan.inputs:
            input_grads.setdefault(node_id, np.zeros((dy.shape[0], *self.shapes[node_id]),
                                                     dtype=self.dtype))
        if len(self.plan.inputs) == 1:
            return input_grads[self.plan.inputs[0]]
        return input_grads

    def zero_grads(self) -> None:
        self.grads.clear()

    def state(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer, by key: what a weights file holds."""
        return {**self.params, **self.buffers}

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy parameters and buffers in place, checking every key and shape first."""
        own = self.state()
        missing = sorted(set(own) - set(arrays))
        unexpected = sorted(set(arrays) - set(own))
        if missing or unexpected:
            raise NetspecError(f"weights do not fit this network: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        for key, target in own.items():
            if arrays[key].shape != target.shape:
                raise NetspecError(f"weights do not fit this network: '{key}' has shape "
                                   f"{format_shape(arrays[key].shape)}, the network needs "
                                   f"{format_shape(target.shape)}")
        for key, target in own.items():
            target[...] = arrays[key]


def compile(source: str | Path | Spec | Plan, seed: int = 0,  # noqa: A001 - public API name
            dtype: str = "float32", overrides: Mapping[str, Any] | None = None,
            fuse: bool = True) -> Network:
    """Compile a spec (path, shipped name, Spec or Plan) into a runnable :class:`Network`,
    with ``--set`` overrides applied to a spec read from a file."""
    plan = source if isinstance(source, Plan) else compile_plan(source, overrides)
    return Network(plan, seed=seed, dtype=dtype, fuse=fuse)
