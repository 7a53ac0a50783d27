"""``mixflow plot``'s pieces that do not need a run: a schedule's stages on the axes."""

from __future__ import annotations

import json

from mixflow.cli.plot import _pyplot, mark_stages


def test_a_schedules_stages_are_marked_where_each_begins(tmp_path):
    summary = tmp_path / "schedule_summary.json"
    summary.write_text(json.dumps({"stage": 2, "stages": [
        {"from_step": 1, "proportions": [0.5, 0.5], "learned": False}, {"from_step": 31, "algorithm": "odm"},
        {"from_step": 46, "proportions": [0.4, 0.6], "learned": True}]}))
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1)
    mark_stages(axes, summary)
    for ax in axes:  # no line at step 1: the first stage starts the run
        assert sorted(line.get_xdata()[0] for line in ax.lines) == [31, 46]
    assert [t.get_text().strip() for t in axes[0].texts] == ["stage 0: fixed", "stage 1: odm", "stage 2: learned"]
    mark_stages(axes, tmp_path / "missing_summary.json")  # a run without stages: nothing drawn
    assert len(axes[0].lines) == 2
    plt.close(fig)
