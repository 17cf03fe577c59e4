"""GPU choice without Spark GPU scheduling: nvidia-smi parsing, the choice, and the host-wide claim.

The claim tests run a fake ``nvidia-smi`` (tests/fake_nvidia_smi.py) and real processes racing for the lock.
"""

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

import fake_nvidia_smi
from tfos._node import gpus
from tfos._node.gpus import Gpu
from tfos.errors import PlacementError

A, B, C = "GPU-aaaaaaaa-0000", "GPU-bbbbbbbb-1111", "GPU-cccccccc-2222"


def test_parse_gpus_and_busy():
    text = "0, GPU-aaaaaaaa-0000, 1200, 16160\n1, GPU-bbbbbbbb-1111, [N/A], 16160\n\n"
    assert gpus.parse_gpus(text) == [Gpu("0", A, 1200.0, 16160.0), Gpu("1", B, 0.0, 16160.0)]
    assert gpus.parse_gpus("No devices were found\n") == []
    assert gpus.parse_busy(f"{A}, 4242\n{A}, 4243\n") == {A}
    assert gpus.parse_busy("No running processes found\n") == set()


def test_choice_prefers_free_then_least_memory_and_never_a_taken_gpu():
    cands = gpus.restrict([Gpu("0", A, 10), Gpu("1", B, 900), Gpu("2", C, 500)], None)
    assert [n for n, _ in gpus.choose(cands, busy={A}, taken=set(), count=2)] == ["2", "1"]
    assert [n for n, _ in gpus.choose(cands, busy={A}, taken={C}, count=2)] == ["1", "0"]
    with pytest.raises(PlacementError, match=r"node 3 needs 2 GPU\(s\) but only 1 of the 3 GPU\(s\) .*"
                                             r"lower TFOS_GPUS_PER_NODE"):
        gpus.choose(cands, busy=set(), taken={A, C}, count=2, where="node 3")


def test_inherited_cuda_visible_devices_limits_the_choice_and_names_the_devices():
    all_gpus = [Gpu("0", A), Gpu("1", B), Gpu("2", C)]
    assert gpus.restrict(all_gpus, "2,0") == [("2", all_gpus[2]), ("0", all_gpus[0])]
    assert gpus.restrict(all_gpus, f"{B},GPU-cccccccc") == [(B, all_gpus[1]), ("GPU-cccccccc", all_gpus[2])]
    assert gpus.restrict(all_gpus, "7") == []


def fake(tmp_path, gpu_list, apps=()):
    return fake_nvidia_smi.install(tmp_path / "bin", gpu_list, apps)


def test_claims_hold_until_released_and_ignore_dead_processes(tmp_path):
    smi = fake(tmp_path, [("0", A, 100), ("1", B, 50)])
    lock_dir = str(tmp_path / "locks")
    first = gpus.claim_gpus(1, "node 0", lock_dir, nvidia_smi=smi)
    assert (first.devices, first.uuids, first.env) == ("1", (B,), {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    second = gpus.claim_gpus(1, "node 1", lock_dir, nvidia_smi=smi)
    assert second.devices == "0"
    with pytest.raises(PlacementError, match="node 2 on host .* needs 1 GPU"):
        gpus.claim_gpus(1, "node 2", lock_dir, nvidia_smi=smi)
    first.release()
    assert gpus.claim_gpus(1, "node 2", lock_dir, nvidia_smi=smi).devices == "1"
    claims = json.load(open(os.path.join(lock_dir, gpus.CLAIMS_NAME)))
    assert {c["owner"] for c in claims.values()} == {"node 1", "node 2"}

    # A claim whose process has exited no longer counts (a node killed before it could release).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claims = {B: {"pid": dead.pid, "started": 1.0, "owner": "gone", "name": "1"}}
    json.dump(claims, open(os.path.join(lock_dir, gpus.CLAIMS_NAME), "w"))
    assert gpus.claim_gpus(2, "node 9", lock_dir, nvidia_smi=smi).devices == "1,0"


def test_no_nvidia_smi_no_gpus_or_no_inherited_gpus_leave_the_environment_alone(tmp_path):
    lock_dir = str(tmp_path / "locks")
    assert gpus.claim_gpus(1, "n", lock_dir, nvidia_smi=str(tmp_path / "missing")) is None
    assert gpus.claim_gpus(1, "n", lock_dir, nvidia_smi=fake(tmp_path, [])) is None
    assert gpus.claim_gpus(1, "n", lock_dir, inherited="", nvidia_smi=fake(tmp_path, [("0", A, 0)])) is None
    hidden = gpus.claim_gpus(0, "ps", lock_dir, nvidia_smi=fake(tmp_path, [("0", A, 0)]))
    assert (hidden.devices, hidden.uuids) == ("", ())


def test_inherited_list_is_honoured(tmp_path):
    smi = fake(tmp_path, [("0", A, 0), ("1", B, 0), ("2", C, 0)], apps=[(B, 1)])
    claim = gpus.claim_gpus(1, "n", str(tmp_path / "l"), inherited="1,2", nvidia_smi=smi)
    assert (claim.devices, claim.env) == ("2", {})


def _claim_in_process(smi, lock_dir, out, ready, done):
    ready.wait(30)
    claim = gpus.claim_gpus(1, f"pid {os.getpid()}", lock_dir, nvidia_smi=smi)
    with open(os.path.join(out, str(os.getpid())), "w") as f:
        f.write(claim.devices)
    done.wait(60)  # a claim lasts as long as its process: stay alive until every process has claimed


def test_racing_nodes_on_one_host_get_different_gpus(tmp_path):
    smi = fake(tmp_path, [(str(i), f"GPU-{i:08d}-race", 0) for i in range(4)])
    out = tmp_path / "out"
    out.mkdir()
    ctx = multiprocessing.get_context("spawn")  # not fork: earlier tests leave gRPC threads, and a forked child can
    # inherit one of their locks held (seen: all four children stuck on a futex)
    ready, done = ctx.Event(), ctx.Event()
    procs = [ctx.Process(target=_claim_in_process, args=(smi, str(tmp_path / "l"), str(out), ready, done))
             for _ in range(4)]
    for proc in procs:
        proc.start()
    ready.set()  # all four choose at once; only the lock keeps them apart
    deadline = time.monotonic() + 60
    while len(os.listdir(out)) < 4 and time.monotonic() < deadline and all(p.is_alive() for p in procs):
        time.sleep(0.05)
    done.set()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    chosen = sorted(open(out / name).read() for name in os.listdir(out))
    assert chosen == ["0", "1", "2", "3"]


def test_a_held_lock_times_out_with_the_setting_to_change(tmp_path):
    import fcntl

    lock_dir = tmp_path / "l"
    lock_dir.mkdir()
    fd = os.open(lock_dir / gpus.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; "
                               f"f = open({str(lock_dir / gpus.LOCK_NAME)!r}, 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
                               "print('locked', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(PlacementError, match=r"could not lock .* within 0s .*TFOS_GPU_LOCK_DIR"):
            gpus.claim_gpus(1, "n", str(lock_dir), nvidia_smi=fake(tmp_path, [("0", A, 0)]), lock_timeout=0.2)
    finally:
        holder.kill()
        holder.wait()
        os.close(fd)
        del fcntl


def test_spark_discovery_script_lists_the_hosts_gpus(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "..", "docker", "discover-gpus.sh")
    fake(tmp_path, [("0", A, 0), ("1", B, 0), ("3", C, 0)])
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"name": "gpu", "addresses": ["0", "1", "3"]}
