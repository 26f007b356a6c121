"""How `gridctl data download` fetches: its defaults written once, in a module light enough (no ccxt, no
polars) for the command line to read them whenever it is parsed (``data/download_cli.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ccxt

#: What a download fetches: trade klines, mark-price klines, funding settlements.
KINDS: tuple[str, ...] = ("candles", "mark", "funding")
#: Default budget (s) for an unreachable exchange: a request that gets no answer at all (name resolution,
#: connection refused, timeout) is retried only until this long after its first failure.
DEFAULT_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class FetchOptions:
    """How a download fetches, the same for one symbol or several.

    ``kinds``: any of ``candles`` (trade klines), ``mark`` (mark-price klines), ``funding``.
    ``client``: a ready ccxt client (tests pass one aimed at the emulator); else ``make_client`` (with
    ``api_url`` replacing the exchange's hosts). ``sleep`` waits between retries (``backoff_s``
    doubling, or the server's Retry-After), at most ``max_retries`` of them. ``timeout_s``: how long an
    unreachable exchange (no answer at all) is retried before the download stops with an error naming
    the host and the cause; ``clock`` measures it. ``progress`` shows a progress bar on stderr.
    """

    kinds: tuple[str, ...] = KINDS
    progress: bool = True
    client: ccxt.Exchange | None = None
    max_retries: int = 8
    api_url: str | None = None
    backoff_s: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    timeout_s: float = DEFAULT_TIMEOUT_S
    clock: Callable[[], float] = time.monotonic
