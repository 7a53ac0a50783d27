"""tests/soak_distributed.sh repeats the tests marked ``distributed``: every test that starts ranks
with run_distributed (itself, or through a helper or fixture of its module) must carry the mark, or the soak
would silently skip it."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _called_names(node: ast.AST) -> set[str]:
    return {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def _is_marked(node: ast.FunctionDef | ast.AsyncFunctionDef, module_marked: bool) -> bool:
    return module_marked or any("mark.distributed" in ast.unparse(d) for d in node.decorator_list)


def unmarked_tests(source: str) -> list[str]:
    """Test functions of one module that reach ``run_distributed`` (directly or through the module's
    own functions) without the ``distributed`` mark."""
    tree = ast.parse(source)
    module_marked = any(
        isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)
        and "distributed" in ast.unparse(n.value)
        for n in tree.body
    )
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}

    def reaches(name: str, seen: set[str]) -> bool:
        if name == "run_distributed":
            return True
        if name in seen or name not in functions:
            return False
        seen.add(name)
        node = functions[name]
        fixtures = {a.arg for a in node.args.args}  # a test (or fixture) that asks for a fixture of the module runs it
        return any(reaches(callee, seen) for callee in _called_names(node) | fixtures)

    return [
        name
        for name, node in functions.items()
        if name.startswith("test_") and reaches(name, set()) and not _is_marked(node, module_marked)
    ]


def test_every_test_that_runs_ranks_is_marked_distributed():
    unmarked = [
        f"{path.relative_to(TESTS)}::{name}"
        for path in sorted(TESTS.rglob("test_*.py"))
        if path.name != "test_soak_coverage.py"
        for name in unmarked_tests(path.read_text())
    ]
    assert unmarked == []


def test_the_check_sees_a_helper_that_starts_ranks_and_a_module_mark():
    source = (
        "import pytest\n"
        "def _go(tmp):\n    run_distributed(f, tmp)\n"
        "def test_direct(tmp_path):\n    run_distributed(f, tmp_path)\n"
        "def test_through_a_helper(tmp_path):\n    _go(tmp_path)\n"
        "@pytest.mark.distributed\ndef test_marked(tmp_path):\n    _go(tmp_path)\n"
        "def test_one_process():\n    f(0, 1)\n"
        "@pytest.fixture\ndef runs(tmp_path):\n    _go(tmp_path)\n"
        "def test_through_a_fixture(runs):\n    assert runs\n"
    )
    assert unmarked_tests(source) == ["test_direct", "test_through_a_helper", "test_through_a_fixture"]
    assert unmarked_tests("pytestmark = pytest.mark.distributed\n" + source) == []
