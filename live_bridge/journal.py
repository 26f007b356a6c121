"""SQLite journal (WAL) of a bridge run: bars, engine state, ledger rows, orders and exchange fills.

Crash-consistent by construction: the engine state and everything it depends on commit in ONE
transaction, the checkpoint (``save_bar``): the newest bar, the engine's new ledger rows, the kernel
state (state vector, slots, rings, regime indicators, counters, funding book, fills cursor), every
exchange fill seen since the last checkpoint (``xfills``, keyed by trade id) and every order status
change since then. Until the checkpoint those writes live in memory (reads see them); a ``kill -9``
drops them together, so the journal always holds a state and exactly the fills that produced it.
A restart replays the exchange's trade history from the checkpoint's cursor and books each trade
whose id the journal does not hold, exactly once.

The log rows commit with the checkpoint too. Two writes commit on their own, because they must be
durable *before* an exchange request: an order's ``sending`` row (written before it is sent, so a
restart can ask the exchange about every order that may exist) and the client-order sequence counter
(no id is ever handed out twice). While ``hold`` is set (a restart before its reconcile succeeded)
neither is allowed, so nothing can be sent: a refused restart leaves the journal as it found it.

A basket (``BasketJournal``) keeps every symbol's tables and the account's state in one file and
checkpoints them in one transaction.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from gridctl.live_bridge import killpoint

if TYPE_CHECKING:
    from gridctl.live_bridge.session import EngineSession

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {P}meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {P}bars (ts INTEGER PRIMARY KEY, open REAL, high REAL, low REAL, close REAL);
CREATE TABLE IF NOT EXISTS {P}ledger (tbl TEXT NOT NULL, row INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (tbl, row));
CREATE TABLE IF NOT EXISTS {P}kstate (id INTEGER PRIMARY KEY CHECK (id = 1), bar_ts INTEGER, n INTEGER,
    state BLOB, slots BLOB, err_ring BLOB, ord_ring BLOB, regime BLOB, cnt BLOB, funding TEXT, extra TEXT);
CREATE TABLE IF NOT EXISTS {P}orders (client_id TEXT PRIMARY KEY, side INTEGER, level INTEGER, kind TEXT,
    order_side TEXT, type TEXT, price REAL, qty REAL, status TEXT NOT NULL, exchange_id TEXT,
    created_ms INTEGER, updated_ms INTEGER);
CREATE TABLE IF NOT EXISTS {P}xfills (trade_id TEXT PRIMARY KEY, client_id TEXT, price REAL, qty REAL,
    fee REAL, liquidity TEXT, ts INTEGER, booked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS {P}log (id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER, kind TEXT, detail TEXT);
"""

_TABLES = (
    ("fills", C_FILLS, FILL_DTYPE),
    ("funding", C_FUNDING, FUNDING_DTYPE),
    ("events", C_EVENTS, EVENT_DTYPE),
)


class _Tables:
    """A journal's connection with its table names: ``{P}`` in a statement is the journal's prefix
    (empty for a single-symbol run; ``s_<SYMBOL-KEY>_`` for a basket's symbol, whose tables live in the
    basket's file so that one transaction checkpoints every symbol and the account)."""

    def __init__(self, conn: sqlite3.Connection, prefix: str) -> None:
        self.conn = conn
        self.prefix = prefix

    def execute(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql.replace("{P}", self.prefix), args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self.conn.executemany(sql.replace("{P}", self.prefix), rows)

    def executescript(self, sql: str) -> sqlite3.Cursor:
        return self.conn.executescript(sql.replace("{P}", self.prefix))


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class Journal:
    """One run's journal file; ``Journal(path)`` creates it or opens it for a restart.

    ``Journal(path, owner=basket_journal, prefix=...)`` is one symbol's journal inside a basket's file:
    its own tables (``<prefix><table>``) on the basket journal's connection (``BasketJournal``)."""

    def __init__(self, path: str | Path, owner: Journal | None = None, prefix: str = "") -> None:
        self.path = Path(path)
        if prefix and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", prefix):
            raise GridctlError(f"{self.path}: journal table prefix {prefix!r} is not a plain name")
        self._owns = owner is None
        self.db = _Tables(_connect(self.path) if owner is None else owner.db.conn, prefix)
        self.db.executescript(_SCHEMA)
        self.hold = False  # True: a restart not yet reconciled; every write waits for the checkpoint
        self._fills: dict[str, tuple[Any, ...]] = {}  # xfills rows since the checkpoint, by trade id
        self._booked_tids: set[str] = set()  # journaled fills booked since the checkpoint (mark_booked)
        self._status: dict[str, tuple[str, int, str | None]] = {}  # order status changes since then
        self._notes: list[tuple[int, str, str]] = []  # log rows since the checkpoint

    def close(self) -> None:
        if self._owns:
            self.db.conn.close()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One SQLite transaction (the connection autocommits each statement outside of one)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- meta

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM {P}meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO {P}meta VALUES (?, ?)", (key, value))

    def _no_hold(self, what: str) -> None:
        if self.hold:
            raise GridctlError(
                f"{self.path}: {what} before the restart's reconcile committed (nothing is sent)"
            )

    def next_seq(self) -> int:
        """A client-order sequence number never handed out before in this journal (durable at once)."""
        self._no_hold("a client order id was asked for")
        with self._tx():
            n = int(self.meta("seq") or "0") + 1
            self.set_meta("seq", str(n))
        return n

    def note(self, ts: int, kind: str, detail: str) -> None:
        """A log row, committed with the next checkpoint (the log tells what the committed state saw)."""
        self._notes.append((int(ts), kind, detail))

    @property
    def pending(self) -> int:
        """Fills and order status changes waiting for the next checkpoint."""
        return len(self._fills) + len(self._status) + len(self._booked_tids)

    def _flush(self) -> None:
        """Write the held fills, order statuses and notes (inside the checkpoint's transaction)."""
        self.db.executemany(
            "INSERT OR IGNORE INTO {P}xfills VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._fills.values()
        )
        self.db.executemany(
            "UPDATE {P}orders SET status=?, updated_ms=?, exchange_id=COALESCE(?, exchange_id) "
            "WHERE client_id=?",
            [(st, ms, xid, cid) for cid, (st, ms, xid) in self._status.items()],
        )
        booked = [(cid,) for cid, (st, _ms, _x) in self._status.items() if st == "booked"]
        self.db.executemany("UPDATE {P}xfills SET booked=1 WHERE client_id=?", booked)
        self.db.executemany(
            "UPDATE {P}xfills SET booked=1 WHERE trade_id=?", [(t,) for t in self._booked_tids]
        )
        self.db.executemany("INSERT INTO {P}log (ts, kind, detail) VALUES (?, ?, ?)", self._notes)

    # --- per bar

    def save_bar(self, session: Any, extra: dict[str, Any] | None = None) -> None:
        """The checkpoint: in one transaction, the fills and order statuses held since the last one,
        the newest bar and the ledger rows not yet journaled, and the kernel state (replaced)."""
        with self._tx():
            self.write_checkpoint(session, extra)
            killpoint.hit("journal")  # test-only: die inside the transaction (it must roll back)
        self.committed()

    def write_checkpoint(self, session: Any, extra: dict[str, Any] | None = None) -> None:
        """``save_bar``'s writes, inside a transaction the caller holds (``BasketJournal.save`` runs every
        symbol's in one)."""
        s = session
        k = s.n - 1
        ks = s.ks
        self._flush()
        if k >= 0:
            self.db.execute(
                "INSERT OR REPLACE INTO {P}bars VALUES (?, ?, ?, ?, ?)",
                (int(s.ts[k]), float(s.open[k]), float(s.high[k]), float(s.low[k]), float(s.close[k])),
            )
        for name, slot, _dtype in _TABLES:
            have = self.db.execute("SELECT COUNT(*) FROM {P}ledger WHERE tbl=?", (name,)).fetchone()[0]
            buf = {"fills": s.fills, "funding": s.fund, "events": s.ev}[name]
            rows = [(name, i, buf[i : i + 1].tobytes()) for i in range(have, int(s.cnt[slot]))]
            self.db.executemany("INSERT INTO {P}ledger VALUES (?, ?, ?)", rows)
        if s.cnt[C_EQUITY] > 0:
            i = int(s.cnt[C_EQUITY]) - 1
            self.db.execute(
                "INSERT OR REPLACE INTO {P}ledger VALUES ('equity', ?, ?)", (i, s.eq[i : i + 1].tobytes())
            )
        book = s.funding
        self.db.execute(
            "INSERT OR REPLACE INTO {P}kstate VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

    def committed(self) -> None:
        """The checkpoint committed: what was held for it is journaled, and a restart's hold is over."""
        self._fills.clear()
        self._booked_tids.clear()
        self._status.clear()
        self._notes.clear()
        self.hold = False

    def has_state(self) -> bool:
        return self.db.execute("SELECT COUNT(*) FROM {P}kstate").fetchone()[0] > 0

    def restore(self, session: EngineSession) -> dict[str, Any]:
        """Load the journaled kernel state, bars and ledgers into a fresh ``session`` (a single run's, or a
        basket's ``MemberSession``: each loads its ledgers its own way, ``load_ledger``); returns
        ``extra``."""
        row = self.db.execute(
            "SELECT n, state, slots, err_ring, ord_ring, regime, cnt, funding, extra "
            "FROM {P}kstate WHERE id=1"
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
        bars = self.db.execute("SELECT ts, open, high, low, close FROM {P}bars ORDER BY ts").fetchall()
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
            blobs = self.db.execute("SELECT data FROM {P}ledger WHERE tbl=? ORDER BY row", (name,)).fetchall()
            recs = np.frombuffer(b"".join(b[0] for b in blobs), dtype=dtype) if blobs else np.zeros(0, dtype)
            attr = {"fills": "fills", "funding": "fund", "events": "ev", "equity": "eq"}[name]
            session.load_ledger(attr, recs)  # a basket's symbol loads them into the basket's row
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
        """Journal an order before it is sent (durable at once: a crash cannot lose it)."""
        self._no_hold("an order was to be sent")
        self.db.execute(
            "INSERT INTO {P}orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'sending', NULL, ?, ?)",
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
        """An order's new status, committed with the next checkpoint (reads see it at once)."""
        old = self._status.get(cid)
        xid = exchange_id if exchange_id is not None else (old[2] if old else None)
        self._status[cid] = (status, int(now_ms), xid)

    def _overlay(self, row: dict[str, Any]) -> dict[str, Any]:
        held = self._status.get(row["client_id"])
        if held is not None:
            row["status"], row["updated_ms"] = held[0], held[1]
            if held[2] is not None:
                row["exchange_id"] = held[2]
        return row

    def orders(self, statuses: tuple[str, ...], kind: str | None = None) -> list[dict[str, Any]]:
        """Orders whose status (held changes included) is one of ``statuses`` (and of ``kind``, when
        given), oldest first."""
        held = list(self._status)
        q = (
            f"SELECT * FROM {{P}}orders WHERE (status IN ({','.join('?' * len(statuses))}) "
            f"OR client_id IN ({','.join('?' * len(held))}))"
            + (" AND kind = ?" if kind is not None else "")
            + " ORDER BY created_ms"
        )
        cur = self.db.execute(q, (*statuses, *held, *([kind] if kind is not None else [])))
        cols = [c[0] for c in cur.description]
        rows = [self._overlay(dict(zip(cols, r, strict=True))) for r in cur.fetchall()]
        return [r for r in rows if r["status"] in statuses]

    def order(self, cid: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM {P}orders WHERE client_id=?", (cid,))
        r = cur.fetchone()
        return self._overlay(dict(zip([c[0] for c in cur.description], r, strict=True))) if r else None

    def fill_known(self, trade_id: str) -> bool:
        if trade_id in self._fills:
            return True
        return self.db.execute("SELECT 1 FROM {P}xfills WHERE trade_id=?", (trade_id,)).fetchone() is not None

    def add_fill(self, f: Any) -> None:
        """An exchange fill seen (ours or foreign), committed with the next checkpoint."""
        self._fills.setdefault(
            f.trade_id, (f.trade_id, f.client_id, f.price, f.qty, f.fee, f.liquidity, f.ts_ms, 0)
        )

    def fills_for(self, cid: str) -> list[tuple[float, float, str, int]]:
        """(price, qty, liquidity, ts) of every fill of order ``cid`` seen so far, oldest first."""
        rows = self.db.execute(
            "SELECT price, qty, liquidity, ts FROM {P}xfills WHERE client_id=? ORDER BY ts", (cid,)
        ).fetchall()
        rows += [(r[2], r[3], r[5], r[6]) for r in self._fills.values() if r[1] == cid]
        return sorted(rows, key=lambda r: r[3])

    def unbooked_fills(self, cid: str) -> list[tuple[float, float, str, int]]:
        """The order's fills the engine has not booked yet (``mark_booked``), oldest first."""
        rows = [
            (r[1], r[2], r[3], r[4])
            for r in self.db.execute(
                "SELECT trade_id, price, qty, liquidity, ts FROM {P}xfills WHERE client_id=? AND booked=0",
                (cid,),
            ).fetchall()
            if r[0] not in self._booked_tids
        ]
        rows += [(r[2], r[3], r[5], r[6]) for r in self._fills.values() if r[1] == cid and not r[7]]
        return sorted(rows, key=lambda r: r[3])

    def mark_booked(self, cid: str) -> None:
        """Every fill of the order seen so far is booked in the engine (committed with the checkpoint)."""
        for tid, row in list(self._fills.items()):
            if row[1] == cid:
                self._fills[tid] = (*row[:7], 1)
        self._booked_tids.update(
            r[0]
            for r in self.db.execute(
                "SELECT trade_id FROM {P}xfills WHERE client_id=? AND booked=0", (cid,)
            ).fetchall()
        )


class BasketJournal(Journal):
    """A basket run's journal: the run's meta, the ops log and the account's shared state in the file's
    own tables, and every symbol's journal (``members[symbol]``: orders, fills, bars, ledgers, engine
    row) in tables of its own in the same file, on the same connection.

    The basket's checkpoint (``save``) is ONE transaction over every symbol's checkpoint writes and the
    account's state (``account``: ``BasketSession.account_arrays``, the kernel rows, rings, wallet and
    flags, shared and work rows, replaced; ``account_bars``: the aligned bars and account equity rows,
    appended), so a ``kill -9`` leaves every symbol and the account at the same bar: one file, one
    SQLite commit (separate files would commit one by one).
    """

    def __init__(self, path: str | Path, prefixes: dict[str, str]) -> None:
        super().__init__(path)
        self.db.executescript(_ACCOUNT_SCHEMA)
        self.members = {sym: Journal(path, owner=self, prefix=p) for sym, p in prefixes.items()}
        self.initial_balance: float | None = None  # a new live run's wallet, for the run's meta

    def has_account(self) -> bool:
        """A basket checkpoint was committed (the account's state is journaled)."""
        return self.db.execute("SELECT COUNT(*) FROM account").fetchone()[0] > 0

    def save(self, basket: Any, extras: dict[str, Any]) -> None:
        """The basket's checkpoint (``basket``: a ``BasketSession``): each symbol's ``write_checkpoint``,
        the account's arrays (replaced) and its aligned bars not yet journaled (the last one rewritten:
        a booking after the close may change it), one transaction."""
        buf = io.BytesIO()
        np.savez(buf, **basket.account_arrays())
        with self._tx():
            for sym, journal in self.members.items():
                journal.write_checkpoint(basket.sessions[sym], extras[sym])
                killpoint.hit("journal")  # test-only: die inside the transaction (it must roll back)
            self.db.execute("INSERT OR REPLACE INTO account VALUES (1, ?)", (buf.getvalue(),))
            last = self.db.execute("SELECT MAX(k) FROM account_bars").fetchone()[0]
            start = 0 if last is None else int(last)
            recs = basket.bar_records(start)
            self.db.executemany(
                "INSERT OR REPLACE INTO account_bars VALUES (?, ?)",
                [(start + i, recs[i : i + 1].tobytes()) for i in range(len(recs))],
            )
        for journal in self.members.values():
            journal.committed()
        self.hold = False

    def restore_account(self, basket: Any) -> None:
        """A restart: the journaled account arrays and aligned bars into ``basket`` (after every symbol's
        ``restore``; ``BasketSession.load_account``)."""
        row = self.db.execute("SELECT data FROM account WHERE id=1").fetchone()
        if row is None:
            raise GridctlError(f"{self.path}: journal holds no account state to restart the basket from")
        with np.load(io.BytesIO(row[0]), allow_pickle=False) as z:
            arrays = {k: z[k].copy() for k in z.files}
        n = int(arrays["n"][0])
        blobs = self.db.execute("SELECT data FROM account_bars WHERE k < ? ORDER BY k", (n,)).fetchall()
        bars = np.frombuffer(b"".join(b[0] for b in blobs), dtype=basket.bar_dtype).copy()
        basket.load_account(arrays, bars)


_ACCOUNT_SCHEMA = """
CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS account_bars (k INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""


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
