"""The TF process's error record (tfos._node.child.write_error) carries the hints added to an exception, on every
Python the project supports (BaseException.add_note is 3.11+). Pure logic: no TF process is started."""

import json

from tfos._node import child


class NoNotes(Exception):
    """An exception without ``add_note``, as on Python 3.10."""

    def __getattribute__(self, name):
        if name == "add_note":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_a_hint_reaches_the_error_record_with_or_without_add_note(tmp_path):
    for exc in (ValueError("bad value"), NoNotes("bad value")):
        child.add_note(exc, "first hint")
        child.add_note(exc, "second hint")
        path = tmp_path / f"{type(exc).__name__}.json"
        child.write_error(str(path), exc)
        record = json.loads(path.read_text())
        assert record["message"].endswith("bad value\nfirst hint\nsecond hint"), record["message"]
