"""Progress: Keras output parsing, ctx.report_progress's file, the driver's display lines."""

import io
import json

import pytest

from tfos._driver.progress import ProgressDisplay, display_mode, format_row, format_table
from tfos._node.progress import OutputProgress, ProgressFile, last_segment, parse_segment, read_progress_file
from tfos.node import TFNodeContext


@pytest.mark.parametrize("text,fields", [
    ("Epoch 3/10", {"epoch": 3, "epochs": 10}),
    (" 12/100 [====>.......] - ETA: 3s - loss: 0.69", {"step": 12, "steps": 100}),
    ("100/100 [==============================] - 2s 20ms/step - loss: 0.5", {"step": 100, "steps": 100}),
    ("     42/Unknown - 3s 70ms/step - loss: 0.6", {"step": 42}),
    ("loss went down to 3/4 of its value", {}),
    ("Epoch 3: saving model to /tmp/x", {}),
])
def test_parse_segment(text, fields):
    assert parse_segment(text) == fields


def test_a_redrawn_keras_bar_shows_its_last_version():
    raw = " 1/10 [==>....] - ETA: 1s\b\b\b\b\b\b\b\b\r 2/10 [====>..] - ETA: 1s\b\b\b\r10/10 [=======] - 1s"
    assert last_segment(raw) == "10/10 [=======] - 1s"
    assert last_segment("windows line\r") == "windows line"


def test_output_progress_tracks_partial_lines_activity_and_last_complete_line():
    seen = OutputProgress()
    seen.saw("Epoch 2/5", complete=True)
    seen.saw("\b\b\r 7/50 [==>...]", complete=False)
    assert seen.snapshot() == {"epoch": 2, "epochs": 5, "step": 7, "steps": 50, "last_line": "Epoch 2/5",
                               "activity": 2}


def test_progress_file_round_trip_and_bad_values(tmp_path):
    path = str(tmp_path / "progress.json")
    assert read_progress_file(path) == {} and read_progress_file(None) == {}
    writer = ProgressFile(path, interval=60)
    writer.report({"step": 5, "loss": 0.25})
    writer.report({"step": 6})
    writer.flush()
    assert read_progress_file(path) == {"step": 6, "loss": 0.25, "reports": 2}
    with pytest.raises(TypeError, match=r"numbers, strings, booleans or None; got \['weights'\]"):
        writer.report({"weights": [1, 2]})
    (tmp_path / "bad.json").write_text("{not json")
    assert read_progress_file(str(tmp_path / "bad.json")) == {}


def test_ctx_report_progress_writes_where_the_supervisor_reads(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    monkeypatch.setenv("TFOS_PROGRESS_FILE", str(path))
    ctx = TFNodeContext(worker_num=1, job_name="worker", attempt=2, backup_dir="/b")
    assert (ctx.attempt, ctx.backup_dir, ctx.checkpoint_dir) == (2, "/b", "/b")
    ctx.report_progress(step=3, epoch=1, loss=0.5)
    ctx._progress.flush()
    assert json.loads(path.read_text()) == {"step": 3, "epoch": 1, "loss": 0.5, "reports": 1}
    monkeypatch.delenv("TFOS_PROGRESS_FILE")
    TFNodeContext().report_progress(step=1)  # outside a node: nothing to do, no error


@pytest.mark.parametrize("setting,isatty,mode", [
    ("auto", True, "tty"),
    ("auto", False, "off"),  # piped or redirected: the display turns itself off
    ("on", False, "tty"),
    ("on", True, "tty"),
    ("off", True, "off"),
    ("log", True, "log"),
    ("log", False, "log"),
])
def test_display_mode(setting, isatty, mode):
    assert display_mode(setting, isatty) == mode


def test_every_display_mode_is_a_valid_setting():
    from tfos._driver.progress import DISPLAY_MODES
    from tfos.config import from_env

    assert [from_env({"TFOS_PROGRESS": mode}).progress for mode in DISPLAY_MODES] == list(DISPLAY_MODES)


def test_log_mode_writes_info_records_and_nothing_on_the_stream(caplog):
    out = io.StringIO()
    display = ProgressDisplay(lambda: [{"role": "worker:0", "step": 1}], "log", interval=60, stream=out)
    with caplog.at_level("INFO", logger="tfos._driver.progress"):
        display.show()
    assert out.getvalue() == ""
    assert [r.getMessage() for r in caplog.records][1:] == ["  worker:0    step 1"]


def test_format_rows_and_table():
    rows = [
        {"worker_num": 0, "role": "chief:0", "epoch": 3, "epochs": 10, "step": 12, "steps": 100, "idle_secs": 1.0,
         "activity": 9, "last_line": "x", "exited": False},
        {"worker_num": 1, "role": "worker:0", "step": 7, "loss": 0.5, "idle_secs": 42.0, "attempt": 1,
         "exited": False},
        {"worker_num": 2, "role": "ps:0", "exited": True, "idle_secs": 0},
    ]
    assert format_row(rows[0]) == "chief:0     epoch 3/10  step 12/100"
    assert format_row(rows[1]) == "worker:0    attempt 1  step 7  loss=0.5  (no progress for 42s)"
    assert format_row(rows[2]) == "ps:0        (done)"
    assert format_table(rows, 61.2)[0] == "tfos progress after 61s:"
    assert len(format_table(rows, 0)) == 4


def test_display_writes_to_its_stream_and_survives_a_failing_source():
    out = io.StringIO()
    display = ProgressDisplay(lambda: [{"role": "worker:0", "step": 1}], "tty", interval=60, stream=out)
    display.show()
    assert "worker:0    step 1" in out.getvalue()
    broken = ProgressDisplay(lambda: 1 / 0, "tty", interval=60, stream=out)
    broken.show()  # no exception


def test_output_pump_prints_redrawn_lines_as_shown_and_sees_partial_progress():
    from tfos._node.launcher import OutputPump

    data = (b"Epoch 1/3\n 1/10 [>....]\b\b\b\b\r 5/10 [==>..]\b\b\r10/10 [=====] - 1s\n"
            b"Epoch 2/3\n\b\b\r 3/10 [=>...]")
    sink = io.StringIO()
    pump = OutputPump(io.BufferedReader(io.BytesIO(data)), "worker:0", keep=10, forward=True, sink=sink)
    pump.run()
    assert sink.getvalue().splitlines() == ["[worker:0] Epoch 1/3", "[worker:0] 10/10 [=====] - 1s",
                                            "[worker:0] Epoch 2/3", "[worker:0]  3/10 [=>...]"]
    assert pump.drain()["lines"] == ["Epoch 1/3", "10/10 [=====] - 1s", "Epoch 2/3", " 3/10 [=>...]"]
    snap = pump.progress.snapshot()
    assert (snap["epoch"], snap["epochs"], snap["step"], snap["steps"]) == (2, 3, 3, 10)
