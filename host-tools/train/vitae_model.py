"""Our own PyTorch implementation of the official ViTAE v1 classification model
(`ViTAE_ViT_basic`, NeurIPS 2021), written from shared/design/vitae-model.md.

Dev-only (PyTorch is never needed by the Rust crates, their tests or CI).

What it reproduces exactly:
  * the forward pass of the current official code (ViTAE-Transformer @ aebf1d7) for
    RC tokens types 'performer' and 'performer_less' and NC tokens type 'transformer'
    (everything ViTAE-T/6M/13M/S use), class_token=False;
  * the Dec-2021 (Annbless/ViTAE @ a4c31bb) working 'transformer' reduction cell
    (Token_transformer). NOTE: in the *current* official code a 'transformer' RC
    silently degrades to PRM-only (design doc quirk Q1); we do not emulate that bug;
  * the state_dict: identical key names, shapes, dtypes and order (incl. the frozen
    performer `w` Parameter and the int64 BN `num_batches_tracked` buffers), so an
    official checkpoint loads with strict=True and our checkpoints look official;
  * the construction order of every module (and therefore the consumption of the
    torch RNG): `torch.manual_seed(s); ViTAE_ViT_basic(**kw)` gives the same initial
    tensors (in particular the same random-feature matrices `w`) as the official code.

Not implemented (not needed for v1 T/6M/13M/S-style models): RC types 'pooling',
'none', 'embedding'; NC 'performer' / 'shallow'; class_token=True; op='sum' /
share_weights.

Build from a flat kwargs dict (official argument names), e.g. a fixture's kwargs.json:

    model = build_model(json.load(open("kwargs.json")))
"""
from __future__ import annotations

import json
import math
from functools import partial
from typing import Any, Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ViTAE_ViT_basic", "build_model", "load_kwargs", "count_macs", "count_params", "peak_activation_elems"]


# --------------------------------------------------------------------------- helpers
def _per_stage(value, stages):
    """Official `repeatOrNot`: a list is used as is, a scalar is repeated."""
    return value if isinstance(value, list) else [value for _ in range(stages)]


class Mlp(nn.Module):
    """fc1 -> GELU (exact erf) -> dropout -> fc2 -> dropout (keys mlp.fc1 / mlp.fc2)."""

    def __init__(self, in_features, hidden_features=None, out_features=None, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth (training only; identity in eval)."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


# --------------------------------------------------------------------------- RC pieces
class PRM(nn.Module):
    """Pyramid Reduction Module, op='cat', share_weights=False.

    One Conv2d(k, stride=ratio, dilation=d, padding=ceil(((k-1)d+1-s)/2)) + GELU per
    dilation; outputs concatenated dilation-major (channel = branch*E + c) and flattened
    to row-major tokens (B, h*w, len(dil)*E).
    """

    def __init__(self, kernel_size, downsample_ratio, dilations, in_chans, embed_dim):
        super().__init__()
        self.dilations = list(dilations)
        self.stride = downsample_ratio
        self.convs = nn.ModuleList()
        for d in self.dilations:
            pad = math.ceil(((kernel_size - 1) * d + 1 - downsample_ratio) / 2)
            self.convs.append(nn.Sequential(
                nn.Conv2d(in_chans, embed_dim, kernel_size, stride=downsample_ratio,
                          padding=pad, dilation=d),
                nn.GELU()))
        self.out_chans = embed_dim * len(self.dilations)

    def forward(self, x):
        y = torch.cat([conv(x) for conv in self.convs], dim=1)  # (B, nE, h, w)
        return y.flatten(2).transpose(1, 2)                       # (B, h*w, nE)


class TokenPerformer(nn.Module):
    """T2T-ViT Token_performer as used inside the RC (keys: w, kqv, proj, norm1, norm2, mlp.0, mlp.2).

    LayerNorms are plain nn.LayerNorm (eps 1e-5). `w` = orthonormal rows * sqrt(m),
    a frozen Parameter (in state_dict, never trained).
    """

    def __init__(self, dim, in_dim, head_cnt=1, kernel_ratio=0.5):
        super().__init__()
        self.emb = in_dim * head_cnt
        self.kqv = nn.Linear(dim, 3 * self.emb)
        self.dp = nn.Dropout(0.1)
        self.proj = nn.Linear(self.emb, self.emb)
        self.head_cnt = head_cnt
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(self.emb)
        self.epsilon = 1e-8
        self.mlp = nn.Sequential(nn.Linear(self.emb, self.emb), nn.GELU(),
                                 nn.Linear(self.emb, self.emb), nn.Dropout(0.1))
        self.m = int(self.emb * kernel_ratio)
        w = torch.randn(self.m, self.emb)
        self.w = nn.Parameter(nn.init.orthogonal_(w) * math.sqrt(self.m), requires_grad=False)

    def prm_exp(self, z):
        # exp(w.z - |z|^2/2) / sqrt(m); no d^-1/4 temperature (quirk Q3)
        z = z.float()
        zd = (z * z).sum(dim=-1, keepdim=True) / 2
        wtz = torch.einsum('bti,mi->btm', z, self.w)
        return torch.exp(wtz - zd) / math.sqrt(self.m)

    def attn(self, x):
        k, q, v = torch.split(self.kqv(x), self.emb, dim=-1)       # order k, q, v (Q2)
        kp, qp = self.prm_exp(k), self.prm_exp(q)                  # (B,T,m)
        D = torch.einsum('bti,bi->bt', qp, kp.sum(dim=1)).unsqueeze(-1)
        kptv = torch.einsum('bin,bim->bnm', v.float(), kp)         # (B,emb,m)
        y = torch.einsum('bti,bni->btn', qp, kptv) / (D + self.epsilon)
        return v + self.dp(self.proj(y))                           # skip through v (Q5)


class TokenAttention(nn.Module):
    """Attention of the Dec-2021 Token_transformer: qkv without bias, head dim = in_dim/heads, v skip."""

    def __init__(self, dim, in_dim, num_heads=1, qkv_bias=False, qk_scale=None):
        super().__init__()
        self.num_heads = num_heads
        self.in_dim = in_dim
        head_dim = in_dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        self.qkv = nn.Linear(dim, in_dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(in_dim, in_dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x):
        B, N, _ = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(B, N, 3, h, self.in_dim // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        o = self.proj_drop(self.proj((self.attn_drop(a) @ v).transpose(1, 2).reshape(B, N, self.in_dim)))
        return v.permute(0, 2, 1, 3).reshape(B, N, self.in_dim) + o


class TokenTransformer(nn.Module):
    """Dec-2021 Token_transformer (keys norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)."""

    def __init__(self, dim, in_dim, num_heads, mlp_ratio=1.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TokenAttention(dim, in_dim=in_dim, num_heads=num_heads)
        self.drop_path = nn.Identity()
        self.norm2 = nn.LayerNorm(in_dim)
        self.mlp = Mlp(in_dim, int(in_dim * mlp_ratio), in_dim)


class ReductionCell(nn.Module):
    def __init__(self, img_size, in_chans, embed_dims, token_dims, downsample_ratios, kernel_size,
                 num_heads, dilations, op='cat', tokens_type='performer', group=1):
        super().__init__()
        if op != 'cat':
            raise NotImplementedError("RC_op %r (only 'cat' is implemented)" % op)
        if tokens_type not in ('performer', 'performer_less', 'transformer'):
            raise NotImplementedError("RC tokens_type %r" % tokens_type)
        strides, r = [], downsample_ratios // 2
        for _ in range(3):
            strides.append(2 if r > 0 else 1)
            r //= 2
        # PCM is always built first (it consumes RNG), and dropped for performer_less.
        self.PCM = nn.Sequential(
            nn.Conv2d(in_chans, embed_dims, 3, stride=strides[0], padding=1, groups=group),
            nn.SiLU(inplace=True),
            nn.Conv2d(embed_dims, embed_dims, 3, stride=strides[1], padding=1, groups=group),
            nn.BatchNorm2d(embed_dims),
            nn.SiLU(inplace=True),
            nn.Conv2d(embed_dims, token_dims, 3, stride=strides[2], padding=1, groups=group),
            nn.SiLU(inplace=True))
        self.PRM = PRM(kernel_size, downsample_ratios, dilations, in_chans, embed_dims)
        dim = self.PRM.out_chans
        if tokens_type == 'performer':
            assert num_heads == 1
            self.attn = TokenPerformer(dim, token_dims, head_cnt=num_heads, kernel_ratio=0.5)
        elif tokens_type == 'transformer':
            self.attn = TokenTransformer(dim, token_dims, num_heads=num_heads, mlp_ratio=1.0)
        else:
            self.attn = None
            self.PCM = None
        self.tokens_type = tokens_type

    def forward(self, x, taps=None, prefix=""):
        if x.dim() == 3:
            B, N, C = x.shape
            n = int(math.sqrt(N))
            x = x.view(B, n, n, C).permute(0, 3, 1, 2)
        prm = self.PRM(x)
        if taps is not None:
            taps[prefix + "prm"] = prm
        if self.attn is None:
            return prm
        conv = self.PCM(x)                                          # on the RC input (Q6)
        conv = conv.permute(0, 2, 3, 1).reshape(conv.shape[0], -1, conv.shape[1])
        y = self.attn.attn(self.attn.norm1(prm))
        if taps is not None:
            taps[prefix + "pcm"] = conv
            taps[prefix + "attn"] = y
        y = y + conv
        return y + self.attn.mlp(self.attn.norm2(y))


# --------------------------------------------------------------------------- NC
class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(B, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        return self.proj_drop(self.proj((a @ v).transpose(1, 2).reshape(B, N, C)))


class NormalCell(nn.Module):
    """NC, tokens_type 'transformer', class_token=False, non-shallow PCM."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0,
                 attn_drop=0.0, drop_path=0.0, norm_layer=nn.LayerNorm, group=64,
                 tokens_type='transformer'):
        super().__init__()
        if tokens_type != 'transformer':
            raise NotImplementedError("NC tokens_type %r" % tokens_type)
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = Mlp(dim, hidden, drop=drop)
        self.PCM = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, 1, 1, 1, group), nn.BatchNorm2d(hidden), nn.SiLU(inplace=True),
            nn.Conv2d(hidden, dim, 3, 1, 1, 1, group), nn.BatchNorm2d(dim), nn.SiLU(inplace=True),
            nn.Conv2d(dim, dim, 3, 1, 1, 1, group), nn.SiLU(inplace=True))

    def forward(self, x, taps=None, prefix=""):
        b, n, c = x.shape
        wh = int(math.sqrt(n))
        conv = self.PCM(x.view(b, wh, wh, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, n, c)
        a = self.attn(self.norm1(x))
        x = x + self.drop_path(a)
        x = x + self.drop_path(conv)
        m = self.mlp(self.norm2(x))
        x = x + self.drop_path(m)
        if taps is not None:
            taps[prefix + "pcm"] = conv
            taps[prefix + "attn"] = a
            taps[prefix + "mlp"] = m
        return x


# --------------------------------------------------------------------------- top level
class BasicLayer(nn.Module):
    def __init__(self, img_size, in_chans, embed_dims, token_dims, downsample_ratios, kernel_size,
                 RC_heads, NC_heads, dilations, RC_op, RC_tokens_type, NC_tokens_type, RC_group,
                 NC_group, NC_depth, dpr, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop, norm_layer):
        super().__init__()
        if downsample_ratios > 1:
            self.RC = ReductionCell(img_size, in_chans, embed_dims, token_dims, downsample_ratios,
                                    kernel_size, RC_heads, dilations, op=RC_op,
                                    tokens_type=RC_tokens_type, group=RC_group)
        else:
            self.RC = nn.Identity()
        self.NC = nn.ModuleList([
            NormalCell(token_dims, NC_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                       drop=drop, attn_drop=attn_drop,
                       drop_path=dpr[i] if isinstance(dpr, list) else dpr,
                       norm_layer=norm_layer, group=NC_group, tokens_type=NC_tokens_type)
            for i in range(NC_depth)])


class ViTAE_ViT_basic(nn.Module):
    """Official constructor signature and defaults (current code, class_token=False)."""

    def __init__(self, img_size=224, in_chans=3, stages=4, embed_dims=64, token_dims=64,
                 downsample_ratios=[4, 2, 2, 2], kernel_size=[7, 3, 3, 3], RC_heads=[1, 1, 1, 1],
                 NC_heads=4, dilations=[[1, 2, 3, 4], [1, 2, 3], [1, 2], [1, 2]], RC_op='cat',
                 RC_tokens_type=['performer', 'transformer', 'transformer', 'transformer'],
                 NC_tokens_type='transformer', RC_group=[1, 1, 1, 1], NC_group=[1, 32, 64, 64],
                 NC_depth=[2, 2, 6, 2], mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.0,
                 norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=1000, class_token=False):
        super().__init__()
        if class_token:
            raise NotImplementedError("class_token=True (ViTAE-B/L/H) is not implemented")
        self.num_classes = num_classes
        self.stages = stages
        self.class_token = class_token
        self.img_size = img_size
        self.in_chans = in_chans
        rep = lambda v: _per_stage(v, stages)
        self.embed_dims = rep(embed_dims)
        self.tokens_dims = token_dims if isinstance(token_dims, list) else [token_dims * (2 ** i) for i in range(stages)]
        self.downsample_ratios = rep(downsample_ratios)
        self.kernel_size = rep(kernel_size)
        self.RC_heads = rep(RC_heads)
        self.NC_heads = rep(NC_heads)
        self.dilations = rep(dilations)
        self.RC_op = rep(RC_op)
        self.RC_tokens_type = rep(RC_tokens_type)
        self.NC_tokens_type = rep(NC_tokens_type)
        self.RC_group = rep(RC_group)
        self.NC_group = rep(NC_group)
        self.NC_depth = rep(NC_depth)
        self.mlp_ratio = rep(mlp_ratio)
        self.qkv_bias = rep(qkv_bias)
        self.qk_scale = rep(qk_scale)
        self.drop = rep(drop_rate)
        self.attn_drop = rep(attn_drop_rate)
        self.norm_layer = rep(norm_layer)
        self.pos_drop = nn.Dropout(p=drop_rate)       # constructed, never used (as official)
        depth = int(sum(self.NC_depth[:stages]))
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        layers = []
        for i in range(stages):
            start = 0 if i == 0 else self.NC_depth[i - 1]   # official (non-cumulative) slice, Q15
            layers.append(BasicLayer(
                img_size, in_chans, self.embed_dims[i], self.tokens_dims[i], self.downsample_ratios[i],
                self.kernel_size[i], self.RC_heads[i], self.NC_heads[i], self.dilations[i], self.RC_op[i],
                self.RC_tokens_type[i], self.NC_tokens_type[i], self.RC_group[i], self.NC_group[i],
                self.NC_depth[i], dpr[start:self.NC_depth[i] + start], self.mlp_ratio[i],
                self.qkv_bias[i], self.qk_scale[i], self.drop[i], self.attn_drop[i], self.norm_layer[i]))
            img_size = img_size // self.downsample_ratios[i]
            in_chans = self.tokens_dims[i]
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(self.tokens_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward_features(self, x, taps=None):
        for i, layer in enumerate(self.layers):
            if isinstance(layer.RC, ReductionCell):
                x = layer.RC(x, taps, "s%d_rc_" % i)
                if taps is not None:
                    taps["s%d_rc_out" % i] = x
            for j, nc in enumerate(layer.NC):
                x = nc(x, taps, "s%d_nc%d_" % (i, j))
                if taps is not None:
                    taps["s%d_nc%d_out" % (i, j)] = x
        x = x.mean(dim=1)
        if taps is not None:
            taps["pooled"] = x
        return x

    def forward(self, x, taps=None):
        """x: (B, in_chans, H, H). If `taps` is a dict it is filled with the fixture
        intermediates (token layout (B,N,C)): s{i}_rc_prm/pcm/attn/out, s{i}_nc{j}_pcm/attn/mlp/out, pooled."""
        return self.head(self.forward_features(x, taps))


# --------------------------------------------------------------------------- utilities
_KW_ALLOWED = {
    'img_size', 'in_chans', 'stages', 'embed_dims', 'token_dims', 'downsample_ratios', 'kernel_size',
    'RC_heads', 'NC_heads', 'dilations', 'RC_op', 'RC_tokens_type', 'NC_tokens_type', 'RC_group',
    'NC_group', 'NC_depth', 'mlp_ratio', 'qkv_bias', 'qk_scale', 'drop_rate', 'attn_drop_rate',
    'drop_path_rate', 'num_classes', 'class_token'}


def load_kwargs(path) -> Dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def build_model(kwargs: Dict[str, Any]) -> ViTAE_ViT_basic:
    """Construct from a flat dict of official constructor kwargs (e.g. a kwargs.json)."""
    unknown = set(kwargs) - _KW_ALLOWED
    if unknown:
        raise ValueError("unknown ViTAE_ViT_basic kwargs: %s" % sorted(unknown))
    return ViTAE_ViT_basic(**kwargs)


def count_params(model: nn.Module) -> Dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() for b in model.buffers())
    return {"params_total": total, "params_trainable": trainable,
            "params_fixed_nontrainable": total - trainable, "buffers": buffers}


def count_macs(model: ViTAE_ViT_basic, img_size: int) -> Dict[str, int]:
    """MACs for one image, counting every matmul (convs, linears, attention matmuls, performer
    einsums), the convention of the fixtures' config.json 'analysis.total_macs'."""
    macs = {"conv_linear": 0, "attn_matmul": 0}

    def conv_hook(m, inp, out):
        macs["conv_linear"] += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, inp, out):
        macs["conv_linear"] += out.numel() // out.shape[0] * m.in_features

    hooks = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(lin_hook))
    x = torch.zeros(1, model.in_chans, img_size, img_size)
    with torch.no_grad():
        model.eval()
        model(x)
    for h in hooks:
        h.remove()
    # analytic attention matmuls
    n = img_size
    for i, layer in enumerate(model.layers):
        n //= model.downsample_ratios[i]
        T = n * n
        rc = layer.RC
        if isinstance(rc, ReductionCell) and isinstance(rc.attn, TokenPerformer):
            emb, m = rc.attn.emb, rc.attn.m
            # w.k and w.q (2*T*m*emb), D (T*m), kptv (emb*T*m), y (T*m*emb); |z|^2 not counted
            macs["attn_matmul"] += 2 * T * m * emb + T * m + emb * T * m + T * m * emb
        elif isinstance(rc, ReductionCell) and isinstance(rc.attn, TokenTransformer):
            d = rc.attn.attn.in_dim
            macs["attn_matmul"] += 2 * T * T * d
        for nc in layer.NC:
            C = model.tokens_dims[i]
            macs["attn_matmul"] += 2 * T * T * C
    macs["total"] = macs["conv_linear"] + macs["attn_matmul"]
    return macs


def peak_activation_elems(model: nn.Module, img_size: int):
    """Peak number of simultaneously live activation elements for one image in PyTorch's eager
    op schedule (every aten op's inputs and outputs, a tensor live from its creation to its last
    use; weights/buffers excluded). At 1 byte per element this is the "naive int8 peak" of the
    fixtures' config.json (reproduces mcu_a's 101,376). Returns (elements, aten op at the peak)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    fixed = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    events = []

    def sid(t):
        p = t.untyped_storage().data_ptr()
        if p in fixed:
            return None
        return p, t.untyped_storage().nbytes() // t.element_size()

    class Trace(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            ins = [sid(a) for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
            outs = [sid(a) for a in tree_flatten(out)[0] if isinstance(a, torch.Tensor)]
            events.append((str(func), [p for p in ins if p], [p for p in outs if p]))
            return out

    x = torch.zeros(1, model.in_chans, img_size, img_size)
    was_training = model.training
    model.eval()
    with torch.no_grad(), Trace():
        model(x)
    model.train(was_training)
    first, last, size, gen = {}, {}, {}, {}
    for t, (_, ins, outs) in enumerate(events):
        in_ptrs = {p for p, _ in ins}
        for p, n in ins:
            k = (p, gen.get(p, 0))
            first.setdefault(k, t)
            size[k] = max(size.get(k, 0), n)
            last[k] = t
        for p, n in outs:
            if p not in in_ptrs:      # a fresh allocation (a freed address may be reused)
                gen[p] = gen.get(p, 0) + 1
            k = (p, gen.get(p, 0))
            first.setdefault(k, t)
            size[k] = max(size.get(k, 0), n)
            last[k] = max(last.get(k, t), t)
    peak, at = 0, None
    for t in range(len(events)):
        live = sum(size[k] for k in first if first[k] <= t <= last[k])
        if live > peak:
            peak, at = live, events[t][0]
    return peak, at
