"""Progress that suits where it is written: a tqdm bar on a terminal, plain periodic lines anywhere else.

tqdm redraws its bar with carriage returns. Sent to a file or a pipe (``make demo > demo.log``, CI logs, a job
scheduler) those redraws pile up into one enormous line that nobody can read or grep. tqdm has no mode that
prints discrete lines instead, so this small wrapper chooses: the bar when its stream is a terminal, otherwise
one plain line every ``every_n`` units or ``every_s`` seconds (whichever comes first) and a last one at the end.

``ECG_ADAPT_PROGRESS=bar|lines|off`` forces a mode. This module imports nothing from ecg_adapt, so every layer
(data, inference, training) can use it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Literal, TextIO

ProgressMode = Literal["auto", "bar", "lines", "off"]
ENV_VAR = "ECG_ADAPT_PROGRESS"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or file-like objects without isatty
        return False


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class Progress:
    """A progress reporter with tqdm's ``update`` / ``set_postfix`` / ``close`` calls.

    Args:
        total: units expected (``None``: unknown, no percentage or ETA).
        desc: what is progressing (``"training"``, ``"caching ptbxl"``).
        unit: the unit's name (``"step"``, ``"rec"``).
        disable: report nothing (e.g. on non-main ranks).
        initial: units already done (a resumed run).
        stream: where to write (default ``sys.stderr``, as tqdm); its ``isatty()`` picks bar or lines.
        every_s: in line mode, at most this many seconds between lines.
        every_n: in line mode, also a line every this many units (``None``: by time only).
        logger: in line mode, send lines to this logger (INFO) instead of ``stream``, e.g. so that a training
            run's progress also lands in its ``train.log``.
        mode: ``auto`` (default: ``$ECG_ADAPT_PROGRESS`` or the stream's ``isatty()``), ``bar``, ``lines``, ``off``.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with Progress(4, "demo", "rec", stream=out, every_n=2) as p:
        ...     for _ in range(4):
        ...         p.update(1)
        >>> out.getvalue().count("\\n"), "\\r" in out.getvalue()
        (2, False)
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, disable: bool = False, initial: int = 0,
                 stream: TextIO | None = None, every_s: float = 30.0, every_n: int | None = None,
                 logger: logging.Logger | None = None, mode: ProgressMode = "auto") -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every_s, self.every_n, self.logger = float(every_s), every_n, logger
        if mode == "auto":
            mode = _resolve_mode(self.stream)  # type: ignore[assignment]
        self.mode: ProgressMode = "off" if disable else mode
        self.n = self._start = int(initial)
        self._postfix: dict[str, Any] = {}
        self._t0 = self._last_t = time.monotonic()
        self._last_n = self.n
        self._closed = False
        self._bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm  # only a terminal needs it

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, mininterval=1.0)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            now = time.monotonic()
            by_count = self.every_n is not None and self.n - self._last_n >= self.every_n
            if by_count or now - self._last_t >= self.every_s:
                self._emit(now)

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the counts (loss, epoch, ...); kept for the next line in line mode."""
        self._postfix = values
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def line(self) -> str:
        """The plain line for the current position (what line mode writes)."""
        elapsed = time.monotonic() - self._t0
        rate = (self.n - self._start) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.n}"]
        if self.total:
            parts[0] += f"/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)"
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"elapsed {_fmt_seconds(elapsed)}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"eta {_fmt_seconds((self.total - self.n) / rate)}")
        parts += [f"{k} {v}" for k, v in self._postfix.items()]
        return ", ".join(parts)

    def _emit(self, now: float) -> None:
        text = self.line()
        if self.logger is not None:
            self.logger.info(text)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()
        self._last_t, self._last_n = now, self.n

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines" and self.n != self._last_n:
            self._emit(time.monotonic())

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resolve_mode(stream: TextIO) -> str:
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced and forced not in ("bar", "lines", "off"):
        raise ValueError(f"${ENV_VAR} must be bar, lines or off, got {forced!r}")
    return forced or ("bar" if _is_terminal(stream) else "lines")


def quiet_library_bars(stream: TextIO | None = None) -> bool:
    """Off a terminal, turn off the tqdm bars that transformers, huggingface_hub and datasets draw themselves
    (``save_pretrained``'s "Writing model shards", downloads): they would be the same carriage-return noise.
    Returns whether it did. Each library's own switch is used; nothing is patched."""
    if _resolve_mode(stream if stream is not None else sys.stderr) == "bar":
        return False
    import importlib

    for module, switch in (("transformers.utils.logging", "disable_progress_bar"),
                           ("huggingface_hub.utils", "disable_progress_bars"),
                           ("datasets.utils.logging", "disable_progress_bar")):
        try:
            getattr(importlib.import_module(module), switch)()
        except (ImportError, AttributeError):  # library absent or without that switch in this version
            continue
    return True


__all__ = ["ENV_VAR", "Progress", "ProgressMode", "quiet_library_bars"]
