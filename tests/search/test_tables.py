"""Swarm tables: RegMix's and Olmix's layouts load unchanged; a bad table is every error at once, one
line each naming the file, the line and the column."""

import math

import numpy as np
import pytest

from mixflow.config.errors import ConfigErrors
from mixflow.search.tables import load_table


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_regmix_layout_joins_on_index_renormalises_rows_and_reads_crlf(tmp_path):
    mix = _write(tmp_path / "train_mixture.csv", "index,train_a,train_b,train_c\n1,0.5,0.3,0.2\n2,0.1,0.1,0.799\n")
    loss = _write(tmp_path / "train_loss.csv", "index,metric/a_val_loss,metric/b_val_loss\r\n2,3.5,4.5\r\n1,3.0,4.0")
    table = load_table(mix, loss)
    assert table.key == "index" and table.keys == ["1", "2"] and table.domains == ["train_a", "train_b", "train_c"]
    assert np.allclose(table.mixtures.sum(axis=1), 1.0) and np.isclose(table.mixtures[1, 2], 0.799 / 0.999)
    assert table.metrics["metric/a_val_loss"].tolist() == [3.0, 3.5]  # joined by key, not by row order


def test_olmix_layout_joins_on_run_and_ignores_its_name_and_index_columns(tmp_path):
    ratios = _write(
        tmp_path / "ratios.csv", "run,name,index,web,code\nr1,x,0,0.7,0.3\nr2,y,1,0.2,0.8\nr3,z,2,0.5,0.5\n"
    )
    metrics = _write(tmp_path / "metrics.csv", "run,name,index,bpb\nr2,y,1,1.2\nr1,x,0,1.1\n")
    table = load_table(ratios, metrics)
    assert table.key == "run" and table.domains == ["web", "code"]
    # r3 has no metrics yet: NaN, left out only where the metric is needed
    assert table.metrics["bpb"][:2].tolist() == [1.1, 1.2] and math.isnan(table.metrics["bpb"][2])


def test_one_file_table_takes_metric_columns_by_prefix_or_by_name(tmp_path):
    path = _write(tmp_path / "runs.csv", "run,web,code,metric/web,loss\na,0.5,0.5,3.0,2.0\nb,0.9,0.1,2.5,2.1\n")
    table = load_table(path, metric_columns=["loss"])
    assert table.domains == ["web", "code"] and sorted(table.metrics) == ["loss", "metric/web"]


def test_every_problem_of_a_bad_table_is_one_line(tmp_path):
    mix = _write(tmp_path / "mix.csv", "index,a,b\n1,0.5,0.6\n2,x,0.5\n2,0.5,0.5\n3,0.5\n4,-0.5,1.5\n")
    loss = _write(tmp_path / "loss.csv", "index,metric/a\n1,inf\n")
    with pytest.raises(ConfigErrors) as err:
        load_table(mix, loss)
    lines = err.value.messages
    assert any("mix.csv: line 2: the mixture weights sum to 1.1" in m for m in lines)
    assert any("mix.csv: line 3: column 'a': expected a number, got 'x'" in m for m in lines)
    assert any("mix.csv: line 4: index '2' already on line 3" in m for m in lines)
    assert any("mix.csv: line 5: 2 fields, the header has 3" in m for m in lines)
    assert any("mix.csv: line 6: negative mixture weight in ['a']" in m for m in lines)
    assert any("loss.csv: line 2: column 'metric/a': expected a finite number" in m for m in lines)
    assert all("\n" not in m for m in lines)


def test_files_without_a_common_key_or_missing_are_errors(tmp_path):
    mix = _write(tmp_path / "mix.csv", "run,a,b\nr,0.5,0.5\n")
    loss = _write(tmp_path / "loss.csv", "index,metric/a\n1,2.0\n")
    with pytest.raises(ConfigErrors, match="no key column common to both files"):
        load_table(mix, loss)
    with pytest.raises(ConfigErrors, match="nope.csv: cannot read it"):
        load_table(tmp_path / "nope.csv")


def test_metric_globs_of_a_one_file_table_and_duplicate_keys_in_the_metrics_file(tmp_path):
    path = _write(tmp_path / "runs.csv", "run,web,code,loss_a,loss_b\na,0.5,0.5,3.0,2.0\nb,0.9,0.1,2.5,2.1\n")
    table = load_table(path, metric_columns=["loss_*"])
    assert table.domains == ["web", "code"] and sorted(table.metrics) == ["loss_a", "loss_b"]
    mix = _write(tmp_path / "mix.csv", "run,a,b\nr,0.5,0.5\n")
    loss = _write(tmp_path / "loss.csv", "run,metric/a\nr,2.0\nr,3.0\n")
    with pytest.raises(ConfigErrors, match="loss.csv: line 3: run 'r' already on line 2"):
        load_table(mix, loss)


def test_a_quoted_field_may_hold_a_newline(tmp_path):
    path = _write(tmp_path / "runs.csv", 'run,web,code,metric/x\n"a\nb",0.5,0.5,3.0\n')
    assert load_table(path).keys == ["a\nb"]
