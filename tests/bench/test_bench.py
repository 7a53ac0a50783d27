"""`mixflow bench`: every benchmark runs at its smallest size and writes the promised files.

The claims themselves are the benchmarks' business (their `holds`), not the test suite's.
"""

from __future__ import annotations

import json

import pytest

from mixflow.bench.base import available_benchmarks
from mixflow.bench.runner import run_benchmarks, select, write_report
from mixflow.cli.main import main

KEYS = {
    "name",
    "claim",
    "source",
    "setting",
    "seeds",
    "quick",
    "rows",
    "comparisons",
    "holds",
    "verdict",
    "elapsed_s",
    "commit",
    "machine",
}
COMPARISON_KEYS = {"method", "baseline", "metric", "diff_mean", "ci95", "n_seeds", "verdict"}


def test_list_names_every_benchmark_with_its_claim_and_source(capsys):
    assert main(["bench", "list"]) == 0
    out = capsys.readouterr().out
    for name, bench in available_benchmarks().items():
        assert f"{name}: {bench.claim} ({bench.source})" in out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(available_benchmarks()))
def test_each_benchmark_writes_its_json_table_and_plots(tmp_path, name):
    (path,) = run_benchmarks([name], tiny=True, out=tmp_path)
    payload = json.loads(path.read_text())
    assert KEYS <= set(payload)
    assert payload["name"] == name and payload["seeds"] == 2 and payload["quick"] is True
    assert payload["holds"] in (True, False, None) and payload["verdict"]
    assert payload["rows"], "a benchmark reports at least one measurement"
    for row in payload["rows"]:
        assert {"method", "metric", "mean", "sd", "values"} <= set(row)
        assert len(row["values"]) >= 1
    assert payload["comparisons"], "every benchmark compares methods paired by seed"
    for c in payload["comparisons"]:
        assert COMPARISON_KEYS <= set(c) and c["verdict"] in ("better", "no different", "worse")
        assert len(c["ci95"]) == 2 and c["n_seeds"] >= 2
    claimed = [c for c in payload["comparisons"] if "claim_range" in c]
    if payload["holds"] is not None:
        assert claimed and payload["holds"] == all(c["passes"] for c in claimed)
    table = (tmp_path / f"{name}.md").read_text()
    assert f"mixflow bench run {name} --tiny --out {tmp_path}" in table
    assert "| method | baseline | metric | difference | 95% interval |" in table
    for plot in payload.get("plots", []):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_merges_every_result_into_one_row_per_claim(tmp_path):
    name = "fgls-regression"
    run_benchmarks([name], tiny=True, out=tmp_path)
    report = write_report(tmp_path).read_text()
    assert f"| {name} |" in report and f"[table]({name}.md)" in report
    with pytest.raises(FileNotFoundError, match="no benchmark results"):
        write_report(tmp_path / "empty")


def test_unknown_names_and_missing_extras_are_one_line_errors(capsys, monkeypatch):
    assert main(["bench", "run", "fgls-regresion", "lm-arenaa", "--tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # every unknown name, each with the closest one
    assert len(err) == 2
    assert "unknown benchmark 'fgls-regresion'" in err[0] and "(did you mean 'fgls-regression'?)" in err[0]
    assert "unknown benchmark 'lm-arenaa'" in err[1] and "(did you mean 'lm-arena'?)" in err[1]
    import importlib.util

    from mixflow.bench import base

    bench = next(iter(available_benchmarks().values()))
    monkeypatch.setitem(
        base._BENCHMARKS,
        bench.name,
        base.Benchmark(bench.name, bench.claim, bench.source, bench.run, ("no_such_module_xyz",)),
    )
    assert importlib.util.find_spec("no_such_module_xyz") is None
    with pytest.raises(
        ValueError, match=r"^bench: no_such_module_xyz not installed; run: pip install 'mixflow\[bench\]'$"
    ):
        select([bench.name])
