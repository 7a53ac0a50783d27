"""mixflow.testing.run_distributed: a rank's failure is reported with its traceback, a rank that dies
is named with how it died, a crash while tearing down is told apart from a failure of the tested
function, and a run with a failed rank ends instead of hanging on its peer."""

import os
import signal

import pytest
import torch
import torch.distributed as dist

from mixflow.testing import run_distributed

pytestmark = pytest.mark.distributed


def _sum_of_ranks(rank, world, out):
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
        f.write(f"{world} {t.item()}")


def _rank1_asserts(rank, world):
    assert rank != 1, "rank one disagrees"


def _rank1_exits(rank, world):
    if rank == 1:
        os._exit(3)


def _rank0_fails_rank1_waits(rank, world):
    if rank == 0:
        raise ValueError("rank zero broke")
    dist.all_reduce(torch.ones(1))  # never matched by rank 0


def _teardown_aborts(rank, world):
    if rank == 1:
        dist.destroy_process_group = lambda: os.kill(os.getpid(), signal.SIGABRT)


def test_every_rank_runs_the_function_in_one_process_group(tmp_path):
    run_distributed(_sum_of_ranks, str(tmp_path))
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["2 3.0", "2 3.0"]


def test_a_failing_rank_is_reported_with_its_traceback():
    with pytest.raises(AssertionError, match=r"(?s)rank 1:.*rank one disagrees") as err:
        run_distributed(_rank1_asserts)
    assert "rank 0" not in str(err.value)


def test_a_rank_that_dies_before_reporting_is_named_with_its_exit_code():
    with pytest.raises(AssertionError, match="rank 1 exited with code 3 before reporting a result"):
        run_distributed(_rank1_exits)


def test_a_failed_rank_ends_the_run_while_its_peer_waits_in_a_collective():
    with pytest.raises(AssertionError, match=r"(?s)rank 0:.*rank zero broke"):
        run_distributed(_rank0_fails_rank1_waits, timeout=60.0)


def test_a_crash_after_success_is_told_apart_from_a_failure():
    with pytest.raises(AssertionError, match="rank 1 reported success, then died with SIGABRT while tearing down"):
        run_distributed(_teardown_aborts)
