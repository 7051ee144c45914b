"""The training engine: epochs of optimizer steps, then validation, checkpoints, early stopping, plots.

Files in the run folder (rank 0 writes, other ranks only log warnings):
  config.yaml  log_train.txt  tensorboard/  ckpt/{latest,best,checkpoint_epoch_N}.pth
  train_log.jsonl (every LOG_EVERY steps)  val_history.json  guard.json  run_state.json  plots/*.png
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import save_config
from ..datasets import batch_to_device, build_dataloader
from ..evaluation import format_table, write_reports
from ..models import build_network
from ..utils.visualization import save_frame_heatmap, save_training_curves
from .checkpoint import (find_resume_checkpoint, inference_state, load_checkpoint, load_model_weights, rng_state,
                         rotate_checkpoints, save_checkpoint, set_rng_state, unwrap)
from . import faults
from .ema import ModelEMA
from .guard import GuardStop, LearningGuard
from .optim import build_optimizer, build_scheduler
from .validate import merge_score_stats, run_inference

__all__ = ["Trainer", "OOM_ADVICE", "Preempted", "PREEMPT_EXIT_CODE"]

PREEMPT_EXIT_CODE = 75      # EX_TEMPFAIL: "try again"; tools/slurm_train.sh requeues on it


class Preempted(RuntimeError):
    """SIGTERM / SIGUSR1 arrived: a checkpoint was written at the step boundary; relaunch to resume."""

OOM_ADVICE = ("out of GPU memory at batch size {bs} with about {pts} points per frame. Remedies: a smaller "
              "--batch_size with OPTIMIZATION.ACCUM_STEPS to keep the effective batch, DATA_CONFIG.MAX_POINTS to "
              "subsample points, a coarser DATA_CONFIG.VOXELIZE.GRID_SIZE or a smaller MODEL.BACKBONE_3D.INIT_SIZE, "
              "smaller DATA_CONFIG.IMAGE.SIZE, or --amp.")


def _json_dump(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    tmp.replace(path)


class Trainer:
    def __init__(self, cfg, output_dir: Path, logger: logging.Logger, device: torch.device, rank: int = 0,
                 world_size: int = 1, distributed: bool = False, workers: int | None = None, amp: bool = False,
                 sync_bn: bool = False, max_ckpt_save_num: int | None = None, progress: bool = True):
        self.cfg, self.logger, self.device = cfg, logger, device
        self.rank, self.world_size, self.distributed = rank, world_size, distributed
        self.is_main = rank == 0
        self.output_dir = Path(output_dir)
        self.ckpt_dir = self.output_dir / "ckpt"
        self.plot_dir = self.output_dir / "plots"
        self.progress = progress and self.is_main
        opt = cfg.OPTIMIZATION
        self.workers = cfg.TRAIN.NUM_WORKERS if workers is None else workers
        self.max_ckpt = cfg.TRAIN.MAX_CKPT_SAVE_NUM if max_ckpt_save_num is None else max_ckpt_save_num
        if self.is_main:
            for d in (self.ckpt_dir, self.plot_dir):
                d.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.output_dir / "config.yaml")

        seed = cfg.TRAIN.SEED
        self.train_set, self.train_loader, self.train_sampler = build_dataloader(
            cfg.DATA_CONFIG, "train", opt.BATCH_SIZE_PER_GPU, True, self.workers, distributed, seed, logger)
        self.val_set, self.val_loader, _ = build_dataloader(cfg.DATA_CONFIG, "val", opt.BATCH_SIZE_PER_GPU, False,
                                                            self.workers, distributed, seed, logger)
        if len(self.train_set) == 0:
            raise RuntimeError(f"the train split of {self.train_set.root_path} is empty (DATA_CONFIG.SPLIT)")
        if cfg.MODEL.REGIME == "supervised" and all(self.train_set.meta[n]["normality"] is True
                                                   for n in self.train_set.scenarios):   # None: not known
            self._startup_warnings = [("no_anomaly_in_train", "supervised regime but no training scenario contains an "
                                       "anomaly: the anomaly head has no positive targets (use MODEL.REGIME "
                                       "normality for normality-only training)")]
            logger.warning("%s", self._startup_warnings[0][1])

        model = build_network(cfg.MODEL, cfg.DATA_CONFIG).to(device)
        if sync_bn:
            if device.type == "cuda" and distributed:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                logger.warning("--sync_bn needs CUDA and torchrun; ignored here")
        self.model = model
        self.ema = ModelEMA(model, opt.EMA.DECAY) if opt.EMA.ENABLED else None
        if distributed:
            self.model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
        self.optimizer = build_optimizer(unwrap(self.model), opt)
        self.accum = max(1, opt.ACCUM_STEPS)
        steps_per_epoch = math.ceil(len(self.train_loader) / self.accum)
        self.scheduler = build_scheduler(self.optimizer, opt, steps_per_epoch)
        self.amp = bool(amp or opt.AMP)
        if self.amp and device.type != "cuda":
            logger.warning("mixed precision requested on CPU: spconv's CPU kernels have no bfloat16 path, so this "
                           "run stays in float32 (AMP applies on CUDA: float16 with a gradient scaler)")
            self.amp = False
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        if faults.has("cpu_scaler") and device.type == "cpu":
            self.scaler = torch.amp.GradScaler("cpu", enabled=True)      # test hook: AMP's scaler path on a CPU
        self.guard = LearningGuard(opt.GUARD, logger)
        for kind, message in getattr(self, "_startup_warnings", []):
            self.guard.note(kind, message, 0)
        self.epoch, self.global_step = 0, 0
        self.batch_in_epoch = 0          # micro-batches of the current epoch already trained (mid-epoch resume)
        self.bad_frames_total = 0        # frames dropped under BAD_FRAME_POLICY skip, over workers and ranks
        self.skipped_steps = 0           # micro-batches skipped on every rank together (non-finite loss, no frame)
        self._window_has_grads = False
        self._preempt_signal = None
        self.best_metric, self.best_epoch, self.bad_epochs = -math.inf, -1, 0
        self.val_history: list[dict] = []
        self.status = "initialised"
        self.writer = None
        n_params = {k: v for k, v in unwrap(self.model).parameter_counts().items()}
        logger.info("model parameters per stage (total, trainable): %s", n_params)
        logger.info("train %d frames, val %d frames, %d steps/epoch, device %s, world size %d",
                    len(self.train_set), len(self.val_set), steps_per_epoch, device, world_size)

    # ------------------------------------------------------------------ resume
    def resume(self, ckpt: str | None = None, pretrained: str | None = None) -> None:
        if pretrained:
            load_model_weights(self.model, inference_state(load_checkpoint(pretrained)), self.logger)
            if self.ema is not None:
                self.ema.reset_to(self.model)
        if ckpt:
            path, state = Path(ckpt), load_checkpoint(ckpt)
        else:
            path, state = find_resume_checkpoint(self.ckpt_dir)
            if path is None:
                return
        load_model_weights(self.model, state, self.logger, strict=True)
        if self.ema is not None:
            if state.get("ema_state"):
                self.ema.load_state_dict(state["ema_state"], state.get("extra", {}).get("ema_updates", 0))
            else:
                self.logger.warning("%s holds no weight average (written without OPTIMIZATION.EMA): the average "
                                    "starts again from its weights", path)
                self.ema.reset_to(self.model)
        if state.get("optimizer_state"):
            self.optimizer.load_state_dict(state["optimizer_state"])
        if state.get("scheduler_state"):
            self.scheduler.load_state_dict(state["scheduler_state"])
        if state.get("scaler_state") and self.amp:
            self.scaler.load_state_dict(state["scaler_state"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        extra = state.get("extra", {})
        self.best_metric = extra.get("best_metric", -math.inf)
        self.best_epoch = extra.get("best_epoch", -1)
        self.bad_epochs = extra.get("bad_epochs", 0)
        self.val_history = list(extra.get("val_history", []))
        self.guard.load_state(extra.get("guard", {}))
        self.batch_in_epoch = int(extra.get("batch_in_epoch", 0))
        self.bad_frames_total = int(extra.get("bad_frames_total", 0))
        self.skipped_steps = int(extra.get("skipped_steps", 0))
        rank_states = extra.get("rank_rng_states")
        set_rng_state(rank_states[self.rank] if rank_states and self.rank < len(rank_states) else state["rng_state"])
        self._truncate_step_log()
        self.logger.info("resumed from %s: epoch %d%s, step %d, best %s %.4f", path, self.epoch,
                         f" (+{self.batch_in_epoch} batches)" if self.batch_in_epoch else "", self.global_step,
                         self.cfg.TRAIN.BEST_METRIC, self.best_metric)

    def _truncate_step_log(self) -> None:
        """Steps after the checkpoint were logged by the run that died; they are trained again now, so their lines
        go (and TensorBoard purges them: the writer opens with purge_step)."""
        path = self.output_dir / "train_log.jsonl"
        if not self.is_main or not path.is_file():
            return
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        keep = [ln for ln in lines if json.loads(ln).get("step", 0) <= self.global_step]
        if len(keep) != len(lines):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(ln + "\n" for ln in keep))
            tmp.replace(path)
            self.logger.info("resume: dropped %d step-log lines after step %d (trained again now)",
                             len(lines) - len(keep), self.global_step)

    def _open_writer(self) -> None:
        if self.is_main and self.writer is None:
            from tensorboardX import SummaryWriter
            # purge_step drops events the interrupted run wrote after the checkpoint (no duplicated curves)
            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"),
                                        purge_step=self.global_step + 1 if self.global_step else None)

    # ------------------------------------------------------------------ training
    def _all_ranks(self, value: float, op: str) -> float:
        """A number reduced over ranks (min / max / sum); the value itself without torchrun."""
        if not self.distributed:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        reduce_op = {"min": torch.distributed.ReduceOp.MIN, "max": torch.distributed.ReduceOp.MAX,
                     "sum": torch.distributed.ReduceOp.SUM}[op]
        torch.distributed.all_reduce(tensor, op=reduce_op)
        return float(tensor.item())

    def _step(self, batch) -> tuple[float, dict, bool]:
        """Forward, then backward unless some rank cannot: every rank learns whether all ranks have a finite loss
        (and a frame at all) before anyone calls backward, so one rank's NaN never leaves the others waiting in the
        gradient all-reduce. -> (loss, tensorboard scalars, skipped)."""
        have = batch["batch_size"] > 0
        value, tb, loss, out = math.nan, {}, None, None
        if have:
            batch = batch_to_device(batch, self.device)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                out = self.model(batch)
                loss, tb = unwrap(self.model).get_loss(out)
            loss = faults.loss_fault(loss, self.global_step, self.rank)
            value = float(loss.detach())
        ok = self._all_ranks(1.0 if have and math.isfinite(value) else 0.0, "min") > 0
        if not ok:
            any_nonfinite = self._all_ranks(1.0 if have and not math.isfinite(value) else 0.0, "max") > 0
            self.skipped_steps += 1
            if any_nonfinite:      # the same decision, and so the same guard counters, on every rank
                self.guard.check_step_loss(math.nan, self.epoch,
                                           where="" if have and not math.isfinite(value) else " on another rank")
            return value, tb, True
        self.guard.check_step_loss(value, self.epoch)
        self.scaler.scale(loss / self.accum).backward()
        self._window_has_grads = True
        tb["score_std"] = float(out["voxel_scores"].detach().float().std()) if len(out["voxel_scores"]) > 1 else 0.0
        return value, tb, False

    def _optimizer_step(self) -> float:
        grad_norm = 0.0
        clip = self.cfg.OPTIMIZATION.GRAD_CLIP
        if self._window_has_grads:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in unwrap(self.model).parameters() if p.requires_grad]
            if clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(self.model)
        # else: every micro-batch of this window was skipped on every rank: no gradients, so no optimizer or scaler
        # step (an enabled GradScaler refuses to step without recorded inf checks); the schedule still advances
        self.optimizer.zero_grad(set_to_none=True)
        self._window_has_grads = False
        self.scheduler.step()
        self.global_step += 1
        return grad_norm

    # ------------------------------------------------------------------ preemption
    def _install_signal_handlers(self):
        import signal
        import threading
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, _frame):
            self._preempt_signal = signum
            self.logger.warning("received %s: a checkpoint will be written at the next step boundary, then the run "
                                "exits with code %d (relaunch to resume)", signal.Signals(signum).name,
                                PREEMPT_EXIT_CODE)
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            previous[sig] = signal.signal(sig, handler)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous):
        import signal
        for sig, h in previous.items():
            signal.signal(sig, h)

    def _preempt_now(self, batch_in_epoch: int) -> None:
        """At a step boundary: if any rank was signalled, every rank stops together after a checkpoint."""
        if self._all_ranks(1.0 if self._preempt_signal is not None else 0.0, "max") == 0:
            return
        self.batch_in_epoch = batch_in_epoch
        self._checkpoint("latest.pth", self._gather_rng_states())
        self.status = "preempted"
        self._write_state()
        raise Preempted(f"preempted at epoch {self.epoch}, step {self.global_step} (batch {batch_in_epoch} of the "
                        f"epoch): checkpoint {self.ckpt_dir / 'latest.pth'} written; relaunch the same command to "
                        f"resume")

    def train_one_epoch(self) -> dict:
        self.model.train()
        self.train_set.set_epoch(self.epoch)
        self.train_sampler.set_epoch(self.epoch)
        first = self.batch_in_epoch
        if first:      # resumed in the middle of this epoch: the sampler skips what was trained before
            self.train_sampler.set_start(first * self.cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU)
        losses, score_stds = [], []
        trainable = [p for p in unwrap(self.model).parameters() if p.requires_grad]
        start_params = torch.cat([p.detach().flatten().double() for p in trainable]) if trainable else None
        total = len(self.train_loader) + first
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.cfg.OPTIMIZATION.NUM_EPOCHS}",
                   unit="batch", disable=not self.progress, dynamic_ncols=True, initial=first, total=total)
        start = time.time()
        log_path = self.output_dir / "train_log.jsonl"
        bad_frames = 0
        for i, batch in enumerate(bar, start=first):
            faults.signal_fault(self.global_step, self.rank)
            bad = batch.get("bad_frames", [])
            if bad:
                bad_frames += len(bad)
                for b in bad:
                    self.logger.warning("bad frame dropped from training: %s", b["error"])
            try:
                value, tb, skipped = self._step(batch)
            except torch.OutOfMemoryError as err:
                pts = len(batch["points"]) // max(batch["batch_size"], 1)
                raise SystemExit(f"{err}\n" + OOM_ADVICE.format(bs=batch["batch_size"], pts=pts)) from err
            if not skipped:
                losses.append(value)
                score_stds.append(tb.get("score_std", 0.0))
            grad_norm = None
            if (i + 1) % self.accum == 0 or i + 1 == total:
                grad_norm = self._optimizer_step()
            lr = self.optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
            if self.is_main and grad_norm is not None and not skipped and (
                    self.global_step % self.cfg.TRAIN.LOG_EVERY == 0 or i + 1 == total):
                record = {"epoch": self.epoch + 1, "step": self.global_step, "loss": value, "lr": lr,
                          "grad_norm": grad_norm, "time": time.time(), **{k: v for k, v in tb.items() if k != "loss"}}
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                for key, v in record.items():
                    if key not in ("epoch", "step", "time"):
                        self.writer.add_scalar(f"train/{key}", v, self.global_step)
            if grad_norm is not None:        # a step boundary: a signalled run checkpoints and stops here
                self._preempt_now(i + 1)
        self.batch_in_epoch = 0
        # the epoch's loss is the mean over every rank's steps; dropped frames are counted over every rank
        total_loss = self._all_ranks(float(np.sum(losses)) if losses else 0.0, "sum")
        count = self._all_ranks(float(len(losses)), "sum")
        bad_frames = int(self._all_ranks(float(bad_frames), "sum"))
        self.bad_frames_total += bad_frames
        if bad_frames:
            self.logger.warning("epoch %d: %d bad frame(s) dropped from training (%d in the run)", self.epoch + 1,
                                bad_frames, self.bad_frames_total)
        mean_loss = total_loss / count if count else math.nan
        update_ratio = None
        if start_params is not None:     # how far the weights moved this epoch (0 with LR 0 or frozen parameters)
            now = torch.cat([p.detach().flatten().double() for p in trainable])
            update_ratio = float((now - start_params).norm() / start_params.norm().clamp_min(1e-12))
        return {"loss": mean_loss, "score_std": float(np.mean(score_stds)) if score_stds else 0.0,
                "seconds": time.time() - start, "bad_frames": bad_frames, "update_ratio": update_ratio}

    # ------------------------------------------------------------------ validation and bookkeeping
    def validate(self, epoch_stats: dict) -> dict | None:
        """Every rank infers its shard of the validation split; rank 0 merges the exact per-voxel pools (the numbers
        equal a single-process evaluation) and returns the record; other ranks return None."""
        cfg = self.cfg
        max_frames = cfg.TRAIN.MAX_EVAL_FRAMES
        if max_frames > 0 and self.distributed:
            max_frames = math.ceil(max_frames / self.world_size)
        evaluator, vis, score_stats = run_inference(self.eval_model(), self.val_loader, self.val_set,
                                                    cfg.DATA_CONFIG, self.device, max_frames=max_frames,
                                                    progress=self.progress, desc=f"val {self.epoch}",
                                                    tta=bool(cfg.DATA_CONFIG.TEST_AUGMENTATION.ENABLED
                                                             and cfg.DATA_CONFIG.TEST_AUGMENTATION.VALIDATION))
        if self.distributed:
            gathered = [None] * self.world_size
            torch.distributed.all_gather_object(gathered, (evaluator.state(), score_stats))
            if not self.is_main:
                return None
            for state, _ in gathered[1:]:
                evaluator.merge_state(state)
            score_stats = merge_score_stats([stats for _, stats in gathered])
        for b in score_stats.get("bad_frames", []):
            self.logger.warning("bad frame dropped from validation (not scored): %s", b["error"])
        summary = evaluator.summary()
        summary["bad_frames"] = [b["bad_frame"] for b in score_stats.get("bad_frames", [])]
        pooled = summary["pooled"].get("all", {})
        record = {"epoch": self.epoch, "step": self.global_step, "train_loss": epoch_stats["loss"],
                  "auroc": pooled.get("auroc", math.nan), "ap": pooled.get("ap", math.nan),
                  "auprc": pooled.get("ap", math.nan), "fpr95": pooled.get("fpr95", math.nan),
                  "scene_mean_auroc": summary["scene_mean"]["auroc"], "scene_mean_ap": summary["scene_mean"]["ap"],
                  "val_score_std": score_stats["voxel_score_std"], "epoch_seconds": epoch_stats["seconds"],
                  "policy": summary["policy"]}
        other = "intersect" if summary["policy"] == "zero" else "zero"
        if other in summary["policies"]:        # the voxel protocol reports both policies; the point protocol one
            other_pooled = summary["policies"][other]["pooled"].get("all", {})
            record[f"auroc_{other}"] = other_pooled.get("auroc", math.nan)
            record[f"ap_{other}"] = other_pooled.get("ap", math.nan)
        cov = summary["coverage"]
        record["gt_fraction_predicted"] = cov["gt_fraction_predicted"]
        record["anomaly_fraction_predicted"] = cov["anomaly_fraction_predicted"]
        record["val_bad_frames"] = len(summary["bad_frames"])
        record["train_bad_frames"] = epoch_stats.get("bad_frames", 0)
        self.logger.info("validation after epoch %d:\n%s", self.epoch, format_table(summary))
        write_reports(summary, self.output_dir / "eval" / f"epoch_{self.epoch}", "metrics")
        for key in ("auroc", "ap", "fpr95", "scene_mean_auroc", "scene_mean_ap", "val_score_std"):
            if isinstance(record[key], float) and math.isfinite(record[key]):
                self.writer.add_scalar(f"val/{key}", record[key], self.epoch)
        if vis is not None and self.epoch % max(1, cfg.TRAIN.HEATMAP_EVERY) == 0:
            self.save_heatmap(vis)
        return record

    def eval_model(self):
        """What validation scores: the weight average with OPTIMIZATION.EMA, else the live model."""
        return self.ema.module if self.ema is not None else unwrap(self.model)

    def save_heatmap(self, vis: dict) -> None:
        import cuda_ops
        reader = self.val_set.readers[vis["scene"]]
        rgb = uv = uv_scores = None
        if self.cfg.DATA_CONFIG.IMAGE.ENABLED:          # LiDAR-only data (STU without images): bird's-eye view only
            rgb = reader.read_rgb(vis["frame"])
            cal = reader.calibration
            uv, _, valid = cuda_ops.project_to_image(torch.from_numpy(vis["xyz"]), torch.from_numpy(cal.intrinsics),
                                                     torch.from_numpy(cal.lidar_to_cam), cal.image_hw)
            uv, uv_scores = uv[valid].numpy(), vis["scores"][valid.numpy()]
        path = self.plot_dir / f"heatmap_epoch_{self.epoch}.png"
        save_frame_heatmap(path, vis["xyz"], vis["scores"], vis["labels"], rgb, uv, uv_scores,
                           title=f"{vis['scene'][:17]} frame {vis['frame']} - epoch {self.epoch}")

    def _metric_value(self, record: dict, key: str) -> float:
        value = record.get(key, math.nan)
        return -value if key == "fpr95" else value      # higher is better everywhere else

    def _gather_rng_states(self) -> list | None:
        """Every rank's RNG state (collective: all ranks call it), so a resumed run restores each rank's own."""
        if not self.distributed:
            return None
        gathered = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, rng_state())
        return gathered

    def _checkpoint(self, name: str, rank_rng_states: list | None = None) -> None:
        if not self.is_main:
            return
        extra = {"best_metric": self.best_metric, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                 "val_history": self.val_history, "guard": self.guard.state(), "batch_in_epoch": self.batch_in_epoch,
                 "bad_frames_total": self.bad_frames_total, "skipped_steps": self.skipped_steps}
        if rank_rng_states is not None:
            extra["rank_rng_states"] = rank_rng_states
        if self.ema is not None:
            extra["ema_updates"] = self.ema.updates
        save_checkpoint(self.ckpt_dir / name, self.model, self.optimizer, self.scheduler,
                        self.scaler if self.amp else None, self.epoch, self.global_step, self.cfg, extra,
                        ema_state=self.ema.state_dict() if self.ema is not None else None)

    def _write_state(self, eta_s: float | None = None) -> None:
        if not self.is_main:
            return
        es = self.cfg.OPTIMIZATION.EARLY_STOP
        _json_dump(self.output_dir / "run_state.json", {
            "status": self.status, "epoch": self.epoch, "num_epochs": self.cfg.OPTIMIZATION.NUM_EPOCHS,
            "global_step": self.global_step, "best_metric_name": self.cfg.TRAIN.BEST_METRIC,
            "best_metric": self.best_metric, "best_epoch": self.best_epoch,
            "early_stop": {"enabled": es.ENABLED, "metric": es.METRIC, "bad_epochs": self.bad_epochs,
                           "patience": es.PATIENCE}, "eta_seconds": eta_s, "updated": time.time(),
            "bad_frames_total": self.bad_frames_total, "skipped_steps": self.skipped_steps,
            "world_size": self.world_size})
        _json_dump(self.output_dir / "val_history.json", self.val_history)
        _json_dump(self.output_dir / "guard.json", {**self.guard.state(), "bad_frames_total": self.bad_frames_total,
                                                   "skipped_steps": self.skipped_steps})

    def train(self, stop_after_epoch: int | None = None) -> dict:
        cfg, opt = self.cfg, self.cfg.OPTIMIZATION
        es = opt.EARLY_STOP
        self.status = "running"
        total_start = time.time()
        start_epoch = self.epoch
        self._open_writer()
        handlers = self._install_signal_handlers()
        try:
            if cfg.TRAIN.EVAL_BEFORE_TRAINING and self.epoch == 0 and not self.val_history and not self.global_step:
                record = self.validate({"loss": math.nan, "seconds": 0.0})
                if self.is_main:
                    self.val_history.append(record)
            while self.epoch < opt.NUM_EPOCHS:
                stats = self.train_one_epoch()
                self.epoch += 1
                record = None
                if self.epoch % max(1, cfg.TRAIN.EVAL_EVERY) == 0 or self.epoch == opt.NUM_EPOCHS:
                    record = self.validate(stats)       # every rank infers its shard; rank 0 gets the record
                if self.is_main and record is not None:
                    self.val_history.append(record)
                    value = self._metric_value(record, cfg.TRAIN.BEST_METRIC)
                    if math.isfinite(value) and value > self.best_metric:
                        self.best_metric, self.best_epoch = value, self.epoch
                        self._checkpoint("best.pth")
                        self.logger.info("new best %s %.4f at epoch %d", cfg.TRAIN.BEST_METRIC, abs(value),
                                         self.epoch)
                    es_value = self._metric_value(record, es.METRIC)
                    best_es = max((self._metric_value(r, es.METRIC) for r in self.val_history[:-1]),
                                  default=-math.inf)
                    if es.ENABLED and self.epoch >= es.START_EPOCH:
                        self.bad_epochs = 0 if es_value > best_es + es.MIN_DELTA else self.bad_epochs + 1
                rng_states = self._gather_rng_states()
                if self.is_main:
                    self._checkpoint(f"checkpoint_epoch_{self.epoch}.pth", rng_states)
                    self._checkpoint("latest.pth", rng_states)
                    rotate_checkpoints(self.ckpt_dir, self.max_ckpt)
                    save_training_curves(self.plot_dir / "curves.png", self._read_step_log(), self.val_history,
                                         title=f"{cfg.CFG_TAG}")
                    elapsed = time.time() - total_start
                    done = self.epoch - start_epoch
                    eta = elapsed / max(done, 1) * (opt.NUM_EPOCHS - self.epoch)
                    self.logger.info("epoch %d/%d: train loss %.4f (mean over %d rank(s)), %.0f s; ETA %.0f s",
                                     self.epoch, opt.NUM_EPOCHS, stats["loss"], self.world_size, stats["seconds"], eta)
                    self._write_state(eta)
                    try:
                        self.guard.check_epoch(self.epoch, stats["loss"], record["val_score_std"] if record else
                                               stats["score_std"], record["auroc"] if record else None,
                                               update_ratio=stats.get("update_ratio"),
                                               last=self.epoch == opt.NUM_EPOCHS)
                    except GuardStop:
                        self._sync_flag(2)
                        raise
                    self._write_state(eta)
                stop = self._sync_flag(1 if es.ENABLED and self.bad_epochs >= es.PATIENCE else 0)
                if stop == 2:
                    raise GuardStop("rank 0 stopped the run (learning guard)")
                if stop == 1:
                    self.logger.info("early stopping: %s did not improve by %.4g for %d evaluations (best %.4f at "
                                     "epoch %d)", es.METRIC, es.MIN_DELTA, self.bad_epochs, self.best_metric,
                                     self.best_epoch)
                    self.status = "stopped_early"
                    break
                if stop_after_epoch is not None and self.epoch >= stop_after_epoch:
                    self.status = "interrupted"
                    break
            else:
                self.status = "finished"
        except GuardStop as err:
            self.status = "guard_stop"
            self.logger.error("%s", err)
            self._write_state()
            raise
        except Preempted as err:
            self.status = "preempted"
            self.logger.warning("%s", err)
            raise
        finally:
            self._restore_signal_handlers(handlers)
            self._write_state()
            if self.writer is not None:
                self.writer.flush()
        return {"status": self.status, "best_metric": self.best_metric, "best_epoch": self.best_epoch,
                "val_history": self.val_history, "seconds": time.time() - total_start}

    def _sync_flag(self, flag: int) -> int:
        """Rank 0's decision (0 go on, 1 early stop, 2 guard stop) reaches every rank."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([flag if self.is_main else 0], device=self.device)
        torch.distributed.broadcast(tensor, src=0)
        return int(tensor.item())

    def _read_step_log(self) -> list[dict]:
        path = self.output_dir / "train_log.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
