"""Output folders are checked before generating; a full disk is a clear DiskFull error."""
from __future__ import annotations

import errno
import os
import sqlite3

import pytest
from fakes import CountingBackend

from tools.errors import DiskFull, InvalidInput
from tools.generate import GenerateRequest


def _session(settings, tiny_backend, tiny_scorer):
    from agent.session import Session

    backend = CountingBackend(tiny_backend)
    return Session(settings, backend=backend, scorer=tiny_scorer), backend


def test_out_under_a_regular_file_is_refused_before_generating(settings, tiny_backend, tiny_scorer, tmp_path):
    session, backend = _session(settings, tiny_backend, tiny_scorer)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(InvalidInput) as info:
        session.generate(GenerateRequest("two red circles", steps=1, seed=1), out_dir=blocker / "sub")
    assert str(blocker / "sub") in info.value.message and "is a file" in info.value.message
    assert backend.calls == 0, "nothing was generated to be lost"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_out_is_refused_before_generating(settings, tiny_backend, tiny_scorer, tmp_path):
    session, backend = _session(settings, tiny_backend, tiny_scorer)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InvalidInput) as info:
            session.generate(GenerateRequest("two red circles", steps=1, seed=1), out_dir=ro)
    finally:
        ro.chmod(0o700)
    assert str(ro) in info.value.message and "not writable" in info.value.message
    assert backend.calls == 0


def test_unwritable_out_is_refused_before_generating(settings, tiny_backend, tiny_scorer, tmp_path, monkeypatch):
    """The write probe failing (a read-only mount, also for root) is refused before generating."""
    import tools.images as images

    session, backend = _session(settings, tiny_backend, tiny_scorer)
    real_open = os.open

    def deny(path, *args, **kwargs):
        if ".imagent-write-test-" in str(path):
            raise PermissionError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(images.os, "open", deny)
    with pytest.raises(InvalidInput) as info:
        session.generate(GenerateRequest("two red circles", steps=1, seed=1), out_dir=tmp_path / "out")
    assert str(tmp_path / "out") in info.value.message and "not writable" in info.value.message
    assert backend.calls == 0


def test_enospc_on_the_png_write_is_disk_full(settings, tiny_backend, tiny_scorer, tmp_path, monkeypatch):
    from PIL import Image

    session, _ = _session(settings, tiny_backend, tiny_scorer)

    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(DiskFull) as info:
        session.generate(GenerateRequest("two red circles", steps=1, seed=1), out_dir=tmp_path / "out")
    assert "disk is full" in info.value.message and "was not saved" in info.value.message
    assert str(tmp_path / "out") in info.value.message and info.value.hint
    assert info.value.exit_code == 2
    assert not [p for p in (tmp_path / "out").iterdir()], "no partial file is left"


def test_sqlite_disk_full_is_disk_full(settings, tiny_backend, tiny_scorer, tmp_path, monkeypatch):
    session, _ = _session(settings, tiny_backend, tiny_scorer)
    gallery = session.gallery
    real = gallery.conn

    class FullConn:
        def __init__(self, conn):
            self._c = conn

        def __getattr__(self, name):
            return getattr(self._c, name)

        def __enter__(self):
            return self._c.__enter__()

        def __exit__(self, *exc):
            return self._c.__exit__(*exc)

        def execute(self, sql, *args):
            if sql.lstrip().upper().startswith("INSERT INTO IMAGES"):
                raise sqlite3.OperationalError("database or disk is full")
            return self._c.execute(sql, *args)

    monkeypatch.setattr(gallery, "conn", lambda: FullConn(real()))
    with pytest.raises(DiskFull) as info:
        session.generate(GenerateRequest("two red circles", steps=1, seed=1), out_dir=tmp_path / "out")
    assert "disk is full" in info.value.message and "gallery" in info.value.message
