"""Cylinder3D asymmetric residual sparse UNet on spconv 2.x.

Asymmetric blocks pair a 1x3x3 and a 3x1x3 branch (kernel shapes over the (rho, phi, z) grid, named for what they
are). Every submanifold conv gets an indice_key made of its resolution level and its kernel shape, so convs share
index pairs only when both match. The conv algorithm follows the tensor's device: Native on CPU, implicit GEMM on
CUDA.
"""
from __future__ import annotations

import spconv.pytorch as spconv
import torch
from spconv.core import ConvAlgo
from torch import nn

__all__ = ["Cylinder3DUNet"]


def _subm(c_in, c_out, kernel, level):
    key = f"L{level}_{''.join(str(k) for k in kernel)}"
    return spconv.SubMConv3d(c_in, c_out, kernel_size=kernel, padding=tuple(k // 2 for k in kernel), bias=False,
                             indice_key=key, algo=ConvAlgo.Native)


def _bn_act(channels):
    return nn.Sequential(nn.BatchNorm1d(channels), nn.LeakyReLU(0.1, inplace=True))


def _apply(x: spconv.SparseConvTensor, conv, norm) -> spconv.SparseConvTensor:
    x = conv(x)
    return x.replace_feature(norm(x.features))


class AsymmetricResidualBlock(nn.Module):
    """Sum of two branches: 1x3x3 then 3x1x3, and 3x1x3 then 1x3x3."""

    def __init__(self, c_in, c_out, level):
        super().__init__()
        self.branch_a_1x3x3 = _subm(c_in, c_out, (1, 3, 3), level)
        self.norm_a1 = _bn_act(c_out)
        self.branch_a_3x1x3 = _subm(c_out, c_out, (3, 1, 3), level)
        self.norm_a2 = _bn_act(c_out)
        self.branch_b_3x1x3 = _subm(c_in, c_out, (3, 1, 3), level)
        self.norm_b1 = _bn_act(c_out)
        self.branch_b_1x3x3 = _subm(c_out, c_out, (1, 3, 3), level)
        self.norm_b2 = _bn_act(c_out)

    def forward(self, x):
        a = _apply(_apply(x, self.branch_a_1x3x3, self.norm_a1), self.branch_a_3x1x3, self.norm_a2)
        b = _apply(_apply(x, self.branch_b_3x1x3, self.norm_b1), self.branch_b_1x3x3, self.norm_b2)
        return a.replace_feature(a.features + b.features)


class DownStage(nn.Module):
    """Asymmetric residual block at `level`, then a strided sparse conv to level + 1 (z pooled or kept)."""

    def __init__(self, c_in, c_out, level, pool_height: bool):
        super().__init__()
        self.block = AsymmetricResidualBlock(c_in, c_out, level)
        stride = (2, 2, 2) if pool_height else (2, 2, 1)
        self.downsample = spconv.SparseConv3d(c_out, c_out, kernel_size=3, stride=stride, padding=1, bias=False,
                                              indice_key=f"down{level}", algo=ConvAlgo.Native)

    def forward(self, x):
        skip = self.block(x)
        return self.downsample(skip), skip


class UpStage(nn.Module):
    """Refine at level + 1, inverse conv back to `level`, add the skip, then 1x3x3, 3x1x3 and 3x3x3 convs."""

    def __init__(self, c_in, c_out, level):
        super().__init__()
        self.refine_3x3x3 = _subm(c_in, c_out, (3, 3, 3), level + 1)
        self.norm_refine = _bn_act(c_out)
        self.upsample = spconv.SparseInverseConv3d(c_out, c_out, kernel_size=3, indice_key=f"down{level}",
                                                   bias=False, algo=ConvAlgo.Native)
        self.conv_1x3x3 = _subm(c_out, c_out, (1, 3, 3), level)
        self.norm1 = _bn_act(c_out)
        self.conv_3x1x3 = _subm(c_out, c_out, (3, 1, 3), level)
        self.norm2 = _bn_act(c_out)
        self.conv_3x3x3 = _subm(c_out, c_out, (3, 3, 3), level)
        self.norm3 = _bn_act(c_out)

    def forward(self, x, skip):
        x = _apply(x, self.refine_3x3x3, self.norm_refine)
        x = self.upsample(x)
        x = x.replace_feature(x.features + skip.features)
        x = _apply(x, self.conv_1x3x3, self.norm1)
        x = _apply(x, self.conv_3x1x3, self.norm2)
        return _apply(x, self.conv_3x3x3, self.norm3)


class DimensionDecompositionContext(nn.Module):
    """Cylinder3D's context module: 3x1x1, 1x3x1 and 1x1x3 convs, each gated by a sigmoid, summed, times input."""

    def __init__(self, channels, level=0):
        super().__init__()
        self.conv_3x1x1 = _subm(channels, channels, (3, 1, 1), level)
        self.conv_1x3x1 = _subm(channels, channels, (1, 3, 1), level)
        self.conv_1x1x3 = _subm(channels, channels, (1, 1, 3), level)
        self.norms = nn.ModuleList([nn.BatchNorm1d(channels) for _ in range(3)])

    def forward(self, x):
        gates = [torch.sigmoid(norm(conv(x).features)) for conv, norm in
                 zip((self.conv_3x1x1, self.conv_1x3x1, self.conv_1x1x3), self.norms)]
        return x.replace_feature((gates[0] + gates[1] + gates[2]) * x.features)


class Cylinder3DUNet(nn.Module):
    """Input `voxel_features` [V, C_in] at `voxel_coords`; output `voxel_features` [V, 4 * INIT_SIZE] at the same
    voxels (submanifold output keeps the input's active set)."""

    def __init__(self, model_cfg, input_channels: int, grid_size):
        super().__init__()
        c = model_cfg.INIT_SIZE
        stages = model_cfg.NUM_STAGES
        self.grid_size = [int(g) for g in grid_size]
        self.context = AsymmetricResidualBlock(input_channels, c, level=0)
        widths = [c] + [c * 2 ** (i + 1) for i in range(stages)]        # c, 2c, 4c, 8c, 16c
        self.down = nn.ModuleList()
        z = self.grid_size[2]
        for level in range(stages):
            pool_height = level < 2 and z >= 4
            z = (z + 1) // 2 if pool_height else z
            self.down.append(DownStage(widths[level], widths[level + 1], level, pool_height))
        self.up = nn.ModuleList()
        up_in = widths[stages]
        for level in reversed(range(stages)):
            out = widths[level + 1] if level == stages - 1 else widths[level + 1]
            self.up.append(UpStage(up_in, out, level))
            up_in = out
        self.decomposition_context = DimensionDecompositionContext(up_in)
        self.out_channels = 2 * up_in
        self._algo_device = None

    def _select_algorithm(self, device: torch.device) -> None:
        if self._algo_device == device.type:
            return
        algo = ConvAlgo.MaskImplicitGemm if device.type == "cuda" else ConvAlgo.Native
        for module in self.modules():
            if isinstance(module, spconv.conv.SparseConvolution):
                module.algo = algo
        self._algo_device = device.type

    def forward(self, batch_dict: dict) -> dict:
        feats = batch_dict["voxel_features"]
        self._select_algorithm(feats.device)
        x = spconv.SparseConvTensor(feats, batch_dict["voxel_coords"].int(), self.grid_size,
                                    batch_dict["batch_size"])
        x = self.context(x)
        skips = []
        for stage in self.down:
            x, skip = stage(x)
            skips.append(skip)
        for stage, skip in zip(self.up, reversed(skips)):
            x = stage(x, skip)
        context = self.decomposition_context(x)
        batch_dict["voxel_features"] = torch.cat([x.features, context.features], 1)
        return batch_dict
