"""Checkpoints: one file with everything needed to resume; written atomically; loaded with weights_only=True."""
from __future__ import annotations

import io
import logging
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..config import _to_plain
from . import faults

__all__ = ["CheckpointError", "rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint",
           "find_resume_checkpoint", "rotate_checkpoints", "unwrap", "inference_state"]

logger = logging.getLogger("pcdet_anomaly")


class CheckpointError(RuntimeError):
    pass


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
             "numpy_pos": int(np_state[2]), "python": repr(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    import ast
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    py = ast.literal_eval(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if state.get("cuda") and torch.cuda.is_available():
        cuda_states = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states + [cuda_states[-1]] * (torch.cuda.device_count() - len(cuda_states)))


def save_checkpoint(path: Path, model, optimizer=None, scheduler=None, scaler=None, epoch: int = 0,
                    global_step: int = 0, cfg=None, extra: dict | None = None, ema_state: dict | None = None) -> Path:
    state = {
        "model_state": unwrap(model).state_dict(),
        "ema_state": ema_state,
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "scaler_state": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch), "global_step": int(global_step), "rng_state": rng_state(),
        "config": _to_plain(cfg) if cfg is not None else None, "version": __version__,
        "extra": extra or {},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, buffer.getvalue())
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename: a write that fails half-way (full disk, kill, injected fault) leaves the previous
    file as it was and no half file behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            faults.checkpoint_write_fault(path, data)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {str(err)[:200]}); it may "
                              f"be truncated by an interrupted write or a full disk") from err
    if not isinstance(state, dict) or "model_state" not in state:
        raise CheckpointError(f"{path}: not a pcdet_anomaly checkpoint (no model_state)")
    return state


def inference_state(state: dict) -> dict:
    """The weights to predict with: the moving average (`ema_state`) when the run kept one (OPTIMIZATION.EMA), else
    the trained weights. Resuming training always reads `model_state`."""
    if state.get("ema_state"):
        return {"model_state": state["ema_state"]}
    return state


def load_model_weights(model, state: dict, logger_=None, strict: bool = False) -> None:
    """Load model_state, logging every weight that did not load (never silently partial)."""
    log = logger_ or logger
    own = unwrap(model).state_dict()
    incoming = state["model_state"] if "model_state" in state else state
    mismatched = [k for k, v in incoming.items() if k in own and own[k].shape != v.shape]
    usable = {k: v for k, v in incoming.items() if k in own and own[k].shape == v.shape}
    missing, unexpected = unwrap(model).load_state_dict(usable, strict=False)
    for key in missing:
        log.warning("weight not loaded (absent from checkpoint): %s", key)
    for key in unexpected:
        log.warning("checkpoint weight unused: %s", key)
    for key in mismatched:
        log.warning("weight not loaded (shape %s in checkpoint, %s in model): %s", tuple(incoming[key].shape),
                    tuple(own[key].shape), key)
    if strict and (missing or mismatched):
        raise CheckpointError(f"{len(missing) + len(mismatched)} weights did not load")
    log.info("loaded %d / %d weights", len(usable), len(own))


_EPOCH_RE = re.compile(r"checkpoint_epoch_(\d+)\.pth$")


def rotate_checkpoints(ckpt_dir: Path, keep: int) -> None:
    files = sorted(Path(ckpt_dir).glob("checkpoint_epoch_*.pth"), key=lambda p: int(_EPOCH_RE.search(p.name)[1]))
    for old in files[:-keep] if keep > 0 else []:
        os.remove(old)


def find_resume_checkpoint(ckpt_dir: Path):
    """Newest readable checkpoint: latest.pth, then epoch checkpoints newest first. -> (path, state) or (None,
    None). Unreadable ones are reported and skipped."""
    ckpt_dir = Path(ckpt_dir)
    candidates = sorted(ckpt_dir.glob("checkpoint_epoch_*.pth"), key=lambda p: -int(_EPOCH_RE.search(p.name)[1]))
    if (ckpt_dir / "latest.pth").is_file():
        candidates.insert(0, ckpt_dir / "latest.pth")
    best = None
    for path in candidates:
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            logger.warning("auto-resume: skipping %s", err)
            continue
        if best is None or state["global_step"] > best[1]["global_step"]:
            best = (path, state)
    return best if best else (None, None)
