"""--target: a column, a mean of columns (globs), a weighted sum; unknown names name the columns there are."""

import numpy as np
import pytest

from mixflow.config.errors import ConfigError
from mixflow.search.target import parse_target, target_values

COLUMNS = ["metric/web", "metric/code", "metric/books", "train_loss"]


def test_the_three_forms():
    assert parse_target("metric/web", COLUMNS).weights == (("metric/web", 1.0),)
    mean = parse_target("mean(metric/*)", COLUMNS)
    assert mean.columns == ["metric/web", "metric/code", "metric/books"] and np.isclose(
        sum(w for _, w in mean.weights), 1
    )
    summed = parse_target("0.7*metric/web + 0.3 * metric/code", COLUMNS)
    assert dict(summed.weights) == {"metric/web": 0.7, "metric/code": 0.3}


def test_unknown_columns_and_bad_terms_are_one_line_errors():
    with pytest.raises(
        ConfigError, match=r"'metric/nope' in 'mean\(metric/nope\)' matches no metric column \(columns: metric/web"
    ):
        parse_target("mean(metric/nope)", COLUMNS)
    with pytest.raises(ConfigError, match="expected WEIGHT\\*COLUMN or COLUMN"):
        parse_target("x*metric/web", COLUMNS)


def test_runs_without_the_target_are_left_out_with_a_warning(caplog):
    target = parse_target("mean(metric/web, metric/code)", COLUMNS)
    metrics = {"metric/web": np.array([1.0, 2.0, np.nan]), "metric/code": np.array([3.0, 4.0, 5.0])}
    values, ok = target_values(target, metrics, "t.csv")
    assert values[:2].tolist() == [2.0, 3.0] and ok.tolist() == [True, True, False]
    assert "t.csv: 1 of 3 runs lack a value of the target" in caplog.text


def test_an_empty_mean_is_an_error():
    with pytest.raises(ConfigError, match="averages no column"):
        parse_target("mean()", COLUMNS)
