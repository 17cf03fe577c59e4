"""A node's decoded copy of its Parquet-path share (``tfos._feed.local``) and the fixed shares that make it pay
(``parquet.epoch_shares``): pure logic and real files in a temp directory, no Spark, no TensorFlow."""

import collections
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfos._feed import local, parquet
from tfos._feed.local import LocalCopy
from tfos._feed.parquet import Piece, RowGroup


def _groups(sizes):
    return [RowGroup(f"f{i // 3}", i % 3, n) for i, n in enumerate(sizes)]


def _rows(pieces):
    return collections.Counter((p.path, p.index, r) for p in pieces for r in range(p.start, p.stop))


@pytest.mark.parametrize("seed", [None, 3])
def test_fixed_shares_keep_each_nodes_rows_and_reshuffle_their_order(seed):
    groups = _groups([7, 100, 33, 50, 50, 1, 64, 90])
    dealt = parquet.epoch_shares(groups, 3, 2, 4, seed, fixed=True)
    quota = sum(g.rows for g in groups) // 3
    for node in dealt:
        assert len(node) == 4 and all(sum(p.rows for p in epoch) == quota for epoch in node)
        assert all(_rows(epoch) == _rows(node[0]) for epoch in node)  # the same rows every epoch
        if seed is not None and len(node[0]) > 2:
            assert len({tuple(epoch) for epoch in node}) > 1  # in an order shuffled per epoch
    assert not (set(_rows(dealt[0][0])) & set(_rows(dealt[1][0])))
    assert dealt == parquet.epoch_shares(groups, 3, 2, 4, seed, fixed=True)  # reproducible


def test_without_the_local_copy_the_row_groups_are_dealt_anew_every_epoch():
    groups = _groups([10] * 12)
    dealt = parquet.epoch_shares(groups, 2, 0, 3, 9, fixed=False)
    assert [[dealt[n][e] for n in range(2)] for e in range(3)] == [parquet.shares(groups, 2, e, 9)[1]
                                                                   for e in range(3)]


def _table(n, start=0):
    return pa.table({"x": pa.array(range(start, start + n), pa.int64()),
                     "v": pa.array([[float(i)] * 4 for i in range(start, start + n)], pa.list_(pa.float32()))})


def _blocks(n, start=0, size=4):
    """``n`` rows from ``start`` as record batches of ``size`` rows (how a piece's blocks come)."""
    return [_table(min(size, start + n - i), i).to_batches()[0] for i in range(start, start + n, size)]


def _kept(copy, piece, blocks):
    """Offers ``blocks`` for ``piece`` as a reader does: the copy passes them on unchanged."""
    assert pa.Table.from_batches(list(copy.offer(piece, iter(blocks)))).equals(pa.Table.from_batches(blocks))


@pytest.fixture
def on_disk(monkeypatch):
    """No memory for kept pieces: every one goes to disk."""
    monkeypatch.setattr(local, "MEMORY_BYTES", 0)


def test_pieces_read_again_are_held_in_memory_up_to_the_budget_then_go_to_disk(tmp_path, monkeypatch):
    a, b = Piece("a", 0, 0, 10), Piece("a", 1, 0, 10)
    size = sum(x.nbytes for x in _blocks(10))
    monkeypatch.setattr(local, "MEMORY_BYTES", size + 1)  # room for one piece
    copy = LocalCopy([a, b, a, b], parent=str(tmp_path))
    for piece, start in ((a, 0), (b, 10)):
        assert copy.take(piece) is None  # a reader asks first, then decodes and offers
        _kept(copy, piece, _blocks(10, start))
    assert copy.kept == 2 and list(copy._held) == [a] and len(os.listdir(copy._dir)) == 1  # b overflowed to disk
    assert pa.Table.from_batches(list(copy.take(a))).equals(_table(10))
    assert pa.Table.from_batches(list(copy.take(b))).equals(_table(10, 10))
    assert copy._held == {} and copy._held_bytes == 0 and os.listdir(copy._dir) == []
    copy.close()


@pytest.mark.usefixtures("on_disk")
def test_a_piece_read_again_is_kept_decoded_and_its_last_read_removes_it(tmp_path):
    a, b, c = Piece("a", 0, 0, 10), Piece("a", 1, 0, 10), Piece("b", 0, 0, 10)
    copy = LocalCopy([a, b, c, a, b, a], parent=str(tmp_path))  # c is read once: never kept
    for piece, start in ((a, 0), (b, 10), (c, 20)):
        assert copy.take(piece) is None
        _kept(copy, piece, _blocks(10, start))
    assert copy.kept == 2 and len(os.listdir(copy._dir)) == 2
    assert pa.Table.from_batches(list(copy.take(a))).equals(_table(10))
    assert [x.num_rows for x in copy.take(b)] == [4, 4, 2]  # the blocks it was kept in
    assert len(os.listdir(copy._dir)) == 1  # b's last read removed its file
    again = list(copy.take(a))
    assert os.listdir(copy._dir) == [] and pa.Table.from_batches(again).equals(_table(10))  # mapped, then removed
    assert copy.reused == 3
    copy.close()
    assert os.listdir(tmp_path) == []


@pytest.mark.usefixtures("on_disk")
def test_a_copy_cut_short_is_dropped(tmp_path):
    piece = Piece("a", 0, 0, 10)
    copy = LocalCopy([piece, piece], parent=str(tmp_path))
    offered = copy.offer(piece, iter(_blocks(10)))
    next(offered)
    offered.close()  # the reader stopped (terminate) after one block
    assert copy.kept == 0 and os.listdir(copy._dir) == [] and copy.take(piece) is None
    copy.close()


@pytest.mark.usefixtures("on_disk")
def test_nothing_is_kept_when_the_disk_would_be_left_short(tmp_path, monkeypatch, caplog):
    caplog.set_level("WARNING", logger="tfos._feed.local")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(local.shutil, "disk_usage", lambda path: usage(100 << 30, 0, (10 << 30) + 100))
    piece = Piece("a", 0, 0, 10)
    copy = LocalCopy([piece, piece], parent=str(tmp_path))
    _kept(copy, piece, _blocks(10))
    assert copy.kept == 0 and copy.take(piece) is None and os.listdir(copy._dir) == []  # decoded again instead
    assert "not keeping more decoded Parquet pieces" in caplog.text
    copy.close()


def test_read_pieces_with_a_local_copy_decodes_each_piece_once(tmp_path, monkeypatch):
    path = str(tmp_path / "a.parquet")
    pq.write_table(_table(300), path, row_group_size=100)
    pieces = [Piece(path, 0, 0, 100), Piece(path, 2, 50, 100)]
    decoded = []
    real = parquet._Files.batches
    monkeypatch.setattr(parquet._Files, "batches", lambda self, piece: decoded.append(piece) or real(self, piece))
    copy = LocalCopy(pieces * 3, parent=str(tmp_path / "node"))
    os.mkdir(tmp_path / "node")
    epochs = []
    for epoch in range(3):
        batches = parquet.read_pieces(pieces, 32, 5, epoch, 0, keep=copy)
        epochs.append([x for batch in batches for x in batch.column("x").to_pylist()])
    copy.close()
    assert decoded == pieces  # once each
    assert all(sorted(e) == list(range(100)) + list(range(250, 300)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 3  # rows reshuffled every epoch


def test_pieces_are_decoded_and_shuffled_in_blocks_that_bound_memory(tmp_path, monkeypatch):
    path = str(tmp_path / "a.parquet")
    pq.write_table(_table(1000), path, row_group_size=1000)
    piece = Piece(path, 0, 130, 870)
    batches = list(parquet._Files(None, 50).batches(piece))
    assert max(b.num_rows for b in batches) == 50
    assert [x for b in batches for x in b.column("x").to_pylist()] == list(range(130, 870))
    per_row = batches[1].nbytes / batches[1].num_rows
    monkeypatch.setattr(parquet, "BLOCK_BYTES", int(200 * per_row))  # about 4 batches of 50 rows a block
    sizes = [b.num_rows for b in parquet._blocks(iter(batches), parquet.BLOCK_BYTES)]
    assert 3 <= len(sizes) <= 5 and sum(sizes) == 740 and max(sizes) <= 250
    rows = [x for b in parquet.read_pieces([piece], 50, 4, 0, 0) for x in b.column("x").to_pylist()]
    assert rows != sorted(rows)
    starts = [130 + sum(sizes[:i]) for i in range(len(sizes))]
    got = [sorted(rows[a - 130:a - 130 + n]) for a, n in zip(starts, sizes)]
    assert got == [list(range(a, a + n)) for a, n in zip(starts, sizes)]  # shuffled within blocks, not across


@pytest.mark.usefixtures("on_disk")
def test_a_copy_that_cannot_be_written_leaves_the_read_going(tmp_path, caplog):
    piece = Piece("a", 0, 0, 10)
    copy = LocalCopy([piece, piece], parent=str(tmp_path / "gone"))  # no such directory
    _kept(copy, piece, _blocks(10))
    assert copy.kept == 0 and copy.take(piece) is None
    assert "cannot make a directory" in caplog.text
