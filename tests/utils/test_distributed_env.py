"""launcher_problem: a launcher that asked for several processes and started one is named; real
single-process and MPI launches are not refused."""

from mixflow.utils.distributed import launcher_problem


def test_only_accelerates_single_multi_cpu_process_is_a_problem():
    accelerate_multi_cpu = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert "accelerate started one process" in launcher_problem(accelerate_multi_cpu)
    # accelerate's plain single-process launch on a cluster node with MASTER_ADDR exported
    assert launcher_problem({"ACCELERATE_USE_CPU": "False", "MASTER_ADDR": "node1"}) is None
    # mpirun gives its world size in its own variables; torchrun in WORLD_SIZE
    assert launcher_problem({**accelerate_multi_cpu, "OMPI_COMM_WORLD_SIZE": "2"}) is None
    assert launcher_problem({**accelerate_multi_cpu, "WORLD_SIZE": "2"}) is None
    assert launcher_problem({}) is None
