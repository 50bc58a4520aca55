"""The gallery: an SQLite database recording every run, round and image.

`Gallery(path)` opens nothing until first use. Writes are single transactions in WAL mode, so a
process killed mid-run leaves the database readable; PNGs are written atomically before their
rows (tools.images.atomic_save_png), so a row never points at a half-written file.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from agent.errors import ImagentError
from tools.generate import OPTION_KEYS

# Each entry migrates user_version N -> N+1. Append; never edit a released entry.
MIGRATIONS = [
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, created REAL NOT NULL, kind TEXT NOT NULL, idea TEXT,
        spec_json TEXT, params_json TEXT, status TEXT NOT NULL, error TEXT, result_json TEXT,
        chat_id TEXT, finished REAL
    );
    CREATE TABLE images (
        id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(id),
        created REAL NOT NULL, path TEXT NOT NULL, seed INTEGER, prompt TEXT, negative_prompt TEXT,
        width INTEGER, height INTEGER, model TEXT, score REAL, round INTEGER, record_json TEXT NOT NULL
    );
    CREATE INDEX images_run ON images(run_id);
    CREATE TABLE rounds (
        run_id TEXT NOT NULL REFERENCES runs(id), round INTEGER NOT NULL, record_json TEXT NOT NULL,
        PRIMARY KEY (run_id, round)
    );
    """,
    # 2: conversations of `imagent chat` (agent.chat): one row per chat, its messages in order.
    """
    CREATE TABLE chats (
        id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL, title TEXT, state_json TEXT
    );
    CREATE TABLE chat_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id TEXT NOT NULL REFERENCES chats(id),
        created REAL NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, data_json TEXT
    );
    CREATE INDEX chat_messages_chat ON chat_messages(chat_id, id);
    """,
]


class Gallery:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    # -- connection -------------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
                    conn.row_factory = sqlite3.Row
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    conn.execute("PRAGMA foreign_keys=ON")
                    self._migrate(conn)
                except sqlite3.DatabaseError as exc:
                    raise ImagentError(f"The gallery database {self.path} cannot be opened ({exc}).",
                                       "Move it aside or set IMAGENT_HOME to another folder.") from None
                self._conn = conn
            return self._conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for n in range(version, len(MIGRATIONS)):
            with conn:
                conn.executescript("BEGIN;" + MIGRATIONS[n] + f"PRAGMA user_version={n + 1};COMMIT;")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            conn = self.conn()
            try:
                with conn:
                    return conn.execute(sql, args)
            except sqlite3.OperationalError as exc:
                if "full" not in str(exc).lower():
                    raise
                from agent.errors import DiskFull

                raise DiskFull(f"The disk is full: the gallery database '{self.path}' could not record this "
                               f"({exc}); images already written are on disk but not in the gallery.",
                               "Free some disk space and run again.") from None

    def _read(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self.conn().execute(sql, args).fetchall()]

    # -- runs ------------------------------------------------------------------------------
    def start_run(self, kind: str, *, idea: str | None = None, spec: dict | None = None,
                  params: dict | None = None, chat_id: str | None = None) -> str:
        run_id = uuid.uuid4().hex[:12]
        self._write("INSERT INTO runs (id, created, kind, idea, spec_json, params_json, status, chat_id) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (run_id, time.time(), kind, idea, _dump(spec), _dump(params), "running", chat_id))
        return run_id

    def finish_run(self, run_id: str, status: str, *, result: dict | None = None, error: str | None = None):
        self._write("UPDATE runs SET status=?, result_json=?, error=?, finished=? WHERE id=?",
                    (status, _dump(result), error, time.time(), run_id))

    def run(self, run_id: str) -> dict | None:
        rows = self._read("SELECT * FROM runs WHERE id=?", (run_id,))
        return _decode(rows[0]) if rows else None

    def runs(self, limit: int = 50, offset: int = 0) -> list[dict]:
        return [_decode(r) for r in self._read(
            "SELECT * FROM runs ORDER BY created DESC, rowid DESC LIMIT ? OFFSET ?", (limit, offset))]

    def add_round(self, run_id: str, round_no: int, record: dict) -> None:
        self._write("INSERT OR REPLACE INTO rounds (run_id, round, record_json) VALUES (?,?,?)",
                    (run_id, round_no, _dump(record)))

    def rounds(self, run_id: str) -> list[dict]:
        return [json.loads(r["record_json"]) for r in self._read(
            "SELECT record_json FROM rounds WHERE run_id=? ORDER BY round", (run_id,))]

    # -- images ----------------------------------------------------------------------------
    def add_image(self, run_id: str, path: str | Path, record: dict, *, score: float | None = None,
                  round_no: int | None = None) -> int:
        p = record.get("params", {})
        cur = self._write(
            "INSERT INTO images (run_id, created, path, seed, prompt, negative_prompt, width, height, model,"
            " score, round, record_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (run_id, time.time(), str(path), record.get("seed"), p.get("prompt"), p.get("negative_prompt"),
             record.get("width"), record.get("height"), record.get("model"), score, round_no, _dump(record)))
        return int(cur.lastrowid)

    def set_image_path(self, image_id: int, path: str | Path) -> None:
        self._write("UPDATE images SET path=? WHERE id=?", (str(path), image_id))

    def set_image_score(self, image_id: int, score: float | None, round_no: int | None = None) -> None:
        self._write("UPDATE images SET score=?, round=? WHERE id=?", (score, round_no, image_id))

    def image(self, image_id: int) -> dict | None:
        rows = self._read("SELECT * FROM images WHERE id=?", (image_id,))
        return _decode(rows[0]) if rows else None

    def images(self, limit: int = 50, offset: int = 0, run_id: str | None = None,
               query: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM images WHERE 1=1", []
        if run_id:
            sql += " AND run_id=?"
            args.append(run_id)
        if query:  # the prompt an image is listed under (`listed_prompt`): its own, or an upscale's source's
            sql += f" AND (prompt LIKE ? OR (COALESCE(prompt, '') = '' AND {_SOURCE_PROMPT_SQL} LIKE ?))"
            args += [f"%{query}%"] * 2
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        return [_decode(r) for r in self._read(sql, (*args, limit, offset))]

    def find_generated(self, *, model: str, backend: str, prompt: str, negative_prompt: str, seed: int,
                       steps: int, cfg: float, scheduler: str | None, width: int | None,
                       height: int | None, options: dict | None = None) -> dict | None:
        """The newest reproducible text-to-image image made with exactly these parameters, or None.

        `scheduler`, `width` and `height` are as *requested* (None = the model's own), so they are
        compared with the run's recorded request, which keeps them unresolved; the rest with the
        image's record; `options` (LoRAs, conditions, refiner, speed options: tools.generate.OPTION_KEYS)
        must equal the record's. The file must still exist. Used by `imagent serve`'s cache."""
        rows = self._read(
            "SELECT images.*, runs.params_json AS run_params_json FROM images JOIN runs ON runs.id = images.run_id "
            "WHERE images.seed=? AND images.prompt=? AND COALESCE(images.negative_prompt, '')=? AND images.model=? "
            "AND runs.kind='generate' AND runs.status='done' ORDER BY images.id DESC LIMIT 20",
            (seed, prompt, negative_prompt or "", str(model)))
        for row in map(_decode, rows):
            record, asked = row.get("record") or {}, row.get("run_params") or {}
            params = record.get("params") or {}
            if (record.get("backend") != backend or not record.get("reproducible", False)
                    or params.get("mode") != "txt2img" or params.get("steps") != steps
                    or params.get("cfg") != cfg or asked.get("scheduler") != scheduler
                    or {k: params[k] for k in OPTION_KEYS if k in params} != (options or {})
                    or (width is not None and (record.get("width"), record.get("height")) != (width, height))
                    or (width is None and asked.get("width") is not None)
                    or (height is None and asked.get("height") is not None)):
                continue
            if Path(row["path"]).is_file():
                return row
        return None

    def count_images(self) -> int:
        return self._read("SELECT COUNT(*) AS n FROM images")[0]["n"]

    # -- chats (agent.chat) -------------------------------------------------------------------
    def start_chat(self, title: str = "", state: dict | None = None) -> str:
        chat_id = uuid.uuid4().hex[:8]
        now = time.time()
        self._write("INSERT INTO chats (id, created, updated, title, state_json) VALUES (?,?,?,?,?)",
                    (chat_id, now, now, title, _dump(state)))
        return chat_id

    def save_chat(self, chat_id: str, *, state: dict | None = None, title: str | None = None) -> None:
        self._write("UPDATE chats SET updated=?, state_json=COALESCE(?, state_json), title=COALESCE(?, title) "
                    "WHERE id=?", (time.time(), _dump(state), title, chat_id))

    def chat(self, chat_id: str) -> dict | None:
        rows = self._read("SELECT * FROM chats WHERE id=?", (chat_id,))
        return _decode(rows[0]) if rows else None

    def chats(self, limit: int = 20) -> list[dict]:
        return [_decode(r) for r in self._read(
            "SELECT * FROM chats ORDER BY updated DESC, rowid DESC LIMIT ?", (limit,))]

    def add_chat_message(self, chat_id: str, role: str, content: str, data: dict | None = None) -> int:
        cur = self._write("INSERT INTO chat_messages (chat_id, created, role, content, data_json) VALUES (?,?,?,?,?)",
                          (chat_id, time.time(), role, content, _dump(data)))
        self._write("UPDATE chats SET updated=? WHERE id=?", (time.time(), chat_id))
        return int(cur.lastrowid)

    def chat_messages(self, chat_id: str) -> list[dict]:
        return [_decode(r) for r in self._read(
            "SELECT * FROM chat_messages WHERE chat_id=? ORDER BY id", (chat_id,))]

    def chat_images(self, chat_id: str, limit: int = 50) -> list[dict]:
        """Images made in a chat (through runs.chat_id), newest first."""
        return [_decode(r) for r in self._read(
            "SELECT images.* FROM images JOIN runs ON runs.id = images.run_id WHERE runs.chat_id=? "
            "ORDER BY images.id DESC LIMIT ?", (chat_id, limit))]


# An upscale has no prompt of its own; it is listed and searched under its source's (record.source.params.prompt).
_SOURCE_PROMPT_SQL = ("(CASE WHEN json_valid(record_json) AND json_type(record_json, '$.source.params.prompt') = 'text' "
                      "THEN json_extract(record_json, '$.source.params.prompt') END)")


def listed_prompt(row: dict) -> str | None:
    """The prompt an image row is listed under: its own, or for an upscaled image (which has none) the
    prompt of the image it was made from. `Gallery.images(query=)` searches the same text."""
    if row.get("prompt"):
        return row["prompt"]
    record = row.get("record") if isinstance(row.get("record"), dict) else {}
    source = record.get("source") if isinstance(record.get("source"), dict) else {}
    params = source.get("params") if isinstance(source.get("params"), dict) else {}
    return params["prompt"] if isinstance(params.get("prompt"), str) else row.get("prompt")


def _dump(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _decode(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        if key.endswith("_json"):
            out[key[:-5]] = json.loads(value) if value else None
        else:
            out[key] = value
    return out
