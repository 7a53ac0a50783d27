"""tests/soak_distributed.sh repeats the tests marked ``distributed``: every test module that starts
ranks with run_distributed must mark them, or the soak would silently skip them."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_module_that_runs_ranks_marks_its_tests_distributed():
    unmarked = [
        str(path.relative_to(TESTS))
        for path in sorted(TESTS.rglob("test_*.py"))
        if "run_distributed(" in path.read_text() and "pytest.mark.distributed" not in path.read_text()
    ]
    assert unmarked == []
