"""One thread setting per process: BLAS/OpenMP (as threadpoolctl reports them), torch and onnxruntime."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl

from perftune.measure.threads import (
    THREAD_ENV_VARS,
    default_threads,
    limit_threads,
    serving_threads,
    session_options,
    thread_env,
    usable_cores,
)


def pools() -> dict[str, int]:
    """Threads of every BLAS/OpenMP pool loaded in this process, by library file."""
    return {info["filepath"]: info["num_threads"] for info in threadpoolctl.threadpool_info()}


def test_limit_threads_pins_every_loaded_pool_and_torch_and_restores_them_afterwards():
    import torch

    np.dot(np.ones((64, 64)), np.ones((64, 64)))  # numpy's BLAS is loaded and used
    before, torch_before = pools(), torch.get_num_threads()
    assert any(info["internal_api"] == "openmp" for info in threadpoolctl.threadpool_info())  # torch's libgomp
    for n in (1, 3):
        with limit_threads(n) as limit:
            assert limit.threads == n
            assert set(pools().values()) == {n}
            assert torch.get_num_threads() == n
        assert pools() == before and torch.get_num_threads() == torch_before


def test_applying_a_limit_again_keeps_it_and_one_restore_undoes_both():
    import torch

    torch_before = torch.get_num_threads()
    before = pools()
    limit = limit_threads(3)
    limit.apply()  # as a server does once a model is loaded
    assert set(pools().values()) == {3} and torch.get_num_threads() == 3
    limit.restore()
    assert pools() == before and torch.get_num_threads() == torch_before


def test_a_limit_below_one_thread_is_refused():
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        limit_threads(0)


def test_default_threads_divides_the_usable_cores_between_workers():
    cores = len(os.sched_getaffinity(0))
    assert usable_cores() == cores
    assert default_threads() == default_threads(1) == cores
    assert default_threads(cores) == 1 and default_threads(cores * 4) == 1  # never below one


def test_a_server_defaults_to_the_measured_setting_or_one_thread_never_more_than_its_share_of_cores():
    cores = len(os.sched_getaffinity(0))
    assert serving_threads(None) == 1  # registration measures on cpus_per_trial threads, 1 by default
    assert serving_threads(1) == 1 and serving_threads(cores) == cores
    assert serving_threads(cores + 5) == cores and serving_threads(cores, workers=cores) == 1


def test_usable_cores_follow_the_cpu_affinity_not_the_machine():
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); from perftune.measure.threads import "
    code += "default_threads, usable_cores; print(usable_cores(), default_threads(1), os.cpu_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["1", "1"] and int(out[2]) >= 1


def test_onnxruntime_sessions_get_the_thread_count_one_inter_op_thread_and_no_spinning():
    options = session_options(3)
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_new_processes_get_the_setting_through_their_environment():
    env = thread_env(1)
    assert set(env) == set(THREAD_ENV_VARS) and set(env.values()) == {"1"}
    code = "import numpy, threadpoolctl, torch; print(torch.get_num_threads(), "
    code += "sorted({i['num_threads'] for i in threadpoolctl.threadpool_info()}))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, **env}
    ).stdout.strip()
    assert out == "1 [1]"


def test_perftune_onnxruntime_sessions_run_on_the_threads_they_are_given():
    from onnx import TensorProto, helper

    from perftune.models.onnx_runtime import INPUT, OUTPUT, OnnxNetwork

    weights = helper.make_tensor("w", TensorProto.FLOAT, [4, 2], np.ones(8, dtype=np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", [INPUT, "w"], [OUTPUT])],
        "net",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["rows", 4])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["rows", 2])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    network = OnnxNetwork(model.SerializeToString(), threads=3)
    options = network.session.get_session_options()
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert network.logits(np.ones((2, 4))).tolist() == [[4.0, 4.0], [4.0, 4.0]]
