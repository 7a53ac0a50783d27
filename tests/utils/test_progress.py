"""Progress output reaches non-terminal logs: one line every few seconds and one at the end."""

import logging

from mixflow.data.packing import tokenize_in_memory
from mixflow.data.sources import DomainSource
from mixflow.data.tokenized import cache_domain
from mixflow.data.tokenizer import ByteTokenizer
from mixflow.utils import progress as progress_module
from mixflow.utils.progress import LogProgress, progress


def test_without_a_terminal_progress_is_logged(caplog, monkeypatch):
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: False, raising=False)
    bar = progress(range(5), desc="work", unit="doc")
    assert isinstance(bar, LogProgress)
    bar.interval = 0.0  # every update is due
    with caplog.at_level(logging.INFO, logger="mixflow"):
        with bar:
            assert list(bar) == list(range(5))
    lines = [r.getMessage() for r in caplog.records if r.name == "mixflow.progress"]
    assert lines[0] == "work: 1/5 doc (20%)" and lines[-1] == "work: 5/5 doc (100%)"
    quiet = progress(range(3), enabled=False, desc="x")
    assert list(quiet) == [0, 1, 2] and not isinstance(quiet, LogProgress)


def test_tokenization_reports_to_the_log(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: False, raising=False)
    path = tmp_path / "a.jsonl"
    path.write_text("".join(f'{{"text": "document {i} " }}\n' for i in range(30)))
    with caplog.at_level(logging.INFO, logger="mixflow"):
        domain = tokenize_in_memory(DomainSource("a", str(path)), ByteTokenizer(), cutoff_len=16, progress=True)
    assert domain.num_train > 0 and domain.train.block is not None  # packed rows
    assert "tokenize a: 30 doc" in caplog.text  # streamed: the count is known only at the end
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mixflow"):  # the cache, which training uses
        cache_domain(DomainSource("b", str(path)), ByteTokenizer(), tmp_path / "cache", cutoff_len=16, progress=True)
    assert "tokenize b: 30 doc" in caplog.text
