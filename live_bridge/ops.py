"""Ops API: FastAPI on uvicorn, bound to 127.0.0.1, every route behind a bearer token except /metrics.

Routes: ``GET /health``, ``GET /status`` (state, positions, ladder, open orders, gates, the results
of applied commands), ``POST /throttle`` ``{"value": x}``, ``POST /pause``, ``POST /resume``,
``POST /flatten``, ``GET /metrics`` (Prometheus).
The API thread never touches the engine: reads come from the snapshot the bar loop publishes, and each
mutation is validated here (throttle through ``engine.state.set_throttle`` on a scratch state),
committed to the run's journal (``journal.OpsLog``; a write that fails is 503, nothing accepted) and
queued before the 202; the control loop applies
queued commands within its tick (``Bridge.apply_commands``), and a pause or flatten holds new entry
orders from the moment it is accepted (``OpsState.entries_held``). No token or a wrong token: 401 and
nothing is queued. Bodies over ``MAX_BODY_BYTES`` are 413; a body that is not JSON (including one nested
deeper than the parser goes) is 400; a value that is not a finite number in 0..1 is 422.
"""

from __future__ import annotations

import hmac
import itertools
import json
import queue
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from gridctl.configs.errors import GridctlError
from gridctl.engine.state import N_STATE, set_throttle
from gridctl.live_bridge.journal import PAUSE_KINDS, OpsLog
from gridctl.live_bridge.metrics import CONTENT_TYPE, metrics_registry, render

APPLIED_KEPT = 50


@dataclass(frozen=True)
class Command:
    """A queued mutation: ``kind`` in throttle / pause / resume / flatten, with its value."""

    id: int
    kind: str
    value: float | None = None


#: Largest request body the API reads; a longer one is answered 413 before any of it is parsed.
MAX_BODY_BYTES = 64 * 1024

#: The pause-reason keys (``/status`` ``pause_keys`` and the metrics' ``reason`` label) the ops state adds
#: at once, before the bar loop has published: the operator pause and the bar feed connection.
OPERATOR_PAUSE = "operator pause"


class OpsState:
    """What the API and the bar loop share: the last snapshot (read) and the command queue (write).

    With a journal (``attach``) every command is committed to it before ``enqueue`` returns, so the 202
    means durable. A pause or flatten holds new entries at once (``entries_held``: the bar loop checks
    it before each entry order goes out, whatever it is busy with); a resume releases the hold. Other
    threads (the feed worker) report input problems with ``set_live_reason``; ``snapshot`` shows those
    and the hold immediately, on top of the bar loop's last published snapshot.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = {"state": "starting", "unknown": {}}
        self.commands: queue.Queue[Command] = queue.Queue()
        self._backlog: list[Command] = []  # put back by the bar loop (a flatten the exchange refused)
        self._ids = itertools.count(1)
        self._log: OpsLog | None = None
        self._hold = False
        self._live: dict[str, str] = {}
        # results of the last APPLIED_KEPT applied commands (the bar loop appends; /status shows them)
        self.applied: list[dict[str, Any]] = []

    def attach(self, log: OpsLog) -> None:
        """Journal commands to ``log``; its queued commands are queued again and its pause is the hold."""
        self._log = log
        paused = log.paused()
        if paused is not None:
            self._hold = paused
        for op_id, kind, value in log.queued():
            self.commands.put(Command(op_id, kind, value))

    def entries_held(self) -> bool:
        """True from the moment a pause or flatten is accepted until a resume is."""
        return self._hold

    def set_live_reason(self, key: str, detail: str | None) -> None:
        """An input problem seen outside the bar loop (``None``: gone), shown by ``snapshot`` at once."""
        with self._lock:
            if detail:
                self._live[key] = detail
            else:
                self._live.pop(key, None)

    def publish(self, snapshot: dict[str, Any]) -> None:
        with self._lock:
            self._snapshot = snapshot

    def snapshot(self) -> dict[str, Any]:
        """The last published snapshot, with the hold and the live input problems merged in."""
        with self._lock:
            snap, live, held = self._snapshot, dict(self._live), self._hold
        keys = list(snap.get("pause_keys", []))
        reasons = list(snap.get("pause_reasons", []))
        added = False
        if held and OPERATOR_PAUSE not in keys:
            keys.insert(0, OPERATOR_PAUSE)
            reasons.insert(0, OPERATOR_PAUSE)
            added = True
        for key, detail in sorted(live.items()):
            if key not in keys:
                keys.append(key)
                reasons.append(f"{key}: {detail}")
                added = True
        if not added:
            return snap
        return {**snap, "pause_keys": keys, "pause_reasons": reasons, "entries_paused": 1.0}

    def enqueue(self, kind: str, value: float | None = None) -> Command:
        """Journal (when attached) and queue a command; a pause / flatten holds entries from now on."""
        with self._lock:
            if self._log is not None:
                op_id = self._log.add(int(time.time() * 1000), kind, value)
            else:
                op_id = next(self._ids)
            cmd = Command(op_id, kind, value)
            self.commands.put(cmd)
            if kind in PAUSE_KINDS:
                self._hold = PAUSE_KINDS[kind]
        return cmd

    def settle(self, cmd: Command, result: dict[str, Any]) -> None:
        """The bar loop applied ``cmd`` (``result["ok"]`` says how): journal it and keep the result."""
        if self._log is not None:
            self._log.settle(cmd.id, "applied" if result.get("ok") else "failed", json.dumps(result))
        self.record([result])

    def record(self, results: list[dict[str, Any]]) -> None:
        """Keep the results of applied commands (the last ``APPLIED_KEPT``)."""
        with self._lock:
            self.applied.extend(results)
            del self.applied[:-APPLIED_KEPT]

    def requeue(self, cmds: list[Command]) -> None:
        """Put ``cmds`` back at the head of the queue, in order (applied before anything queued later)."""
        with self._lock:
            self._backlog = list(cmds) + self._backlog

    def drain(self) -> list[Command]:
        with self._lock:
            out, self._backlog = self._backlog, []
        while True:
            try:
                out.append(self.commands.get_nowait())
            except queue.Empty:
                return out


class MemberOps(OpsState):
    """One symbol's ops state inside a ``BasketOps``: its bridge drains the commands the basket fanned
    out to it and publishes its snapshot here; a settled command is reported to the basket, which
    journals it once every symbol applied it."""

    def __init__(self, basket: BasketOps, symbol: str) -> None:
        super().__init__()
        self._basket = basket
        self.symbol = symbol

    def settle(self, cmd: Command, result: dict[str, Any]) -> None:
        self.record([result])
        self._basket._member_settled(self.symbol, cmd, result)


#: A basket's worst member state first: the basket's ``state`` is the worst of its symbols'.
_STATE_ORDER = ("liquidated", "halted", "starting", "cooldown", "reducing", "normal")
#: ``/status`` ``total``: keys that are the account's (every symbol's snapshot reports the account's: the
#: exchange's live, the basket's on paper, ``EngineSession.account_figures``), summed, or the largest of
#: the symbols' (flags, ages).
ACCOUNT_KEYS = ("equity", "wallet_balance", "margin_ratio")
SUMMED_KEYS = ("realized_pnl", "unrealized_pnl", "funding_income", "funding_projected_cost", "open_orders",
               "orders_sent", "orders_deferred", "entry_orders_held")  # fmt: skip
MAX_KEYS = ("circuit_breaker_active", "entries_paused", "unexplained_exposure", "last_bar_age_seconds")


class BasketOps(OpsState):
    """The ops state of a basket run: one command queue for the operator, fanned out to every symbol.

    ``enqueue`` journals a command once and puts it on every symbol's own queue (``members``), so each
    symbol's bridge applies every command (a shared queue would let the first bridge drain them all); a
    pause or flatten holds every symbol's entries at once. The command is settled in the journal when
    every symbol applied it (``ok`` only if it was ok on each). ``snapshot`` is the basket's ``/status``:
    each symbol's snapshot under ``symbols``, the account's figures under ``total``.
    """

    def __init__(self, symbols: tuple[str, ...]) -> None:
        super().__init__()
        self.symbols = tuple(symbols)
        self.members = {sym: MemberOps(self, sym) for sym in self.symbols}
        self._results: dict[int, dict[str, dict[str, Any]]] = {}
        self._account: dict[str, Any] = {}  # the account's own figures (``publish_account``)

    def publish_account(self, figures: dict[str, Any]) -> None:
        """The account's own figures for ``total`` (the ``BasketBridge``'s bar latency), after each bar."""
        with self._lock:
            self._account = dict(figures)

    def attach(self, log: OpsLog) -> None:
        self._log = log
        paused = log.paused()
        if paused is not None:
            self._set_hold(paused)
        for op_id, kind, value in log.queued():
            cmd = Command(op_id, kind, value)
            for m in self.members.values():
                m.commands.put(cmd)

    def _set_hold(self, held: bool) -> None:
        self._hold = held
        for m in self.members.values():
            m._hold = held

    def enqueue(self, kind: str, value: float | None = None) -> Command:
        with self._lock:
            if self._log is not None:
                op_id = self._log.add(int(time.time() * 1000), kind, value)
            else:
                op_id = next(self._ids)
            cmd = Command(op_id, kind, value)
            for m in self.members.values():
                m.commands.put(cmd)
            if kind in PAUSE_KINDS:
                self._set_hold(PAUSE_KINDS[kind])
        return cmd

    def _member_settled(self, symbol: str, cmd: Command, result: dict[str, Any]) -> None:
        with self._lock:
            done = self._results.setdefault(cmd.id, {})
            done[symbol] = result
            if len(done) < len(self.symbols):
                return
            del self._results[cmd.id]
        combined = {"id": cmd.id, "kind": cmd.kind, "ok": all(r.get("ok") for r in done.values()),
                    "symbols": {sym: done[sym] for sym in self.symbols}}  # fmt: skip
        if self._log is not None:
            self._log.settle(cmd.id, "applied" if combined["ok"] else "failed", json.dumps(combined))
        self.record([combined])

    def drain(self) -> list[Command]:
        raise GridctlError("a basket's commands are drained by each symbol's bridge (BasketOps.members)")

    def snapshot(self) -> dict[str, Any]:
        """``/status`` of the basket: per symbol and the account's total."""
        with self._lock:
            live = dict(self._live)
            account = dict(self._account)
        per = {sym: m.snapshot() for sym, m in self.members.items()}
        first = per[self.symbols[0]]
        states = [str(s.get("state")) for s in per.values()]
        worst = min(states, key=lambda x: _STATE_ORDER.index(x) if x in _STATE_ORDER else len(_STATE_ORDER))
        keys: list[str] = []
        reasons: list[str] = []
        for sym, s in per.items():
            keys += [k for k in s.get("pause_keys", []) if k not in keys]
            reasons += [f"{sym}: {r}" for r in s.get("pause_reasons", [])]
        for key, detail in sorted(live.items()):
            if key not in keys:
                keys.append(key)
            reasons.append(f"{key}: {detail}")
        total: dict[str, Any] = {}
        labels: dict[str, str] = {}
        for key in (*ACCOUNT_KEYS, *SUMMED_KEYS, *MAX_KEYS):
            vals = [s.get(key) for s in per.values()]
            if any(v is None for v in vals):
                total[key] = None
                why = next(s.get("unknown_labels", {}).get(key) for s in per.values() if s.get(key) is None)
                labels[key] = why or "other"
            elif key in ACCOUNT_KEYS:
                total[key] = first.get(key)
            elif key in SUMMED_KEYS:
                total[key] = float(sum(vals))
            else:
                total[key] = float(max(vals))
        if reasons:
            total["entries_paused"] = 1.0
        total["latency"] = account.get("latency")  # one per account (None before the first bar)
        total["unknown_labels"] = labels
        return {
            "mode": first.get("mode"),
            "run_id": first.get("run_id"),
            "basket": list(self.symbols),
            "state": worst,
            "pause_keys": keys,
            "pause_reasons": reasons,
            "entries_paused": total["entries_paused"],
            "last_bar_age_seconds": total["last_bar_age_seconds"],
            "total": total,
            "symbols": per,
            "commands": list(self.applied),
        }


class _BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 and never handed on."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        payload = json.dumps({"detail": f"request body larger than {self.limit} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def build_app(ops: OpsState, token: str | None) -> FastAPI:
    """The FastAPI app. ``token`` None or empty: every authenticated route answers 401."""
    app = FastAPI(title="gridctl live ops", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)
    registry = metrics_registry(ops.snapshot)

    def auth(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if (
            not token
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(given.strip().encode(), token.encode())
        ):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/health", dependencies=[Depends(auth)])
    def health() -> dict[str, Any]:
        snap = ops.snapshot()
        return {
            "ok": not snap.get("pause_reasons")
            and snap.get("state") not in ("halted", "liquidated", "starting"),
            "state": snap.get("state"),
            "pause_reasons": snap.get("pause_reasons", []),
            "last_bar_age_seconds": snap.get("last_bar_age_seconds"),
        }

    @app.get("/status", dependencies=[Depends(auth)])
    def status() -> dict[str, Any]:
        return ops.snapshot()

    @app.post("/throttle", dependencies=[Depends(auth)])
    async def throttle(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
            raise HTTPException(
                status_code=400, detail='body must be JSON: {"value": <number 0..1>}'
            ) from None
        if not isinstance(body, dict) or "value" not in body:
            raise HTTPException(status_code=400, detail='body must be JSON: {"value": <number 0..1>}')
        try:
            set_throttle(np.zeros(N_STATE), body["value"])  # the engine's own validation, on a scratch state
        except GridctlError as err:
            raise HTTPException(status_code=422, detail=str(err)) from None
        cmd = _enqueue("throttle", float(body["value"]))
        return JSONResponse({"queued": cmd.id, "kind": cmd.kind, "value": cmd.value}, status_code=202)

    def _enqueue(kind: str, value: float | None = None) -> Command:
        try:
            return ops.enqueue(kind, value)
        except sqlite3.Error as err:  # not journaled: not accepted
            raise HTTPException(status_code=503, detail=f"command not journaled: {err}") from None

    def _queue(kind: str) -> JSONResponse:
        cmd = _enqueue(kind)
        return JSONResponse({"queued": cmd.id, "kind": kind}, status_code=202)

    @app.post("/pause", dependencies=[Depends(auth)])
    def pause() -> JSONResponse:
        return _queue("pause")

    @app.post("/resume", dependencies=[Depends(auth)])
    def resume() -> JSONResponse:
        return _queue("resume")

    @app.post("/flatten", dependencies=[Depends(auth)])
    def flatten() -> JSONResponse:
        return _queue("flatten")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(render(registry), media_type=CONTENT_TYPE)

    return app


class OpsServer:
    """uvicorn serving the ops app from a daemon thread on 127.0.0.1 (port 0 picks a free one)."""

    def __init__(self, ops: OpsState, token: str | None, port: int = 0, host: str = "127.0.0.1") -> None:
        if host != "127.0.0.1":
            raise GridctlError(f"ops API binds 127.0.0.1 only, not {host}")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as err:
            self.sock.close()
            raise GridctlError(f"ops API: cannot bind {host}:{port}: {err}") from None
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(build_app(ops, token), log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> OpsServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise GridctlError("ops API did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()
