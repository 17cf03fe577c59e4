"""The side-by-side benchmark's report logic (bench/side_by_side/report.py) on made-up runs: pairing, goals."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench" / "side_by_side"))
report = pytest.importorskip("report")


def run(tool, date, wall=60.0, scenario="tensorflow", **figures):
    return {"tool": tool, "scenario": scenario, "nodes": 2, "date": date, "wall_s": wall, **figures}


def test_rounds_pair_by_recorded_round_and_fall_back_to_tfos_first_order():
    old = [run("tfos", "2026-12-01 10:00:00", epoch_s=22.0), run("hand", "2026-12-01 10:05:00", epoch_s=20.0),
           run("tfos", "2026-12-01 10:10:00", epoch_s=21.0), run("hand", "2026-12-01 10:15:00", epoch_s=21.0)]
    rotated = [run("hand", "2026-12-01 11:00:00", epoch_s=20.0, round="s/1"),
               run("tfos", "2026-12-01 11:05:00", epoch_s=20.2, round="s/1")]
    rounds = report._rounds(old + rotated, "tensorflow")
    assert [(rd["tfos"]["epoch_s"], rd["hand"]["epoch_s"]) for rd in rounds] == [(22.0, 20.0), (21.0, 21.0),
                                                                                 (20.2, 20.0)]
    goal = report._goal_tensorflow(old + rotated)[0]
    assert "missed" in goal and "110%, 100%, 101%" in goal


def test_startup_view_sets_older_tfos_runs_apart_by_their_start_time():
    since = report.GRPC_BACKOFF_SINCE
    before = run("tfos", since, wall=120.0, scenario="failure")  # ended at the change: started 2 minutes before
    after = run("tfos", "2099-01-01 00:00:00", wall=120.0)
    other = run("hand", since, wall=120.0)
    view = report._startup_view([before, after, other])
    assert [r["tool"] for r in view] == ["tfos_1s", "tfos", "hand"]
    assert before["tool"] == "tfos"  # the runs themselves are left as they are


def test_startup_goal_names_the_import_floor_and_the_fix():
    runs = []
    for i in range(3):
        t = f"2099-01-01 00:0{i}:00"
        runs.append(run("tfos", t, run_returned_s=0.8, all_start_s=1.0, all_tf_imported_s=7.0, all_server_up_s=7.2))
        runs.append(run("hand", t, all_start_s=0.1, all_tf_imported_s=6.8, all_server_up_s=7.0))
        runs.append(run("tfos225", t, run_returned_s=7.0, all_start_s=8.0, all_tf_imported_s=8.0,
                        all_server_up_s=8.2))
    lines = report._goal_startup(runs)
    assert lines[0].startswith("- All TF servers up under 2 s after executors are available: missed, 7.2 s (n=3")
    assert "`import tensorflow` alone takes 6.7 s" in lines[0]
    assert any(line.startswith("- Faster than TensorFlowOnSpark: 7.2 s vs 8.2 s: met.") for line in lines)


def test_chart_skips_missing_groups(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "c.png"
    assert not report._chart(str(path), "t", "s", [("a", None)])
    assert report._chart(str(path), "t", "s", [("a", (1.0, 0.5, 1.5, 3)), ("b", None)]) and path.stat().st_size
