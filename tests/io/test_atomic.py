"""Atomic directories: whole or absent; replaced only when whole; with ``keep_existing`` the
first complete copy stays, also when another writer finishes while this one fills."""

from __future__ import annotations

import pytest

from influcoder.io.atomic import atomic_write_dir


def _writer(text: str):
    def fill(tmp):
        (tmp / "f.txt").write_text(text)

    return fill


def _entries(parent):
    return sorted(p.name for p in parent.iterdir())


def test_a_new_folder_appears_whole(tmp_path):
    assert atomic_write_dir(tmp_path / "d", _writer("one")) == tmp_path / "d"
    assert (tmp_path / "d" / "f.txt").read_text() == "one"
    assert _entries(tmp_path) == ["d"]


def test_an_existing_folder_is_replaced_unless_kept(tmp_path):
    atomic_write_dir(tmp_path / "d", _writer("one"))
    atomic_write_dir(tmp_path / "d", _writer("two"), keep_existing=True)
    assert (tmp_path / "d" / "f.txt").read_text() == "one"
    atomic_write_dir(tmp_path / "d", _writer("two"))
    assert (tmp_path / "d" / "f.txt").read_text() == "two"
    assert _entries(tmp_path) == ["d"]


@pytest.mark.parametrize("keep", [True, False])
def test_a_writer_that_finishes_first_while_this_one_fills(tmp_path, keep):
    target = tmp_path / "d"

    def fill(tmp):
        atomic_write_dir(target, _writer("first"))  # another process wins the race
        (tmp / "f.txt").write_text("second")

    atomic_write_dir(target, fill, keep_existing=keep)
    assert (target / "f.txt").read_text() == ("first" if keep else "second")
    assert _entries(tmp_path) == ["d"]  # no temporary or old folder left


def test_a_failing_fill_leaves_nothing_and_the_old_folder_intact(tmp_path):
    atomic_write_dir(tmp_path / "d", _writer("one"))

    def fill(tmp):
        (tmp / "f.txt").write_text("half")
        raise RuntimeError("disk full")

    for keep in (False, True):
        with pytest.raises(RuntimeError, match="disk full"):
            atomic_write_dir(tmp_path / "e", fill, keep_existing=keep)
        with pytest.raises(RuntimeError, match="disk full"):
            atomic_write_dir(tmp_path / "d", fill)
    assert (tmp_path / "d" / "f.txt").read_text() == "one"
    assert _entries(tmp_path) == ["d"]
