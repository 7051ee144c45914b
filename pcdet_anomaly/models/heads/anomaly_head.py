"""Voxel anomaly head: an anomaly logit per voxel (supervised regime) and/or semantic logits over the normal classes
(normality regime: the anomaly score comes from them)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .losses import (balanced_pos_weight, binary_focal_loss, hard_negative_mask, lovasz_hinge, lovasz_softmax,
                     negative_class_weights)

__all__ = ["VoxelAnomalyHead"]


def energy_of(logits: torch.Tensor) -> torch.Tensor:
    """Free energy -logsumexp over the classes (higher = less like any known class)."""
    return -torch.logsumexp(logits, 1)


def _mlp(c_in, c_out, hidden=64):
    return nn.Sequential(nn.Linear(c_in, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, c_out))


class VoxelAnomalyHead(nn.Module):
    def __init__(self, model_cfg, loss_cfg, regime: str, in_channels: int, ignore_index: int = 255,
                 semantic_channels: int | None = None, stream_channels: int = 0, stream_weight: float = 1.0,
                 stream_score_mix: float = 0.0, stream_lidar_dropout: float = 0.0, stream_mix_range=None):
        """`semantic_channels`: the semantic logits read only the first that many feature channels (the LiDAR
        part of a fusion's [LiDAR, image] features, MODEL.HEAD.SEMANTIC_INPUT lidar); None: all of them.
        `stream_channels` > 0: the last that many feature channels are a camera-only stream (MODEL.FUSION.
        IMAGE_STREAM) with an anomaly logit of its own, trained on the voxel labels with weight `stream_weight`;
        the score is (1 - `stream_score_mix`) sigmoid(head logit) + `stream_score_mix` sigmoid(stream logit).
        `stream_mix_range` [r0, r1] (m): the mix's weight is `stream_score_mix` for voxels within r0 of the sensor (xy
        distance of the voxel centre, batch_dict['voxel_range']), falls linearly to 0 at r1 and is 0 beyond (the
        camera sees a far voxel in a few pixels); None or []: the same weight everywhere.
        `stream_lidar_dropout` p: in training, for a random fraction p of the voxels the anomaly logit reads only the
        stream's channels (the others, LiDAR and attended, zeroed): modality dropout, so that the head learns to
        decide from the camera's cue too (the semantic and stream logits always read their full input)."""
        super().__init__()
        if regime not in ("supervised", "normality"):
            raise ValueError(f"MODEL.REGIME must be 'supervised' or 'normality', got {regime!r}")
        self.regime = regime
        self.loss_cfg = loss_cfg
        self.ignore_index = ignore_index
        self.num_semantic = int(model_cfg.NUM_SEMANTIC_CLASSES)
        self.score_kind = model_cfg.NORMALITY_SCORE
        if regime == "normality" and self.num_semantic < 2:
            raise ValueError("MODEL.REGIME normality needs MODEL.HEAD.NUM_SEMANTIC_CLASSES >= 2 (and "
                             "DATA_CONFIG.LABELS.SEMANTIC_CLASSES)")
        if self.score_kind not in ("max_logit", "energy", "entropy"):
            raise ValueError(f"MODEL.HEAD.NORMALITY_SCORE must be max_logit, energy or entropy, got "
                             f"{self.score_kind!r}")
        self.anomaly_logit = _mlp(in_channels, 1) if regime == "supervised" else None
        self.stream_channels = int(stream_channels)
        if self.stream_channels and regime != "supervised":
            raise ValueError("MODEL.FUSION.IMAGE_STREAM trains an anomaly logit on the voxel labels: it needs "
                             "MODEL.REGIME supervised")
        if not 0.0 <= stream_score_mix <= 1.0:
            raise ValueError(f"MODEL.FUSION.IMAGE_STREAM.SCORE_MIX must be in [0, 1], got {stream_score_mix}")
        self.stream_logit = _mlp(self.stream_channels, 1) if self.stream_channels else None
        self.stream_weight, self.stream_score_mix = float(stream_weight), float(stream_score_mix)
        if not 0.0 <= stream_lidar_dropout < 1.0:
            raise ValueError(f"MODEL.FUSION.IMAGE_STREAM.LIDAR_DROPOUT must be in [0, 1), got {stream_lidar_dropout}")
        if stream_lidar_dropout > 0 and not self.stream_channels:
            raise ValueError("MODEL.FUSION.IMAGE_STREAM.LIDAR_DROPOUT drops the LiDAR part of the head's input for "
                             "the camera-only stream's: it needs IMAGE_STREAM.ENABLED")
        self.stream_lidar_dropout = float(stream_lidar_dropout)
        rng = list(stream_mix_range) if stream_mix_range is not None else []
        if rng and (len(rng) != 2 or not 0 <= float(rng[0]) <= float(rng[1])):
            raise ValueError(f"MODEL.FUSION.IMAGE_STREAM.SCORE_MIX_RANGE must be [] or [r0, r1] with 0 <= r0 <= r1 "
                             f"(m), got {stream_mix_range}")
        self.stream_mix_range = (float(rng[0]), float(rng[1])) if rng else None
        self.semantic_channels = semantic_channels if semantic_channels and semantic_channels < in_channels else None
        self.semantic_logits = (_mlp(self.semantic_channels or in_channels, self.num_semantic) if self.num_semantic
                                else None)
        # normality regime: running per-class statistics of the raw score over training's normal voxels, grouped by
        # predicted class (standardized max logits, SML); kept in the state dict, so every checkpoint carries them
        self.standardize = bool(model_cfg.get("NORMALITY_STANDARDIZE", False))
        self.stats_momentum = float(model_cfg.get("NORMALITY_STATS_MOMENTUM", 0.05))
        if not 0.0 < self.stats_momentum <= 1.0:
            raise ValueError(f"MODEL.HEAD.NORMALITY_STATS_MOMENTUM must be in (0, 1], got {self.stats_momentum}")
        if self.standardize and regime != "normality":
            raise ValueError("MODEL.HEAD.NORMALITY_STANDARDIZE standardizes the normality regime's score: it needs "
                             "MODEL.REGIME normality")
        # virtual outlier synthesis (VOS): a queue of normal voxels' hidden features per semantic class
        self.vos_weight = float(loss_cfg.get("VOS_WEIGHT", 0.0))
        if self.vos_weight > 0:
            if regime != "normality":
                raise ValueError("MODEL.LOSS.VOS_WEIGHT synthesizes outliers for the normality regime: it needs "
                                 "MODEL.REGIME normality")
            if loss_cfg.OUTLIER_WEIGHT <= 0:
                raise ValueError("MODEL.LOSS.VOS_WEIGHT adds virtual outliers to the energy margin loss: it needs "
                                 "MODEL.LOSS.OUTLIER_WEIGHT > 0 (the normal voxels' margin)")
            q, hidden = int(loss_cfg.VOS_QUEUE), self.semantic_logits[-1].in_features
            if q < 2 or int(loss_cfg.VOS_SELECT) < 1 or int(loss_cfg.VOS_SAMPLES) < int(loss_cfg.VOS_SELECT):
                raise ValueError("MODEL.LOSS.VOS_QUEUE must be >= 2 and 1 <= VOS_SELECT <= VOS_SAMPLES")
            self.register_buffer("vos_queue", torch.zeros(self.num_semantic, q, hidden))
            self.register_buffer("vos_fill", torch.zeros(self.num_semantic, dtype=torch.long))
        if regime == "normality":
            self.register_buffer("class_score_mean", torch.zeros(self.num_semantic))
            self.register_buffer("class_score_var", torch.ones(self.num_semantic))
            self.register_buffer("class_score_count", torch.zeros(self.num_semantic, dtype=torch.long))

    # statistics, not weights: a checkpoint written before they existed loads without them (they keep their initial
    # values; NORMALITY_STANDARDIZE then says that the statistics are missing)
    _OPTIONAL_BUFFERS = ("class_score_mean", "class_score_var", "class_score_count", "vos_queue", "vos_fill")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._OPTIONAL_BUFFERS:
            if name in self._buffers and prefix + name not in state_dict:
                state_dict[prefix + name] = self._buffers[name].clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def raw_unknownness(self, logits: torch.Tensor) -> torch.Tensor:
        """The score before any squashing, higher = more anomalous: -max logit, energy (-logsumexp) or the
        normalized entropy."""
        if self.score_kind == "max_logit":
            return -logits.max(1).values
        if self.score_kind == "energy":
            return energy_of(logits)
        p = F.softmax(logits, 1)
        entropy = -(p * torch.log(p.clamp(min=1e-12))).sum(1)
        return entropy / torch.log(torch.tensor(float(logits.shape[1]), device=logits.device))

    @torch.no_grad()
    def update_class_stats(self, logits: torch.Tensor, labels: torch.Tensor, min_voxels: int = 8) -> None:
        """One training step of the running statistics: mean and variance of the raw score of the normal voxels
        (label 0; synthesized outliers and ignored voxels are left out) of each predicted class with at least
        `min_voxels` of them in the batch; a class seen for the first time takes the batch's values."""
        u = self.raw_unknownness(logits.float())
        pred = logits.argmax(1)
        normal = labels == 0
        for c in range(self.num_semantic):
            sel = u[normal & (pred == c)]
            if len(sel) < min_voxels:
                continue
            m, v = sel.mean(), sel.var(unbiased=True)
            if self.class_score_count[c] == 0:
                self.class_score_mean[c], self.class_score_var[c] = m, v
            else:
                a = self.stats_momentum
                self.class_score_mean[c] += a * (m - self.class_score_mean[c])
                self.class_score_var[c] += a * (v - self.class_score_var[c])
            self.class_score_count[c] += len(sel)

    def standardized(self, logits: torch.Tensor) -> torch.Tensor:
        """(raw score - mean of the predicted class) / its standard deviation; a class never predicted on a normal
        training voxel takes the average statistics of the others."""
        seen = self.class_score_count > 0
        if not bool(seen.any()):
            raise RuntimeError("MODEL.HEAD.NORMALITY_STANDARDIZE: the head has no class statistics (a checkpoint "
                               "written before they existed, or an untrained model): train it, or set "
                               "MODEL.HEAD.NORMALITY_STANDARDIZE false")
        mean = torch.where(seen, self.class_score_mean, self.class_score_mean[seen].mean())
        var = torch.where(seen, self.class_score_var, self.class_score_var[seen].mean())
        c = logits.argmax(1)
        return (self.raw_unknownness(logits) - mean[c]) / var[c].clamp(min=1e-6).sqrt()

    def normality_score(self, logits: torch.Tensor) -> torch.Tensor:
        """Higher = more anomalous, in (0, 1)."""
        if self.standardize:
            return torch.sigmoid(self.standardized(logits))
        u = self.raw_unknownness(logits)
        return u if self.score_kind == "entropy" else torch.sigmoid(u)

    def forward(self, batch_dict: dict) -> dict:
        feats = batch_dict["voxel_features"]
        if self.anomaly_logit is not None:
            head_in = feats
            if self.training and self.stream_lidar_dropout > 0:     # modality dropout: these voxels, camera only
                drop = torch.rand(len(feats), device=feats.device) < self.stream_lidar_dropout
                keep = torch.ones_like(feats[:1])
                keep[:, :-self.stream_channels] = 0
                head_in = torch.where(drop[:, None], feats * keep, feats)
            logits = self.anomaly_logit(head_in).squeeze(1)
            batch_dict["voxel_logits"] = logits
            batch_dict["voxel_scores"] = torch.sigmoid(logits.float())
        if self.stream_logit is not None:
            stream = self.stream_logit(feats[:, -self.stream_channels:]).squeeze(1)
            batch_dict["voxel_stream_logits"] = stream
            if self.stream_score_mix > 0:
                w = self.stream_score_mix
                if self.stream_mix_range is not None:      # full weight within r0, none beyond r1, linear between
                    r0, r1 = self.stream_mix_range
                    near = (r1 - batch_dict["voxel_range"].float()) / max(r1 - r0, 1e-6)
                    w = w * near.clamp(0.0, 1.0)
                batch_dict["voxel_scores"] = (1.0 - w) * batch_dict["voxel_scores"] + w * torch.sigmoid(stream.float())
        if self.semantic_logits is not None:
            sem_in = feats if self.semantic_channels is None else feats[:, :self.semantic_channels]
            if self.vos_weight > 0 and self.training:     # the hidden features, for the VOS queue
                hidden = self.semantic_logits[:-1](sem_in)
                batch_dict["voxel_semantic_hidden"] = hidden
                sem = self.semantic_logits[-1](hidden)
            else:
                sem = self.semantic_logits(sem_in)
            batch_dict["voxel_semantic_logits"] = sem
            if self.regime == "normality":
                if self.training and "voxel_labels" in batch_dict:
                    self.update_class_stats(sem, batch_dict["voxel_labels"])
                batch_dict["voxel_scores"] = self.normality_score(sem.float())
        p2v = batch_dict["point2voxel"]
        point_scores = torch.zeros(len(p2v), dtype=torch.float32, device=feats.device)
        valid = p2v >= 0
        point_scores[valid] = batch_dict["voxel_scores"][p2v[valid]].float()
        batch_dict["point_scores"] = point_scores
        return batch_dict

    @staticmethod
    def _class_groups(batch_dict: dict, mask: torch.Tensor) -> torch.Tensor:
        """The semantic class of the voxels in `mask`, for MODEL.LOSS.NEGATIVE_CLASS_POWER's balance."""
        if "voxel_semantic" not in batch_dict:
            raise ValueError("MODEL.LOSS.NEGATIVE_CLASS_POWER > 0 balances the normal voxels over their semantic "
                             "classes: set DATA_CONFIG.LABELS.SEMANTIC_CLASSES (the semantic head is not needed)")
        return batch_dict["voxel_semantic"][mask]

    def anomaly_loss(self, voxel_logits: torch.Tensor, batch_dict: dict, tb: dict, prefix: str) -> torch.Tensor:
        """The supervised anomaly loss (focal / BCE, hard negatives, class balance, Lovasz: MODEL.LOSS) of one voxel
        logit; TensorBoard scalars go to `tb` under `prefix`."""
        cfg = self.loss_cfg
        labels = batch_dict["voxel_labels"]
        keep = labels != self.ignore_index
        logits, targets = voxel_logits[keep].float(), labels[keep]
        tb[prefix + "pos_fraction"] = float(targets.float().mean()) if len(targets) else 0.0
        groups = self._class_groups(batch_dict, keep) if cfg.get("NEGATIVE_CLASS_POWER", 0.0) > 0 else None
        if cfg.HARD_NEGATIVE_FRACTION < 1:
            hard = hard_negative_mask(logits, targets, cfg.HARD_NEGATIVE_FRACTION, cfg.HARD_NEGATIVE_MIN)
            logits, targets = logits[hard], targets[hard]
            groups = groups[hard] if groups is not None else None
        weight = negative_class_weights(targets, groups, cfg.NEGATIVE_CLASS_POWER) if groups is not None else None
        pos_weight = balanced_pos_weight(targets, cfg.POS_WEIGHT)
        gamma = cfg.FOCAL_GAMMA if cfg.TYPE == "focal" else 0.0
        if cfg.TYPE not in ("focal", "bce"):
            raise ValueError(f"MODEL.LOSS.TYPE must be focal or bce, got {cfg.TYPE!r}")
        cls = binary_focal_loss(logits, targets, pos_weight, gamma, weight)
        tb[f"loss_{prefix}anomaly"] = float(cls.detach())
        total = cls
        if cfg.ANOMALY_LOVASZ_WEIGHT > 0:
            if cfg.LOVASZ_TYPE == "hinge":
                lov = lovasz_hinge(logits, targets)
            elif cfg.LOVASZ_TYPE == "softmax":   # two-class Lovasz softmax on sigmoid probabilities
                prob = torch.sigmoid(logits)
                lov = lovasz_softmax(torch.stack([1.0 - prob, prob], 1), targets)
            else:
                raise ValueError(f"MODEL.LOSS.LOVASZ_TYPE must be softmax or hinge, got {cfg.LOVASZ_TYPE!r}")
            lov = lov * cfg.ANOMALY_LOVASZ_WEIGHT
            tb[f"loss_{prefix}lovasz"] = float(lov.detach())
            total = total + lov
        return total

    @torch.no_grad()
    def enqueue_features(self, hidden: torch.Tensor, classes: torch.Tensor, per_step: int = 64) -> None:
        """Push up to `per_step` random features of each class (ground-truth semantic class of normal voxels) into
        its ring buffer."""
        q = self.vos_queue.shape[1]
        for c in range(self.num_semantic):
            f = hidden[classes == c]
            if not len(f):
                continue
            f = f[torch.randperm(len(f), device=f.device)[:per_step]].float()
            start = int(self.vos_fill[c]) % q
            idx = (torch.arange(len(f), device=f.device) + start) % q
            self.vos_queue[c, idx] = f
            self.vos_fill[c] += len(f)

    def virtual_outliers(self, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Samples of class-conditional Gaussians with a shared covariance fitted to the full queues, keeping the
        VOS_SELECT least likely of VOS_SAMPLES per class; None until every class seen has a full queue (a class
        never seen is left out)."""
        q = self.vos_queue.shape[1]
        full = self.vos_fill >= q
        seen = self.vos_fill > 0
        if not bool(full.any()) or bool((seen & ~full).any()):
            return None
        feats = self.vos_queue[full].double()                        # (C, Q, D)
        mu = feats.mean(1)
        centred = (feats - mu[:, None]).reshape(-1, feats.shape[-1])
        cov = centred.T @ centred / len(centred) + 1e-4 * torch.eye(feats.shape[-1], dtype=feats.dtype,
                                                                     device=feats.device)
        chol = torch.linalg.cholesky(cov)
        n, k = int(self.loss_cfg.VOS_SAMPLES), int(self.loss_cfg.VOS_SELECT)
        z = torch.randn(len(mu), n, feats.shape[-1], dtype=feats.dtype, device=feats.device, generator=generator)
        samples = mu[:, None] + z @ chol.T
        # the log-density under its own class differs from -|z|^2 / 2 only by a constant: the least likely are the
        # samples with the largest |z|
        far = z.pow(2).sum(-1).topk(k, dim=1).indices
        return samples.gather(1, far[..., None].expand(-1, -1, feats.shape[-1])).reshape(-1, feats.shape[-1])

    def get_loss(self, batch_dict: dict):
        cfg = self.loss_cfg
        tb = {}
        total = batch_dict["voxel_features"].new_zeros(()).float()
        if self.anomaly_logit is not None:
            total = total + self.anomaly_loss(batch_dict["voxel_logits"], batch_dict, tb, "")
        if self.stream_logit is not None:
            stream = self.anomaly_loss(batch_dict["voxel_stream_logits"], batch_dict, tb, "stream_")
            total = total + stream * self.stream_weight
        if self.semantic_logits is not None and "voxel_semantic" in batch_dict:
            labels = batch_dict["voxel_semantic"]
            keep = labels != self.ignore_index
            sem_logits = batch_dict["voxel_semantic_logits"][keep].float()
            ce = F.cross_entropy(sem_logits, labels[keep]) if keep.any() else sem_logits.sum() * 0.0
            lov = lovasz_softmax(F.softmax(sem_logits, 1), labels[keep]) if keep.any() else ce * 0.0
            sem = (ce + cfg.LOVASZ_WEIGHT * lov) * cfg.SEMANTIC_WEIGHT
            tb["loss_semantic"] = float(sem.detach())
            total = total + sem
        if (self.regime == "normality" and cfg.OUTLIER_WEIGHT > 0 and "voxel_labels" in batch_dict
                and self.semantic_logits is not None):
            # energy margin loss (outlier synthesis): normal voxels low energy, synthesized outliers high
            labels = batch_dict["voxel_labels"]
            energy = energy_of(batch_dict["voxel_semantic_logits"].float())
            e_in, e_out = energy[labels == 0], energy[labels == 1]
            loss = energy.sum() * 0.0
            if len(e_in):
                hinge = F.relu(e_in - cfg.ENERGY_M_IN).pow(2)
                if cfg.get("NEGATIVE_CLASS_POWER", 0.0) > 0:   # normal voxels balanced over their classes
                    groups = self._class_groups(batch_dict, labels == 0)
                    hinge = hinge * negative_class_weights(torch.zeros_like(groups), groups, cfg.NEGATIVE_CLASS_POWER)
                loss = loss + hinge.mean()
            if len(e_out):
                loss = loss + F.relu(cfg.ENERGY_M_OUT - e_out).pow(2).mean()
            loss = loss * cfg.OUTLIER_WEIGHT
            tb["loss_outlier"] = float(loss.detach())
            if self.vos_weight > 0 and "voxel_semantic_hidden" in batch_dict:
                normal = (labels == 0) & (batch_dict["voxel_semantic"] != self.ignore_index)
                self.enqueue_features(batch_dict["voxel_semantic_hidden"][normal].detach(),
                                      batch_dict["voxel_semantic"][normal])
                virtual = self.virtual_outliers()
                if virtual is not None:       # through the classifier's last layer only
                    last = self.semantic_logits[-1]
                    e_v = energy_of(last(virtual.to(last.weight.dtype)).float())
                    vos = F.relu(cfg.ENERGY_M_OUT - e_v).pow(2).mean() * self.vos_weight
                    tb["loss_vos"] = float(vos.detach())
                    loss = loss + vos
            tb["outlier_fraction"] = float((labels == 1).float().mean()) if len(labels) else 0.0
            total = total + loss
        tb["loss"] = float(total.detach())
        return total, tb
