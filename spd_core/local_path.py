"""Local path of SPD v15 (plan §6.3) and its exact sparse execution (DESIGN §1).

One sequence of layers, written once in :meth:`LocalPath._run`, executed two ways:

* **dense** — padded convs on the full maps, ×2 bilinear upsampling:
  ``stride_8_map`` [B,64,H/8,W/8] + L1 [B,C1,H/4,W/4] -> log-depth [B,1,H,W] (training, evaluation).
* **windows** — per query, the same layers on the small windows of each stage's grid that the
  2×2 output pixels around the query depend on. Zero padding is reproduced by zeroing window
  positions outside the stage's map, and upsampling gathers the very source indices and
  weights ``F.interpolate`` uses, from global coordinates. The result equals the dense map
  sampled bilinearly at the query to float round-off, borders and corners included.

Window table (sizes fixed per stage; origins from the output origin ``o1``, ``//`` = floor):

==========  ======  ======  ========================
stage key   stride  window  origin
==========  ======  ======  ========================
s8_in       8       11      o8 - 2   (stride_8_map gathered)
s8_1        8       9       o8 - 1
s8_2        8       7       o8 = (o4 - 2) // 2 - 1
merge       4       10      o4 - 2   (L1 gathered)
m1          4       8       o4 - 1
m2          4       6       o4 = (o2 - 2) // 2 - 1
u_in        2       8       o2 - 2
u1          2       6       o2 - 1
u2          2       4       o2 = (o1 - 1) // 2 - 1
f_in        1       4       o1 - 1
f           1       2       o1 = floor(v), floor(u) clamped to H-2, W-2
==========  ======  ======  ========================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WINDOW = {"s8_in": 11, "s8_1": 9, "s8_2": 7, "merge": 10, "m1": 8, "m2": 6,
          "u_in": 8, "u1": 6, "u2": 4, "f_in": 4, "f": 2}  # fmt: skip
STRIDE = {"s8_in": 8, "s8_1": 8, "s8_2": 8, "merge": 4, "m1": 4, "m2": 4,
          "u_in": 2, "u1": 2, "u2": 2, "f_in": 1, "f": 1}  # fmt: skip


def window_origins(o1: torch.Tensor) -> dict[str, torch.Tensor]:
    """Walk the dense path backwards from the output origin ``o1`` (one axis, any shape)."""
    o2 = torch.div(o1 - 1, 2, rounding_mode="floor") - 1
    o4 = torch.div(o2 - 2, 2, rounding_mode="floor") - 1
    o8 = torch.div(o4 - 2, 2, rounding_mode="floor") - 1
    return {"s8_in": o8 - 2, "s8_1": o8 - 1, "s8_2": o8, "merge": o4 - 2, "m1": o4 - 1, "m2": o4,
            "u_in": o2 - 2, "u1": o2 - 1, "u2": o2, "f_in": o1 - 1, "f": o1}  # fmt: skip


def upsample_source_index(
    t: torch.Tensor, n_in: int, n_out: int, align_corners: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices (i0, i1) and weight of i1 for output indices ``t`` of a bilinear resize.

    The same formula as PyTorch's ``F.interpolate(mode="bilinear")`` (clamping included).
    """
    t = t.float()
    if align_corners:
        src = t * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        src = ((t + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
    return i0, i1, src - i0


class _DenseOps:
    """Execute the local path on full maps: padded convs, ``F.interpolate`` ×2."""

    def __init__(self, align_corners: bool) -> None:
        self.align_corners = align_corners

    def gather(self, fmap: torch.Tensor, key: str) -> torch.Tensor:
        return fmap

    def mask(self, x: torch.Tensor, key: str) -> torch.Tensor:
        return x

    def conv(self, layer: nn.Conv2d, x: torch.Tensor, key: str) -> torch.Tensor:
        return F.gelu(layer(x))

    def up(self, x: torch.Tensor, src: str, dst: str) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=self.align_corners)


class _WindowOps:
    """Execute the local path on per-query windows [N,C,w,w] (N queries, one batch each)."""

    def __init__(self, bidx: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor,
                 image_size: tuple[int, int], align_corners: bool) -> None:  # fmt: skip
        self.bidx = bidx
        self.oy, self.ox = window_origins(oy), window_origins(ox)
        self.image_size = image_size
        self.align_corners = align_corners
        self._masks: dict[str, torch.Tensor] = {}

    def _map_size(self, key: str) -> tuple[int, int]:
        s = STRIDE[key]
        return self.image_size[0] // s, self.image_size[1] // s

    def _axes(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Global row and column indices of the window ``key``: [N,w] each."""
        r = torch.arange(WINDOW[key], device=self.bidx.device)
        return self.oy[key][:, None] + r, self.ox[key][:, None] + r

    def _inside(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Which rows and columns of window ``key`` lie inside the stage's map: [N,w] bool each."""
        rows, cols = self._axes(key)
        h, w = self._map_size(key)
        return (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)

    def mask(self, x: torch.Tensor, key: str) -> torch.Tensor:
        """Zero the window positions outside the stage's map (what zero padding sees)."""
        m = self._masks.get((key, x.dtype))
        if m is None:
            inside_r, inside_c = self._inside(key)
            m = self._masks[(key, x.dtype)] = (inside_r[:, :, None] & inside_c[:, None, :])[:, None].to(x.dtype)
        return x * m

    def gather(self, fmap: torch.Tensor, key: str) -> torch.Tensor:
        """Window ``key`` of a full map [B,C,h,w] -> [N,C,win,win], integer indices only."""
        rows, cols = self._axes(key)
        h, w = fmap.shape[-2:]
        x = fmap[self.bidx[:, None, None], :, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
        return self.mask(x.permute(0, 3, 1, 2), key)

    def conv(self, layer: nn.Conv2d, x: torch.Tensor, key: str) -> torch.Tensor:
        return self.mask(F.gelu(F.conv2d(x, layer.weight, layer.bias)), key)

    def up(self, x: torch.Tensor, src: str, dst: str) -> torch.Tensor:
        """×2 bilinear upsampling of window ``src`` [N,C,s,s] evaluated on window ``dst`` [N,C,d,d].

        Columns then rows: gather the two source lines per output line (whole C-vectors, NHWC
        order) and blend them with F.interpolate's weights, zeroed outside the map (the ``dst``
        mask). The result is channels_last, the layout the next conv runs fastest in.
        """
        (h_in, w_in), (h_out, w_out) = self._map_size(src), self._map_size(dst)
        rows, cols = self._axes(dst)
        inside_r, inside_c = self._inside(dst)
        n = torch.arange(x.shape[0], device=x.device)[:, None]
        x = x.permute(0, 3, 2, 1)  # [N, cols, rows, C]
        x = self._lerp_lines(x, n, cols.clamp(0, w_out - 1), inside_c, self.ox[src], w_in, w_out)
        x = self._lerp_lines(x.transpose(1, 2), n, rows.clamp(0, h_out - 1), inside_r, self.oy[src], h_in, h_out)
        return x.permute(0, 3, 1, 2)  # [N, rows, cols, C] -> [N,C,d,d]

    def _lerp_lines(self, x: torch.Tensor, n: torch.Tensor, t: torch.Tensor, inside: torch.Tensor,
                    origin: torch.Tensor, n_in: int, n_out: int) -> torch.Tensor:  # fmt: skip
        """Lines of x [N,s,...] at output indices ``t`` [N,d] -> [N,d,...], zero where not ``inside``."""
        i0, i1, lam = upsample_source_index(t, n_in, n_out, self.align_corners)
        w1 = (lam * inside).to(x.dtype)[:, :, None, None]
        w0 = inside.to(x.dtype)[:, :, None, None] - w1
        return x[n, i0 - origin[:, None]] * w0 + x[n, i1 - origin[:, None]] * w1


class LocalPath(nn.Module):
    """stride_8_map + L1 -> log-depth, dense or at query windows (plan §6.3 layer names)."""

    def __init__(self, l1_dim: int, s8_dim: int = 64, dim: int = 64, head_dim: int = 32,
                 align_corners: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.align_corners = align_corners

        def conv3(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size=3, padding=1)

        self.conv_s8_1 = conv3(s8_dim, dim)
        self.conv_s8_2 = conv3(dim, dim)
        self.proj_l1 = nn.Conv2d(l1_dim, dim, kernel_size=1)
        self.conv_m1 = conv3(dim, dim)
        self.conv_m2 = conv3(dim, dim)
        self.conv_u1 = conv3(dim, dim)
        self.conv_u2 = conv3(dim, dim)
        self.conv_f = conv3(dim, head_dim)

    def _run(self, ops: _DenseOps | _WindowOps, s8: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
        """The local path once, for either execution. Returns conv_f features [.,head_dim,.,.]."""
        x = ops.conv(self.conv_s8_1, ops.gather(s8, "s8_in"), "s8_1")
        x = ops.conv(self.conv_s8_2, x, "s8_2")
        x = ops.up(x, "s8_2", "merge")
        x = ops.mask(F.gelu(x + self.proj_l1(ops.gather(l1, "merge"))), "merge")
        x = ops.conv(self.conv_m1, x, "m1")
        x = ops.conv(self.conv_m2, x, "m2")
        x = ops.up(x, "m2", "u_in")
        x = ops.conv(self.conv_u1, x, "u1")
        x = ops.conv(self.conv_u2, x, "u2")
        x = ops.up(x, "u2", "f_in")
        return ops.conv(self.conv_f, x, "f")

    def dense(self, s8: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
        """Padded execution on full maps -> features [B,head_dim,H,W]."""
        return self._run(_DenseOps(self.align_corners), s8, l1)

    def at_windows(self, s8: torch.Tensor, l1: torch.Tensor, bidx: torch.Tensor, oy: torch.Tensor,
                   ox: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:  # fmt: skip
        """Window execution -> features of the 2×2 output pixels at (oy, ox): [N,head_dim,2,2].

        ``bidx`` [N] batch index per query; ``oy``/``ox`` [N] output origins, already clamped
        to [0, H-2] / [0, W-2].
        """
        return self._run(_WindowOps(bidx, oy, ox, image_size, self.align_corners), s8, l1)
