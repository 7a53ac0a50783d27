"""``mixflow plot``'s pieces that do not need a run: a schedule's stages on the axes."""

from __future__ import annotations

import json

from mixflow.cli.plot import _pyplot, mark_stages


def test_a_schedules_stages_are_marked_where_each_begins(tmp_path):
    summary = tmp_path / "schedule_summary.json"
    summary.write_text(
        json.dumps(
            {
                "stage": 2,
                "stages": [
                    {"from_step": 1, "proportions": [0.5, 0.5], "learned": False},
                    {"from_step": 31, "algorithm": "odm"},
                    {"from_step": 46, "proportions": [0.4, 0.6], "learned": True},
                ],
            }
        )
    )
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1)
    mark_stages(axes, summary)
    for ax in axes:  # no line at step 1: the first stage starts the run
        assert sorted(line.get_xdata()[0] for line in ax.lines) == [31, 46]
    assert [t.get_text().strip() for t in axes[0].texts] == ["stage 0: fixed", "stage 1: odm", "stage 2: learned"]
    mark_stages(axes, tmp_path / "missing_summary.json")  # a run without stages: nothing drawn
    assert len(axes[0].lines) == 2
    plt.close(fig)


def test_with_hundreds_of_domains_the_plot_names_the_heaviest_and_groups_the_rest(tmp_path):
    from mixflow.cli.plot import NAMED_DOMAINS, _group_series, domain_groups, plot_run

    names = [f"d{i}" for i in range(256)]
    records = []
    for step in (1, 2, 3):
        w = [0.5 / 250] * 256
        for heavy in range(6):  # six domains hold half the mass, one of them only at step 2
            w[heavy * 40] = 0.5 / 6 if heavy or step == 2 else 0.0
        records.append(
            {
                "step": step,
                "domain_names": names,
                "domain_weights": w,
                "perdomain_scores": [1.0] * 256,
                "sampling_weights": w,
                "loss_weights": [1.0] * 256,
            }
        )
    groups = domain_groups(names, records)
    assert len(groups) == NAMED_DOMAINS and [label for label, _ in groups][-1] == "the other 245 domains"
    named = {label for label, idx in groups if len(idx) == 1}
    assert {"d0", "d40", "d80", "d120", "d160", "d200"} <= named  # d0 peaks at step 2 only: still named
    assert sorted(i for _, idx in groups for i in idx) == list(range(256))
    assert _group_series({"a": [(1, 2.0), (2, 4.0)], "b": [(1, 4.0)]}, ["a", "b"]) == ([1, 2], [3.0, 4.0])
    run = tmp_path / "run"
    run.mkdir()
    (run / "odm_weights.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert plot_run(run).is_file()
