"""The package's shape: imports flow one way through the layers, no cycles, and one file adds an algorithm."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mixflow"

#: The layers, lowest first (docs/design.md). A module may import from its own layer and the ones
#: listed before it, never from a later one.
LAYERS = {
    "errors": 0,  # the error types every layer raises
    "algorithms": 1,  # pure math
    "utils": 2,
    "testing": 2,
    "data": 3,
    "loss": 4,
    "providers": 5,
    "engine": 6,
    "integrations": 7,
    "config": 8,
    "recipes": 9,
    "search": 10,
    "bench": 11,
    "cli": 12,
}

#: What the algorithms layer may not import: it does no I/O, no distributed work, no model loading.
IMPURE = ("transformers", "accelerate", "datasets", "torch.distributed", "pathlib", "os", "shutil", "tempfile", "io")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Every module of the package that ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = root.name
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == package)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != package:
                continue
            for alias in node.names:  # `from pkg.sub import module` imports a module
                candidate = f"{node.module}.{alias.name}"
                as_path = root.parent.joinpath(*candidate.split("."))
                found.add(candidate if as_path.with_suffix(".py").is_file() or as_path.is_dir() else node.module)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    return {module_name(p, root): imports_of(p, root) for p in sorted(root.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for source, targets in graph.items():
        mine = layer_of(source)
        if mine is None:  # the top-level public API re-exports every layer
            continue
        for target in targets:
            theirs = layer_of(target)
            if target.count(".") == 0:
                out.append(f"{source} imports the top-level package (import the module itself)")
            elif theirs is None:
                out.append(f"{source} imports {target}, which belongs to no layer")
            elif theirs > mine:
                out.append(f"{source} (layer {mine}) imports {target} (layer {theirs})")
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the package's modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_package_folder_is_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders <= set(LAYERS), f"unlayered packages: {sorted(folders - set(LAYERS))}"
    flat = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert flat == [], f"modules outside any layer: {flat}"


def test_imports_flow_one_way_through_the_layers():
    assert layer_violations(import_graph(PACKAGE)) == []


def test_no_import_cycle():
    assert find_cycle(import_graph(PACKAGE)) is None


def test_the_algorithms_layer_is_pure():
    for path in sorted((PACKAGE / "algorithms").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        bad = sorted(n for n in names if any(n == x or n.startswith(x + ".") for x in IMPURE))
        assert bad == [], f"{path.name} imports {bad}"
        assert "torch.autograd" not in path.read_text(encoding="utf-8"), f"{path.name} uses autograd"
        assert "open(" not in path.read_text(encoding="utf-8"), f"{path.name} opens a file"


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text), encoding="utf-8")


def test_the_checks_catch_a_layer_violation_and_a_cycle(tmp_path):
    root = tmp_path / "mixflow"
    _write(
        root,
        {
            "__init__.py": "",
            "algorithms/__init__.py": "",
            "algorithms/a.py": "from mixflow.engine.e import x\n",  # layer 1 reaching up to layer 6
            "engine/__init__.py": "",
            "engine/e.py": "def f():\n    from mixflow.engine.g import y\n",  # a cycle hidden in a function
            "engine/g.py": "from mixflow.engine import e\n",
        },
    )
    graph = import_graph(root)
    assert layer_violations(graph) == ["mixflow.algorithms.a (layer 1) imports mixflow.engine.e (layer 6)"]
    assert find_cycle(graph) == ["mixflow.engine.e", "mixflow.engine.g", "mixflow.engine.e"]


NEW_ALGORITHM = '''
"""A user's algorithm: one file, nothing else edited."""
from dataclasses import dataclass

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.params import AlgorithmParams
from mixflow.algorithms.registry import register_algorithm
from mixflow.algorithms.weights import Weights


@dataclass
class HalfParams(AlgorithmParams):
    rate: float = 0.5
    """how far to move towards uniform"""


@register_algorithm
class Half(DomainAlgorithm[HalfParams]):
    name = "{name}"
    description = "moves p halfway to uniform at every update"
    Params = HalfParams

    def update(self, stats, step):
        p = self.sampling_weights
        return Weights(sampling=(1 - self.params.rate) * p + self.params.rate / self.num_domains)
'''

#: Trains the dropped-in algorithm (argv: the config file).
TRAIN_IT = "import sys; from mixflow.cli.main import main; sys.exit(main(['train', '--quiet', sys.argv[1]]))"


def _mixflow_list(pythonpath: list[Path]) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}
    code = (
        "import sys, mixflow; assert mixflow.__file__.startswith(sys.argv[1]), mixflow.__file__; "
        "from mixflow.cli.main import main; main(['list'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(pythonpath[0])], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_new_algorithm_is_one_file(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "mixflow", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "mixflow" / "algorithms" / "halfway.py").write_text(NEW_ALGORITHM.format(name="halfway"), encoding="utf-8")
    listing = _mixflow_list([copy])
    assert "  halfway: moves p halfway to uniform at every update" in listing
    assert "rate (a number, default 0.5): how far to move towards uniform" in listing
    # and it trains: two steps, one update after each, through the same command a user runs
    data = tmp_path / "data"
    _write(
        data,
        {
            "a.jsonl": '{"text": "aaaa bbbb"}\n' * 40,
            "b.jsonl": '{"text": "cccc dddd"}\n' * 40,
            "dataset_info.json": '{"a": {"file_name": "a.jsonl"}, "b": {"file_name": "b.jsonl"}}',
        },
    )
    config = {
        "dataset": "a,b",
        "dataset_dir": str(data),
        "tokenizer": "byte",
        "cutoff_len": 16,
        "train_type": "dynamic_mix",
        "component": {"name": "halfway"},
        "update_step": 1,
        "init_mixture_proportions": [0.9, 0.1],
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "model_config": {
            "model_type": "llama",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 16,
        },
        "output_dir": str(tmp_path / "run"),
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
    }
    (tmp_path / "halfway.yaml").write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    env = {**os.environ, "PYTHONPATH": str(copy)}
    out = subprocess.run(
        [sys.executable, "-c", TRAIN_IT, str(tmp_path / "halfway.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    logged = [json.loads(line) for line in (tmp_path / "run" / "halfway_weights.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2]
    assert np.allclose(logged[-1]["sampling_weights"], [0.6, 0.4])  # 0.9 → 0.7 → 0.6: the returned p was applied


def test_a_plugin_package_adds_an_algorithm_through_an_entry_point(tmp_path):
    plugin = tmp_path / "site"
    _write(
        plugin,
        {
            "myplugin/__init__.py": NEW_ALGORITHM.format(name="plugin_half"),
            "myplugin-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: myplugin\nVersion: 0.1\n",
            "myplugin-0.1.dist-info/entry_points.txt": "[mixflow.algorithms]\nhalf = myplugin\n",
        },
    )
    listing = _mixflow_list([PACKAGE.parent, plugin])
    assert "  plugin_half: moves p halfway" in listing


@pytest.mark.parametrize("limit_lines", [60])
def test_functions_stay_short(limit_lines):
    """No function over ~60 lines (one that must be longer says why in a "# long function: ..."
    comment of its own; a word elsewhere in the file exempts nothing)."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                own = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                if length > limit_lines and "# long function:" not in own:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_files_stay_small():
    """No file over ~400 lines without a reason written at its top ("long file: ...")."""
    big = [
        f"{p.relative_to(PACKAGE)} ({n} lines)"
        for p in sorted(PACKAGE.rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
        and "long file:" not in "\n".join(p.read_text(encoding="utf-8").splitlines()[:30])
    ]
    assert big == []


REPO = PACKAGE.parents[1]
#: Where the repository's own files are named from: every doc, README and source file.
DOC_FOLDERS = ("docs", "src", "examples", "benchmarks")
#: Files mixflow writes (named in docs as outputs, not files of the repository).
OUTPUT_FILES = {"arena.md"}
#: Dotted names that are not modules: logger names and the benchmarks' entry-point group.
NOT_MODULES = ("mixflow.progress", "mixflow.benchmarks")
FILE_NAME = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.(?:py|md))\b")
DOTTED = re.compile(r"(?<![\w.])(mixflow(?:\.\w+)+)")


def _documents(root: Path) -> list[Path]:
    found = [root / "README.md"] if (root / "README.md").is_file() else []
    for folder in DOC_FOLDERS:
        found += [
            p
            for p in sorted((root / folder).rglob("*"))
            if p.suffix in (".md", ".py") and p.is_file() and "egg-info" not in str(p)
        ]
    return found


def missing_names(root: Path, package: Path) -> list[str]:
    """``FILE:LINE: NAME`` for each repository file or ``mixflow.`` module a doc or source file names
    that does not exist. A path counts from the repository root, the naming file's folder or the
    package; a bare file name may live anywhere in the repository; a path with a placeholder
    (``DIR/``, ``NAME``, ``my_...``) or outside the repository's folders is an example, not a claim."""
    basenames = {p.name for p in root.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts}
    problems = []
    for doc in _documents(root):
        for number, line in enumerate(doc.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for name in FILE_NAME.findall(line):
                parts = name.split("/")
                if any(p.isupper() or p.startswith(("my_", "my-", "NAME")) for p in parts) or name in OUTPUT_FILES:
                    continue
                if len(parts) > 1 and parts[0] not in (
                    *DOC_FOLDERS,
                    "tests",
                    "mixflow",
                    "algorithms",
                    "data",
                    "providers",
                    "engine",
                    "recipes",
                    "bench",
                    "search",
                    "cli",
                ):
                    continue  # another project's file (e.g. Megatron-LM's), named for comparison
                here = (root / name, doc.parent / name, package / name, package.parent / name)
                if not (any(p.exists() for p in here) or (len(parts) == 1 and name in basenames)):
                    problems.append(f"{doc.relative_to(root)}:{number}: {name}")
            problems += [
                f"{doc.relative_to(root)}:{number}: {name}"
                for name in DOTTED.findall(line)
                if not name.startswith(NOT_MODULES) and not _resolves(name.rstrip("."))
            ]
    return problems


def _resolves(dotted: str) -> bool:
    import importlib

    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attribute in parts[k:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


def test_every_file_and_module_the_docs_name_exists():
    assert missing_names(REPO, PACKAGE) == []


def test_the_name_check_catches_a_stale_file_and_module(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "See `src/mixflow/gradstats.py`, `mixflow.engine.nothing_here`, `docs/page.md`, `DIR/report.md`,\n"
        "`megatron/data/utils.py` and `mixflow.engine.engine.StepEngine`.\n"
        "The rule is in ALGORITHMS.md.\n"
    )
    assert missing_names(tmp_path, PACKAGE) == [
        "docs/page.md:1: src/mixflow/gradstats.py",
        "docs/page.md:1: mixflow.engine.nothing_here",
        "docs/page.md:3: ALGORITHMS.md",
    ]
