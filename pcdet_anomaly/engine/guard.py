"""The learning guard: notices when a run is not learning and says so loudly.

Checks: loss exactly zero; loss flat over FLAT_WINDOW evaluations, or weights that did not move in an epoch
(relative change below MIN_UPDATE_RATIO: LR 0, everything frozen); predicted scores with near-zero spread;
validation AUROC at chance (in CHANCE_PATIENCE validations in a row, or in the run's last one: a single
transient dip early in training is not a failure); non-finite losses (the step is skipped, and after MAX_NONFINITE_STEPS in a row the run
stops with advice). Warnings are logged with a banner and kept in `events` (written to guard.json for the monitor).
"""
from __future__ import annotations

import logging
import math

__all__ = ["LearningGuard", "GuardStop"]

NONFINITE_ADVICE = ("lower OPTIMIZATION.LR, enable or lower OPTIMIZATION.GRAD_CLIP, disable --amp, and check the "
                    "input data for NaN/inf (tools/check_dataset.py)")


class GuardStop(RuntimeError):
    pass


class LearningGuard:
    def __init__(self, guard_cfg, logger: logging.Logger | None = None):
        self.cfg = guard_cfg
        self.logger = logger or logging.getLogger("pcdet_anomaly")
        self.events: list[dict] = []
        self.eval_losses: list[float] = []
        self.nonfinite_in_row = 0
        self.nonfinite_total = 0
        self.chance_in_row = 0

    def _raise(self, kind: str, message: str, epoch: int, fatal: bool = False) -> None:
        self.events.append({"kind": kind, "epoch": epoch, "message": message})
        bar = "!" * 100
        self.logger.warning("\n%s\nLEARNING GUARD [%s] epoch %d: %s\n%s", bar, kind, epoch, message, bar)
        if fatal or (self.cfg.STOP_ON_FAILURE and self.cfg.ENABLED):
            raise GuardStop(f"learning guard [{kind}]: {message}")

    def note(self, kind: str, message: str, epoch: int) -> None:
        """A warning that is not a learning failure (e.g. no anomaly in the training split): logged with the banner
        and kept in guard.json, never a stop."""
        if any(e["kind"] == kind for e in self.events):
            return
        self.events.append({"kind": kind, "epoch": epoch, "message": message})
        bar = "!" * 100
        self.logger.warning("\n%s\nLEARNING GUARD [%s]: %s\n%s", bar, kind, message, bar)

    def check_step_loss(self, loss_value: float, epoch: int, where: str = "") -> bool:
        """Returns False when the step must be skipped (non-finite loss). The trainer calls it with the same value on
        every rank (a NaN on any rank skips the step everywhere), so the counters agree across ranks."""
        if not math.isfinite(loss_value):
            self.nonfinite_in_row += 1
            self.nonfinite_total += 1
            self.logger.warning("non-finite loss%s: step skipped on every rank (%d in a row, %d in total)", where,
                                self.nonfinite_in_row, self.nonfinite_total)
            if self.nonfinite_in_row >= self.cfg.MAX_NONFINITE_STEPS:
                self._raise("nonfinite_loss", f"{self.nonfinite_in_row} non-finite losses in a row; "
                            f"{NONFINITE_ADVICE}", epoch, fatal=True)
            return False
        self.nonfinite_in_row = 0
        return True

    def check_epoch(self, epoch: int, mean_loss: float, score_std: float | None = None,
                    val_auroc: float | None = None, update_ratio: float | None = None, last: bool = False) -> None:
        """`last`: the run's final epoch (a validation at chance there is reported whatever CHANCE_PATIENCE says)."""
        if not self.cfg.ENABLED:
            return
        if update_ratio is not None and update_ratio < self.cfg.MIN_UPDATE_RATIO:
            # the loss of such a run only moves with the data's randomness (augmentation, order): a loss-spread test
            # alone can miss it, the weights cannot
            self._raise("flat_loss", f"the weights moved by {update_ratio:.1e} (relative) in epoch {epoch}: nothing "
                        f"is learned, whatever the loss does (learning rate 0? every parameter frozen? gradients "
                        f"zero?)", epoch)
        if mean_loss == 0.0:
            self._raise("zero_loss", "the training loss is exactly 0.0: targets are probably missing or constant "
                        "(a loss that cannot be lowered further teaches nothing)", epoch)
        self.eval_losses.append(mean_loss)
        window = self.cfg.FLAT_WINDOW
        if len(self.eval_losses) > window:
            recent = self.eval_losses[-(window + 1):]
            spread = (max(recent) - min(recent)) / max(abs(recent[0]), 1e-12)
            if spread < self.cfg.FLAT_REL_TOL:
                self._raise("flat_loss", f"the loss changed by {spread:.2e} (relative) over the last {window} "
                            f"evaluations: the model is not learning (learning rate, frozen parameters, labels?)",
                            epoch)
        if score_std is not None and score_std < self.cfg.MIN_SCORE_STD:
            self._raise("constant_scores", f"predicted anomaly scores have std {score_std:.2e}: every voxel gets "
                        f"the same score", epoch)
        if val_auroc is not None and math.isfinite(val_auroc):
            at_chance = abs(val_auroc - 0.5) < self.cfg.CHANCE_TOL
            self.chance_in_row = self.chance_in_row + 1 if at_chance else 0
            patience = max(1, int(self.cfg.get("CHANCE_PATIENCE", 1)))
            if at_chance and (self.chance_in_row >= patience or last):
                self._raise("chance_auroc", f"validation AUROC {val_auroc:.4f} is at chance (0.5 +- "
                            f"{self.cfg.CHANCE_TOL}) in {self.chance_in_row} validation(s) in a row", epoch)

    def state(self) -> dict:
        return {"events": self.events, "eval_losses": self.eval_losses, "nonfinite_total": self.nonfinite_total,
                "chance_in_row": self.chance_in_row}

    def load_state(self, state: dict) -> None:
        self.events = list(state.get("events", []))
        self.eval_losses = list(state.get("eval_losses", []))
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.chance_in_row = int(state.get("chance_in_row", 0))
