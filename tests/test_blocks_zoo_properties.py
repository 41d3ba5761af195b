"""Property tests of the zoo-scale constructs: shape functions, local values, defaults over
arguments, names from patterns, ``repeat = 0`` and assertions.

* Valid programs: a stage block of linear layers whose widths come from the input's width
  (``channels(x)``), local values and defaults over other arguments, repeated with a count that
  may be 0 and instance names from a pattern, guarded by an assertion that holds; every node id
  and width is worked out here, independently of netspec.
* Mutated programs: the same programs, and whole block-built networks (the shipped ResNet-18,
  DenseNet-121, VGG-11, ViT-B/16, ConvNeXt-Tiny and ShuffleNetV2 with their block files, and
  those block files themselves), with one line changed: a value replaced by
  a hostile or edge value (a huge repeat with nodes after it that read it, repeat 0, names that
  collide or are malformed, shapes of later nodes or of the node itself, failing and malformed
  assertions, unknown names in defaults and local values), a line deleted or an ``inputs``
  dropped. Each either compiles or raises a SpecError whose every diagnostic has a line, and the
  partial table ``netspec compile`` prints of a failed spec never raises.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netspec.common.errors import SpecError
from netspec.lang.shipped import SHIPPED_DIR
from netspec.lang.spec import check_spec
from netspec.plan.compiler import CompileError, compile_plan
from netspec.plan.summary import partial_summary

FILE = "zoo.toml"


# NETSPEC_HYPOTHESIS_PROFILE=long: 20 times as many examples, freshly drawn (tests/conftest.py)
SCALE = 20 if os.environ.get("NETSPEC_HYPOTHESIS_PROFILE") == "long" else 1


def examples(count: int) -> settings:
    return settings(max_examples=count * SCALE, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass
class Program:
    text: str
    expected: dict[str, int] = field(default_factory=dict)  # node id -> width


@st.composite
def programs(draw) -> Program:
    """A stem, then stages of a block whose layers widen what they read by ``grow``."""
    stem = draw(st.integers(1, 6))
    counts = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    grow = draw(st.integers(0, 3))
    pattern = draw(st.sampled_from(["", "unit{index}", "block{s}-{index}", "u{index + 1}"]))
    lines = [
        f"[vars]\ncounts = {counts}\ngrow = {grow}",
        '[assert]\nfew = { check = "= len(counts) <= 3", message = "three stages at most" }',
        '[blocks.layer]\ndefaults = { extra = 0, width = "= channels(x) + grow + extra" }',
        'let = { twice = "= width * 2" }',
        '[blocks.layer.assert]\nwide = { check = "= width >= 1", message = "a width" }',
        '[blocks.layer.nodes]\nfc = { op = "linear", out_features = "= twice // 2" }',
        'act = { op = "relu" }',
        '[blocks.stage]\nargs = ["n", "s"]\n[blocks.stage.nodes]',
    ]
    name = f', name = "{pattern}"' if pattern else ""
    lines.append(f'units = {{ block = "layer", repeat = "= n"{name} }}')
    lines.append(f'[nodes]\nimage = {{ op = "input", shape = [{stem}] }}')
    expected = {"image": stem}
    width = stem
    for s, count in enumerate(counts):
        lines.append(f'stage{s} = {{ block = "stage", n = "= counts[{s}]", s = {s} }}')
        for index in range(count):
            unit = (pattern.replace("{index + 1}", str(index + 1)).replace("{index}", str(index))
                    .replace("{s}", str(s))) if pattern else f"units.{index}"
            width += grow
            expected[f"stage{s}.{unit}.fc"] = width
            expected[f"stage{s}.{unit}.act"] = width
    lines.append('head = { op = "linear", out_features = "= channels(image) + 1" }')
    expected["head"] = stem + 1
    return Program("\n".join(lines) + "\n", expected)


@examples(60)
@given(programs())
def test_valid_programs_compile_to_the_nodes_worked_out_here(program: Program) -> None:
    checked = check_spec(program.text, file=FILE)
    assert not checked.problems, [str(d) for d in checked.problems]
    plan = compile_plan(checked)
    assert {node_id: node.shape[0] for node_id, node in plan.nodes.items()} == program.expected
    assert list(plan.nodes) == list(program.expected)


HOSTILE = [
    "0", "-1", "100000", '"= 100000"', '"= repeat"', '"layer.0"', '""', '"a..b"', '"{index"',
    '"= channels(head)"', '"= channels(later)"', '"= shape(x)[5]"', '"= height(fc)"',
    '"= width(x) // 0"', '"= channels(x) * 1000000000000"', '"= nope"', '"= [index]"',
    '{ check = "= false", message = "no" }', '{ check = "= 1", message = "m" }',
    '{ check = "true" }', '"= channels(\'no\' + str(index))"', '"denselayer{index + 1}"',
    "true", "2.5", '"x"', '["x", "x"]', "[]", '"= index"',
]
_VALUE = re.compile(r"(=\s*)(\"[^\"]*\"|\{[^{}]*\}|\[[^\[\]]*\]|[-\w.]+)")


@st.composite
def mutated(draw, text: str) -> str:
    """``text`` with one line changed: one of its values replaced, the line deleted, its
    inputs dropped, or a huge repeat added to an instance (nodes after it read it)."""
    lines = text.splitlines()
    candidates = [i for i, line in enumerate(lines)
                  if line.strip() and not line.lstrip().startswith("#")]
    at = draw(st.sampled_from(candidates))
    line = lines[at]
    change = draw(st.sampled_from(["value", "value", "value", "delete", "inputs", "huge"]))
    if change == "delete":
        del lines[at]
    elif change == "inputs":
        lines[at] = re.sub(r'inputs = (\[[^\]]*\]|"[^"]*"),?\s*', "", line)
    elif change == "huge" and "block = " in line:
        lines[at] = re.sub(r'repeat = [^,}]+', "repeat = 100000", line) if "repeat" in line \
            else line.replace("block = ", "repeat = 100000, block = ")
    else:
        values = list(_VALUE.finditer(line))
        if values:
            chosen = values[draw(st.integers(0, len(values) - 1))]
            lines[at] = (line[:chosen.start(2)] + draw(st.sampled_from(HOSTILE))
                         + line[chosen.end(2):])
    return "\n".join(lines) + "\n"


def check_never_a_traceback(text: str, directory: Path | None = None) -> None:
    """A network, or a SpecError whose every diagnostic has a line; and the partial table of
    a failed compile prints."""
    try:
        checked = check_spec(text, file=FILE, directory=directory)
        compile_plan(checked)
    except CompileError as exc:
        assert all(d.line is not None for d in exc.diagnostics), [str(d) for d in
                                                                   exc.diagnostics]
        assert isinstance(partial_summary(exc, 1, None), str)
        assert isinstance(partial_summary(exc, 1, 1), str)
        return
    except SpecError as exc:
        assert all(d.line is not None for d in exc.diagnostics), [str(d) for d in
                                                                   exc.diagnostics]


@examples(150)
@given(st.data())
def test_mutated_programs_compile_or_fail_with_lines(data) -> None:
    program = data.draw(programs())
    check_never_a_traceback(data.draw(mutated(program.text)))


def _shipped(name: str, tmp: Path) -> str:
    """A shipped spec in a folder of its own (with its block files), for mutating."""
    if not (tmp / "blocks").exists():
        shutil.copytree(SHIPPED_DIR / "blocks", tmp / "blocks")
    return (SHIPPED_DIR / f"{name}.toml").read_text()


NETWORKS = ["resnet18", "densenet121", "vgg11_bn", "vit_b_16", "convnext_tiny",
            "shufflenet_v2_x1_0"]


@examples(40)
@given(st.sampled_from(NETWORKS), st.data())
def test_mutated_block_built_networks_compile_or_fail_with_lines(tmp_path_factory, name,
                                                                  data) -> None:
    tmp = tmp_path_factory.getbasetemp() / "zoo_networks"
    tmp.mkdir(exist_ok=True)
    text = _shipped(name, tmp)
    check_never_a_traceback(data.draw(mutated(text)), tmp)


# a shared block file and a network that includes it; the transformers' at a size that
# compiles in a blink (their layers of tokens, attention, learned tensors and channel split)
BLOCK_FILES = [("resnet18", "resnet.toml"), ("vit_mnist", "vit.toml"),
               ("convnext_tiny", "convnext.toml"), ("shufflenet_v2_x1_0", "shufflenet.toml")]


@examples(50)
@given(st.sampled_from(BLOCK_FILES), st.data())
def test_mutated_shared_blocks_compile_or_fail_with_lines(tmp_path_factory, network,
                                                          data) -> None:
    """A shared block file itself mutated, under a network that includes it."""
    name, block_file = network
    tmp = tmp_path_factory.getbasetemp() / "zoo_blocks"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    text = _shipped(name, tmp)
    blocks = (SHIPPED_DIR / "blocks" / block_file).read_text()
    (tmp / "blocks" / block_file).write_text(data.draw(mutated(blocks)))
    check_never_a_traceback(text, tmp)


def test_the_huge_repeat_of_the_issue_is_refused_and_its_table_prints(tmp_path) -> None:
    # ResNet-18 with a shared block: layer1 refused for its size, layer2.. read it
    text = _shipped("resnet18", tmp_path).replace('repeat = "= depths[0]"', "repeat = 100000")
    try:
        compile_plan(check_spec(text, file=FILE, directory=tmp_path))
    except CompileError as exc:
        assert "would make at least 100,000 nodes" in str(exc)
        assert "conv1" in partial_summary(exc, 1, None)
    else:
        raise AssertionError("a 100,000-instance repeat compiled")
