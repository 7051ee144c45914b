"""Fault injection for the reliability tests (off unless PCDET_ANOMALY_FAULTS is set).

PCDET_ANOMALY_FAULTS is a comma-separated list of faults, each `kind@step[:rank]` (rank defaults to every rank):
  nan_loss@S[:R]       the training loss of global step S (counted in optimizer steps) is NaN on rank R
  sigterm@S[:R]        rank R sends itself SIGTERM before global step S (what SLURM / Kubernetes do on preemption)
  kill@S[:R]           rank R dies with SIGKILL before global step S (no handler can run)
  ckpt_fail@N          the N-th checkpoint write (1-based, counted per process) fails half-way with an OSError
  cpu_scaler@0         a CPU run uses an enabled GradScaler, so the mixed-precision skip path runs without a GPU
Nothing here runs in a normal training: `active()` is False and every hook returns at once.
"""
from __future__ import annotations

import os
import signal

__all__ = ["active", "parse", "has", "loss_fault", "signal_fault", "checkpoint_write_fault", "ENV"]

ENV = "PCDET_ANOMALY_FAULTS"
_ckpt_writes = 0


def parse(text: str | None = None) -> list[tuple[str, int, int | None]]:
    text = os.environ.get(ENV, "") if text is None else text
    faults = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        try:
            kind, rest = item.split("@", 1)
            step, _, rank = rest.partition(":")
            faults.append((kind, int(step), int(rank) if rank else None))
        except ValueError:
            raise ValueError(f"{ENV}: cannot parse {item!r}; expected kind@step[:rank]") from None
        if kind not in ("nan_loss", "sigterm", "kill", "ckpt_fail", "cpu_scaler"):
            raise ValueError(f"{ENV}: unknown fault {kind!r} in {item!r}")
    return faults


def active() -> bool:
    return bool(os.environ.get(ENV))


def _match(kind: str, step: int, rank: int) -> bool:
    return any(k == kind and s == step and (r is None or r == rank) for k, s, r in parse())


def has(kind: str) -> bool:
    return active() and any(k == kind for k, _, _ in parse())


def loss_fault(loss, step: int, rank: int):
    """The loss, or NaN when a nan_loss fault names this step and rank."""
    if active() and _match("nan_loss", step, rank):
        return loss * float("nan")
    return loss


def signal_fault(step: int, rank: int) -> None:
    if not active():
        return
    if _match("sigterm", step, rank):
        os.kill(os.getpid(), signal.SIGTERM)
    if _match("kill", step, rank):
        os.kill(os.getpid(), signal.SIGKILL)


def checkpoint_write_fault(path, data: bytes) -> None:
    """Called by the atomic writer after half of the bytes are written to the temporary file."""
    global _ckpt_writes
    if not active():
        return
    _ckpt_writes += 1
    if any(k == "ckpt_fail" and s == _ckpt_writes for k, s, _ in parse()):
        raise OSError(f"injected fault: checkpoint write {_ckpt_writes} to {path} failed half-way")
