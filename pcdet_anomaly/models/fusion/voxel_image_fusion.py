"""Voxel -> image fusion: project voxel centres into the camera, sample image features around the projection,
and let each voxel (query) attend to them (keys / values).

Modes: attention (8-head cross-attention, residual + LayerNorm + FFN), concat (MLP over the voxel feature and the
mean image token), image_only (voxel features from projected image features alone). Voxels behind the camera or
outside the image get no image feature: their image part is zero and their LiDAR feature is kept.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import cuda_ops

from ..geometry import GridSpec, voxel_centres_xyz

__all__ = ["VoxelImageFusion", "PositionalEncoding"]


class PositionalEncoding(nn.Module):
    """3D position (metres) -> [V, E]: learned MLP, fixed sinusoids, or none (zeros)."""

    def __init__(self, kind: str, dim: int, scale=(50.0, 50.0, 4.0)):
        super().__init__()
        if kind not in ("learned", "sinusoidal", "none"):
            raise ValueError(f"MODEL.FUSION.POS_ENCODING must be learned, sinusoidal or none, got {kind!r}")
        self.kind, self.dim = kind, dim
        self.register_buffer("scale", torch.tensor(scale), persistent=False)
        if kind == "learned":
            self.mlp = nn.Sequential(nn.Linear(3, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        elif kind == "sinusoidal":
            n_freq = max(1, dim // 6)
            self.register_buffer("freqs", 2.0 ** torch.arange(n_freq) * math.pi, persistent=False)

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return xyz.new_zeros((len(xyz), self.dim))
        x = xyz / self.scale
        if self.kind == "learned":
            return self.mlp(x)
        angles = x[:, :, None] * self.freqs                        # [V, 3, F]
        enc = torch.cat([angles.sin(), angles.cos()], 2).flatten(1)
        return F.pad(enc, (0, self.dim - enc.shape[1]))


class VoxelImageFusion(nn.Module):
    def __init__(self, model_cfg, grid: GridSpec, voxel_channels: int, image_channels: dict,
                 image_stream: bool = False):
        """`image_stream`: add a camera-only voxel feature beside the attended one (MODEL.FUSION.IMAGE_STREAM; the
        network decides where it applies)."""
        super().__init__()
        self.mode = model_cfg.MODE
        if self.mode not in ("attention", "concat", "image_only"):
            raise ValueError(f"MODEL.FUSION.MODE {self.mode!r} needs no fusion module (or is unknown)")
        self.grid = grid
        e = model_cfg.EMBED_DIM
        if e % model_cfg.NUM_HEADS:
            raise ValueError(f"MODEL.FUSION.EMBED_DIM {e} must be divisible by NUM_HEADS {model_cfg.NUM_HEADS}")
        self.k = int(model_cfg.NEIGHBOURHOOD)
        self.strides = sorted(image_channels)
        self.token_proj = nn.ModuleDict({str(s): nn.Linear(c, e) for s, c in image_channels.items()})
        self.num_tokens = self.k * self.k * len(self.strides)
        self.token_pos = nn.Parameter(torch.zeros(self.num_tokens, e))
        nn.init.normal_(self.token_pos, std=0.02)
        self.pos_encoding = PositionalEncoding(model_cfg.POS_ENCODING, e)
        if self.mode != "image_only":
            self.query_proj = nn.Linear(voxel_channels, e)
        if self.mode == "attention":
            self.attention = nn.MultiheadAttention(e, model_cfg.NUM_HEADS, dropout=model_cfg.DROPOUT,
                                                   batch_first=True)
            self.norm1 = nn.LayerNorm(e)
            self.ffn = nn.Sequential(nn.Linear(e, model_cfg.FFN_DIM), nn.ReLU(inplace=True),
                                     nn.Dropout(model_cfg.DROPOUT), nn.Linear(model_cfg.FFN_DIM, e))
            self.norm2 = nn.LayerNorm(e)
        elif self.mode == "concat":
            self.mix = nn.Sequential(nn.Linear(2 * e, model_cfg.FFN_DIM), nn.ReLU(inplace=True),
                                     nn.Linear(model_cfg.FFN_DIM, e))
        else:
            self.mix = nn.Sequential(nn.Linear(e, model_cfg.FFN_DIM), nn.ReLU(inplace=True),
                                     nn.Linear(model_cfg.FFN_DIM, e))
        self.out_channels = e if self.mode == "image_only" else voxel_channels + e
        self.stream = None        # camera-only voxel features beside the attended ones (MODEL.FUSION.IMAGE_STREAM)
        if image_stream:
            if self.mode == "image_only":
                raise ValueError("MODEL.FUSION.IMAGE_STREAM adds a camera-only stream to a fusion: MODE image_only "
                                 "is one already")
            self.stream = nn.Sequential(nn.Linear(e, model_cfg.FFN_DIM), nn.ReLU(inplace=True),
                                        nn.Linear(model_cfg.FFN_DIM, e))
            self.out_channels += e
        offsets = torch.arange(self.k, dtype=torch.float32) - (self.k - 1) / 2
        oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")
        self.register_buffer("offsets", torch.stack([ox.flatten(), oy.flatten()], 1), persistent=False)

    def sample_tokens(self, feats: dict, b: int, uv: torch.Tensor, image_hw) -> torch.Tensor:
        """Image features of sample b around pixels uv [Vb, 2] -> tokens [Vb, T, E]."""
        tokens = []
        H, W = image_hw
        for s in self.strides:
            fmap = feats[s][b:b + 1]
            hf, wf = fmap.shape[-2:]
            # continuous feature-map coordinates (pixel i covers [i, i + 1)); k x k cells around the projection
            pos = uv[:, None, :] / torch.tensor([W / wf, H / hf], device=uv.device, dtype=uv.dtype) + self.offsets
            norm = torch.stack([2 * pos[..., 0] / wf - 1, 2 * pos[..., 1] / hf - 1], -1)
            sampled = F.grid_sample(fmap, norm[None].to(fmap.dtype), mode="bilinear", padding_mode="zeros",
                                    align_corners=False)                         # [1, C, Vb, k*k]
            tokens.append(self.token_proj[str(s)](sampled[0].permute(1, 2, 0)))
        return torch.cat(tokens, 1) + self.token_pos

    def forward(self, batch_dict: dict) -> dict:
        coords = batch_dict["voxel_coords"]
        feats = batch_dict["image_features"]
        ref = next(iter(feats.values()))
        centres = voxel_centres_xyz(coords, self.grid, dtype=torch.float32)
        e = self.token_pos.shape[1]
        image_part = ref.new_zeros((len(coords), e))
        stream_part = ref.new_zeros((len(coords), e)) if self.stream is not None else None
        valid_all = torch.zeros(len(coords), dtype=torch.bool, device=coords.device)
        lidar = batch_dict.get("voxel_features")
        for b in range(batch_dict["batch_size"]):
            idx = torch.nonzero(coords[:, 0] == b, as_tuple=True)[0]
            calib = batch_dict["calib"][b]
            uv, _, valid = cuda_ops.project_to_image(centres[idx], calib["intrinsics"], calib["lidar_to_cam"],
                                                     calib["image_hw"], batch_dict["aug_matrix"][b])
            idx, uv = idx[valid], uv[valid].to(ref.dtype)
            if len(idx) == 0:
                continue
            valid_all[idx] = True
            tokens = self.sample_tokens(feats, b, uv, calib["image_hw"])
            pe = self.pos_encoding(centres[idx]).to(ref.dtype)
            if self.mode == "image_only":
                fused = self.mix(tokens.mean(1) + pe)
            else:
                query = self.query_proj(lidar[idx]) + pe
                if self.mode == "attention":
                    attended, _ = self.attention(query[:, None], tokens, tokens, need_weights=False)
                    x = self.norm1(query + attended[:, 0])
                    fused = self.norm2(x + self.ffn(x))
                else:
                    fused = self.mix(torch.cat([query, tokens.mean(1)], 1))
            image_part = image_part.index_put((idx,), fused.to(image_part.dtype))
            if self.stream is not None:     # what the camera alone says of the voxel: no LiDAR feature in it
                stream_part = stream_part.index_put((idx,), self.stream(tokens.mean(1) + pe).to(stream_part.dtype))
        batch_dict["voxel_in_image"] = valid_all
        batch_dict["voxel_range"] = centres[:, :2].norm(dim=1)     # xy distance from the sensor (m, model frame)
        if self.mode == "image_only":
            batch_dict["voxel_features"] = image_part
        else:
            parts = [lidar, image_part.to(lidar.dtype)]
            if stream_part is not None:
                parts.append(stream_part.to(lidar.dtype))
            batch_dict["voxel_features"] = torch.cat(parts, 1)
        return batch_dict
