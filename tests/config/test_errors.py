"""The error types cross process boundaries intact (an arena or search worker raises, the parent reports)."""

import pickle

from mixflow.config.errors import ConfigErrors


def test_config_errors_keep_their_lines_through_pickle():
    err = pickle.loads(pickle.dumps(ConfigErrors(["run 0003: learning_rat: unknown key", "val_size: expected ..."])))
    assert err.messages == ["run 0003: learning_rat: unknown key", "val_size: expected ..."]
    assert str(err).splitlines() == err.messages
