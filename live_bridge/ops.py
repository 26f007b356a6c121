"""Ops API: FastAPI on uvicorn, bound to 127.0.0.1, every route behind a bearer token except /metrics.

Routes: ``GET /health``, ``GET /status`` (state, positions, ladder, open orders, gates, the results
of applied commands), ``POST /throttle`` ``{"value": x}``, ``POST /pause``, ``POST /resume``,
``POST /flatten``, ``GET /metrics`` (Prometheus).
The API thread never touches the engine: reads come from the snapshot the bar loop publishes after
each bar, and each mutation is validated here (throttle through ``engine.state.set_throttle`` on a
scratch state) and then queued; the bar loop applies queued commands between bars
(``Bridge.apply_commands``). No token or a wrong token: 401 and nothing is queued.
"""

from __future__ import annotations

import hmac
import itertools
import queue
import socket
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
from gridctl.live_bridge.metrics import CONTENT_TYPE, metrics_registry, render

APPLIED_KEPT = 50


@dataclass(frozen=True)
class Command:
    """A queued mutation: ``kind`` in throttle / pause / resume / flatten, with its value."""

    id: int
    kind: str
    value: float | None = None


class OpsState:
    """What the API and the bar loop share: the last snapshot (read) and the command queue (write)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = {"state": "starting", "unknown": {}}
        self.commands: queue.Queue[Command] = queue.Queue()
        self._ids = itertools.count(1)
        # results of the last APPLIED_KEPT applied commands (the bar loop appends; /status shows them)
        self.applied: list[dict[str, Any]] = []

    def publish(self, snapshot: dict[str, Any]) -> None:
        with self._lock:
            self._snapshot = snapshot

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._snapshot

    def enqueue(self, kind: str, value: float | None = None) -> Command:
        cmd = Command(next(self._ids), kind, value)
        self.commands.put(cmd)
        return cmd

    def record(self, results: list[dict[str, Any]]) -> None:
        """Keep the results of applied commands (the last ``APPLIED_KEPT``)."""
        with self._lock:
            self.applied.extend(results)
            del self.applied[:-APPLIED_KEPT]

    def drain(self) -> list[Command]:
        out: list[Command] = []
        while True:
            try:
                out.append(self.commands.get_nowait())
            except queue.Empty:
                return out


def build_app(ops: OpsState, token: str | None) -> FastAPI:
    """The FastAPI app. ``token`` None or empty: every authenticated route answers 401."""
    app = FastAPI(title="gridctl live ops", docs_url=None, redoc_url=None, openapi_url=None)
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
            body = await request.json()
        except ValueError:
            raise HTTPException(
                status_code=400, detail='body must be JSON: {"value": <number 0..1>}'
            ) from None
        if not isinstance(body, dict) or "value" not in body:
            raise HTTPException(status_code=400, detail='body must be JSON: {"value": <number 0..1>}')
        try:
            set_throttle(np.zeros(N_STATE), body["value"])  # the engine's own validation, on a scratch state
        except GridctlError as err:
            raise HTTPException(status_code=422, detail=str(err)) from None
        cmd = ops.enqueue("throttle", float(body["value"]))
        return JSONResponse({"queued": cmd.id, "kind": cmd.kind, "value": cmd.value}, status_code=202)

    def _queue(kind: str) -> JSONResponse:
        cmd = ops.enqueue(kind)
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
