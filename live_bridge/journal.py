"""SQLite journal (WAL) of a bridge run: bars, engine state, ledger rows, orders and exchange fills.

Written every bar in one transaction, so a ``kill -9`` leaves the journal at the end of the last bar:
``bars`` and the engine's ledger rows are appended, the kernel state (state vector, slots, rings,
regime indicators, counters, funding book) is replaced. Orders are journaled *before* they are sent
(status ``sending``) and updated after the exchange answers, so a restart can ask the exchange about
every order that may exist; exchange fills are keyed by trade id, so none is booked twice.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from gridctl.configs.errors import GridctlError
from gridctl.engine.records import (
    C_EQUITY,
    C_EVENTS,
    C_FILLS,
    C_FUNDING,
    EQUITY_DTYPE,
    EVENT_DTYPE,
    FILL_DTYPE,
    FUNDING_DTYPE,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bars (ts INTEGER PRIMARY KEY, open REAL, high REAL, low REAL, close REAL);
CREATE TABLE IF NOT EXISTS ledger (tbl TEXT NOT NULL, row INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (tbl, row));
CREATE TABLE IF NOT EXISTS kstate (id INTEGER PRIMARY KEY CHECK (id = 1), bar_ts INTEGER, n INTEGER,
    state BLOB, slots BLOB, err_ring BLOB, ord_ring BLOB, regime BLOB, cnt BLOB, funding TEXT, extra TEXT);
CREATE TABLE IF NOT EXISTS orders (client_id TEXT PRIMARY KEY, side INTEGER, level INTEGER, kind TEXT,
    order_side TEXT, type TEXT, price REAL, qty REAL, status TEXT NOT NULL, exchange_id TEXT,
    created_ms INTEGER, updated_ms INTEGER);
CREATE TABLE IF NOT EXISTS xfills (trade_id TEXT PRIMARY KEY, client_id TEXT, price REAL, qty REAL,
    fee REAL, liquidity TEXT, ts INTEGER, booked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER, kind TEXT, detail TEXT);
"""

_TABLES = (
    ("fills", C_FILLS, FILL_DTYPE),
    ("funding", C_FUNDING, FUNDING_DTYPE),
    ("events", C_EVENTS, EVENT_DTYPE),
)


class Journal:
    """One run's journal file; ``Journal(path)`` creates it or opens it for a restart."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --- meta

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def next_seq(self) -> int:
        """A client-order sequence number never handed out before in this journal."""
        with self.db:
            n = int(self.meta("seq") or "0") + 1
            self.set_meta("seq", str(n))
        return n

    def note(self, ts: int, kind: str, detail: str) -> None:
        self.db.execute("INSERT INTO log (ts, kind, detail) VALUES (?, ?, ?)", (int(ts), kind, detail))

    # --- per bar

    def save_bar(self, session: Any, extra: dict[str, Any] | None = None) -> None:
        """Append the newest bar and ledger rows not yet journaled; replace the kernel state."""
        s = session
        k = s.n - 1
        ks = s.ks
        with self.db:
            if k >= 0:
                self.db.execute(
                    "INSERT OR REPLACE INTO bars VALUES (?, ?, ?, ?, ?)",
                    (int(s.ts[k]), float(s.open[k]), float(s.high[k]), float(s.low[k]), float(s.close[k])),
                )
            for name, slot, _dtype in _TABLES:
                have = self.db.execute("SELECT COUNT(*) FROM ledger WHERE tbl=?", (name,)).fetchone()[0]
                buf = {"fills": s.fills, "funding": s.fund, "events": s.ev}[name]
                rows = [(name, i, buf[i : i + 1].tobytes()) for i in range(have, int(s.cnt[slot]))]
                self.db.executemany("INSERT INTO ledger VALUES (?, ?, ?)", rows)
            if s.cnt[C_EQUITY] > 0:
                i = int(s.cnt[C_EQUITY]) - 1
                self.db.execute(
                    "INSERT OR REPLACE INTO ledger VALUES ('equity', ?, ?)", (i, s.eq[i : i + 1].tobytes())
                )
            book = s.funding
            self.db.execute(
                "INSERT OR REPLACE INTO kstate VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    int(s.ts[k]) if k >= 0 else None,
                    s.n,
                    ks.state.tobytes(),
                    ks.slots.tobytes(),
                    ks.err_ring.tobytes(),
                    ks.ord_ring.tobytes(),
                    s.regime_state.tobytes(),
                    s.cnt.tobytes(),
                    json.dumps(
                        {
                            "ts": book.ts,
                            "rate": book.rate,
                            "mark": book.mark,
                            "next": book.next_ts,
                            "warm": s.warm_bars,
                        }
                    ),
                    json.dumps(extra or {}),
                ),
            )

    def has_state(self) -> bool:
        return self.db.execute("SELECT COUNT(*) FROM kstate").fetchone()[0] > 0

    def restore(self, session: Any) -> dict[str, Any]:
        """Load the journaled kernel state, bars and ledgers into a fresh ``session``; returns ``extra``."""
        row = self.db.execute(
            "SELECT n, state, slots, err_ring, ord_ring, regime, cnt, funding, extra FROM kstate WHERE id=1"
        ).fetchone()
        if row is None:
            raise GridctlError(f"{self.path}: journal holds no engine state to restart from")
        n, state, slots, err, ords, regime, cnt, funding, extra = row
        ks = session.ks
        for arr, blob, what in (
            (ks.state, state, "state"),
            (ks.slots, slots, "slots"),
            (ks.err_ring, err, "error ring"),
            (ks.ord_ring, ords, "order ring"),
            (session.regime_state, regime, "regime"),
        ):
            got = np.frombuffer(blob, dtype=arr.dtype)
            if got.size != arr.size:
                raise GridctlError(
                    f"{self.path}: journaled {what} has {got.size} values, this config needs {arr.size}"
                )
            arr[...] = got.reshape(arr.shape)
        session.cnt[:] = np.frombuffer(cnt, dtype=np.int64)
        bars = self.db.execute("SELECT ts, open, high, low, close FROM bars ORDER BY ts").fetchall()
        if len(bars) != n:
            raise GridctlError(f"{self.path}: journal has {len(bars)} bars but its state says {n}")
        from gridctl.live_bridge.session import _grow

        for name in ("ts", "open", "high", "low", "close", "reg"):
            setattr(session, name, _grow(getattr(session, name), n + 16))
        if n:
            arr = np.array(bars)
            session.ts[:n] = arr[:, 0].astype(np.int64)
            session.open[:n], session.high[:n], session.low[:n], session.close[:n] = (
                arr[:, 1],
                arr[:, 2],
                arr[:, 3],
                arr[:, 4],
            )
        session.n = n
        for name, slot, dtype in (*_TABLES, ("equity", C_EQUITY, EQUITY_DTYPE)):
            blobs = self.db.execute("SELECT data FROM ledger WHERE tbl=? ORDER BY row", (name,)).fetchall()
            recs = np.frombuffer(b"".join(b[0] for b in blobs), dtype=dtype) if blobs else np.zeros(0, dtype)
            attr = {"fills": "fills", "funding": "fund", "events": "ev", "equity": "eq"}[name]
            buf = _grow(getattr(session, attr), len(recs) + 256)
            buf[: len(recs)] = recs
            setattr(session, attr, buf)
            if name != "equity" and len(recs) != session.cnt[slot]:
                raise GridctlError(
                    f"{self.path}: journal has {len(recs)} {name} rows, counters say {session.cnt[slot]}"
                )
        f = json.loads(funding)
        session.funding.ts, session.funding.rate, session.funding.mark = f["ts"], f["rate"], f["mark"]
        session.funding.next_ts = None
        session.warm_bars = int(f.get("warm", 0))
        book_ts, book_rate, book_mark = list(f["ts"]), list(f["rate"]), list(f["mark"])
        session.funding.ts, session.funding.rate, session.funding.mark = [], [], []
        session.set_funding(list(zip(book_ts, book_rate, book_mark, strict=True)), f["next"])
        return json.loads(extra or "{}")

    # --- orders and exchange fills

    def order_sending(self, cid: str, want: Any, now_ms: int) -> None:
        self.db.execute(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'sending', NULL, ?, ?)",
            (
                cid,
                want.side,
                want.level,
                want.kind,
                want.order_side,
                want.type,
                want.price,
                want.qty,
                now_ms,
                now_ms,
            ),
        )

    def order_status(self, cid: str, status: str, now_ms: int, exchange_id: str | None = None) -> None:
        self.db.execute(
            "UPDATE orders SET status=?, updated_ms=?, exchange_id=COALESCE(?, exchange_id) "
            "WHERE client_id=?",
            (status, now_ms, exchange_id, cid),
        )

    def orders(self, statuses: tuple[str, ...]) -> list[dict[str, Any]]:
        q = f"SELECT * FROM orders WHERE status IN ({','.join('?' * len(statuses))}) ORDER BY created_ms"
        cur = self.db.execute(q, statuses)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def order(self, cid: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM orders WHERE client_id=?", (cid,))
        r = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], r, strict=True)) if r else None

    def fill_known(self, trade_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM xfills WHERE trade_id=?", (trade_id,)).fetchone() is not None

    def add_fill(self, f: Any, booked: bool) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO xfills VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (f.trade_id, f.client_id, f.price, f.qty, f.fee, f.liquidity, f.ts_ms, 1 if booked else 0),
        )

    def fills_for(self, cid: str) -> list[tuple[float, float, str, int]]:
        return self.db.execute(
            "SELECT price, qty, liquidity, ts FROM xfills WHERE client_id=? ORDER BY ts", (cid,)
        ).fetchall()

    def last_fill_ts(self) -> int | None:
        row = self.db.execute("SELECT MAX(ts) FROM xfills").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def unbooked_fills(self, cid: str) -> list[tuple[float, float, str, int]]:
        """The order's fills the engine has not booked yet (``mark_booked``), oldest first."""
        return self.db.execute(
            "SELECT price, qty, liquidity, ts FROM xfills WHERE client_id=? AND booked=0 ORDER BY ts", (cid,)
        ).fetchall()

    def mark_booked(self, cid: str) -> None:
        """Every fill of the order journaled so far is booked in the engine."""
        self.db.execute("UPDATE xfills SET booked=1 WHERE client_id=?", (cid,))


# --- ops commands (operator intent, durable before the ops API answers 202)

_OPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, kind TEXT NOT NULL,
    value REAL, status TEXT NOT NULL DEFAULT 'queued', result TEXT);
"""

#: The commands that set the operator pause (pause, flatten) or lift it (resume).
PAUSE_KINDS = {"pause": True, "flatten": True, "resume": False}


class OpsLog:
    """The ``ops`` table of a journal, on its own connection (the ops API thread writes it).

    ``add`` commits (``synchronous=FULL``) before it returns, so a command the API answered 202 for
    survives a ``kill -9``; the bar loop marks each one ``applied`` / ``failed`` once it is done. A
    restart re-queues what is still ``queued`` and takes the operator pause from the last pause,
    flatten or resume. A lock serializes the two threads on the connection: every statement commits
    on its own, never inside the bar loop's transactions (which use the journal's other connection).
    """

    def __init__(self, path: str | Path) -> None:
        import threading

        self.path = Path(path)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=5.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_OPS_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def add(self, ts: int, kind: str, value: float | None) -> int:
        """Journal one accepted command; returns its id (the order in which it is applied)."""
        with self._lock:
            cur = self.db.execute(
                "INSERT INTO ops (ts, kind, value) VALUES (?, ?, ?)", (int(ts), kind, value)
            )
            return int(cur.lastrowid or 0)

    def settle(self, op_id: int, status: str, result: str) -> None:
        """Mark command ``op_id`` done (``applied`` or ``failed``) with what it did."""
        with self._lock:
            self.db.execute("UPDATE ops SET status=?, result=? WHERE id=?", (status, result, int(op_id)))

    def queued(self) -> list[tuple[int, str, float | None]]:
        """Commands accepted but not applied yet, oldest first."""
        with self._lock:
            rows = self.db.execute("SELECT id, kind, value FROM ops WHERE status='queued' ORDER BY id")
            return [(int(i), str(k), v) for i, k, v in rows.fetchall()]

    def paused(self) -> bool | None:
        """The operator pause the last pause / flatten / resume asked for; None when there was none."""
        marks = ",".join(f"'{k}'" for k in PAUSE_KINDS)
        with self._lock:
            row = self.db.execute(
                f"SELECT kind FROM ops WHERE kind IN ({marks}) ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return None if row is None else PAUSE_KINDS[row[0]]
