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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

WINDOW = {
    "s8_in": 11,
    "s8_1": 9,
    "s8_2": 7,
    "merge": 10,
    "m1": 8,
    "m2": 6,
    "u_in": 8,
    "u1": 6,
    "u2": 4,
    "f_in": 4,
    "f": 2,
}
STRIDE = {
    "s8_in": 8,
    "s8_1": 8,
    "s8_2": 8,
    "merge": 4,
    "m1": 4,
    "m2": 4,
    "u_in": 2,
    "u1": 2,
    "u2": 2,
    "f_in": 1,
    "f": 1,
}


def window_origins(o1: torch.Tensor) -> dict[str, torch.Tensor]:
    """Walk the dense path backwards from the output origin ``o1`` (one axis, any shape)."""
    o2 = torch.div(o1 - 1, 2, rounding_mode="floor") - 1
    o4 = torch.div(o2 - 2, 2, rounding_mode="floor") - 1
    o8 = torch.div(o4 - 2, 2, rounding_mode="floor") - 1
    return {
        "s8_in": o8 - 2,
        "s8_1": o8 - 1,
        "s8_2": o8,
        "merge": o4 - 2,
        "m1": o4 - 1,
        "m2": o4,
        "u_in": o2 - 2,
        "u1": o2 - 1,
        "u2": o2,
        "f_in": o1 - 1,
        "f": o1,
    }


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


MAX_CACHED_SIZES = 8  # image sizes whose window tables LocalPath keeps
GATHERED = ("s8_in", "merge")  # windows read from the full maps
UPS = (("s8_2", "merge"), ("m2", "u_in"), ("u2", "f_in"))  # ×2 upsampling: (source, destination) windows


@dataclass(frozen=True)
class AxisTable:
    """Every index and weight the windows of one axis (rows or columns) need, for each output
    origin ``o1`` in [0, n-2]; a query looks its row up instead of recomputing them.

    ``index`` long [n-1, Li]: clamped global indices of the gathered windows, then per upsampling
    the local source indices i0, i1. ``weight`` float32 [n-1, Lf]: per window 1 inside the stage's
    map and 0 outside, then per upsampling the weight of i1 (0 outside the map).
    """

    index: torch.Tensor
    weight: torch.Tensor

    INDEX_COLUMNS = (
        *((f"gather_{k}", WINDOW[k]) for k in GATHERED),
        *((f"{i}_{dst}", WINDOW[dst]) for _, dst in UPS for i in ("i0", "i1")),
    )
    WEIGHT_COLUMNS = (*((f"inside_{k}", w) for k, w in WINDOW.items()), *((f"w1_{dst}", WINDOW[dst]) for _, dst in UPS))
    INDEX_WIDTHS = tuple(w for _, w in INDEX_COLUMNS)
    WEIGHT_WIDTHS = tuple(w for _, w in WEIGHT_COLUMNS)

    @classmethod
    def build(cls, n: int, align_corners: bool, device: torch.device) -> AxisTable:
        """Tables of an axis of ``n`` output pixels (stage ``key`` has ``n // STRIDE[key]``)."""
        o = window_origins(torch.arange(n - 1))
        size = {k: n // STRIDE[k] for k in WINDOW}
        pos = {k: o[k][:, None] + torch.arange(w) for k, w in WINDOW.items()}  # global positions [n-1, w]
        inside = {k: ((p >= 0) & (p < size[k])).float() for k, p in pos.items()}
        index = [pos[k].clamp(0, size[k] - 1) for k in GATHERED]
        weight = list(inside.values())
        for src, dst in UPS:
            i0, i1, lam = upsample_source_index(pos[dst].clamp(0, size[dst] - 1), size[src], size[dst], align_corners)
            index += [i0 - o[src][:, None], i1 - o[src][:, None]]
            weight.append(lam * inside[dst])
        return cls(torch.cat(index, 1).to(device), torch.cat(weight, 1).to(device))

    def lookup(self, origin: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Rows of the tables for output origins ``origin`` [N]: name -> [N, window] (index, weight)."""
        index = torch.split(self.index[origin], self.INDEX_WIDTHS, dim=1)
        weight = torch.split(self.weight[origin], self.WEIGHT_WIDTHS, dim=1)
        return (
            {name: t for (name, _), t in zip(self.INDEX_COLUMNS, index, strict=True)},
            {name: t for (name, _), t in zip(self.WEIGHT_COLUMNS, weight, strict=True)},
        )


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
    """Execute the local path on per-query windows [N,C,w,w] (N queries, one batch each), with the
    indices and weights of each query's rows and columns looked up in the image size's tables."""

    def __init__(
        self, bidx: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, tables: tuple[AxisTable, AxisTable]
    ) -> None:
        self.bidx = bidx
        (self.iy, self.wy), (self.ix, self.wx) = tables[0].lookup(oy), tables[1].lookup(ox)
        self._masks: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def mask(self, x: torch.Tensor, key: str) -> torch.Tensor:
        """Zero the window positions outside the stage's map (what zero padding sees)."""
        m = self._masks.get((key, x.dtype))
        if m is None:
            inside = self.wy[f"inside_{key}"][:, :, None] * self.wx[f"inside_{key}"][:, None, :]
            m = self._masks[(key, x.dtype)] = inside[:, None].to(x.dtype)
        return x * m

    def gather(self, fmap: torch.Tensor, key: str) -> torch.Tensor:
        """Window ``key`` of a full map [B,C,h,w] -> [N,C,win,win], integer indices only."""
        rows, cols = self.iy[f"gather_{key}"], self.ix[f"gather_{key}"]
        x = fmap[self.bidx[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        return self.mask(x.permute(0, 3, 1, 2), key)

    def conv(self, layer: nn.Conv2d, x: torch.Tensor, key: str) -> torch.Tensor:
        return self.mask(F.gelu(F.conv2d(x, layer.weight, layer.bias)), key)

    def up(self, x: torch.Tensor, src: str, dst: str) -> torch.Tensor:
        """×2 bilinear upsampling of window ``src`` [N,C,s,s] evaluated on window ``dst`` [N,C,d,d].

        Columns then rows: gather the two source lines per output line (whole C-vectors, NHWC
        order) and blend them with F.interpolate's weights, zeroed outside the map (the ``dst``
        mask). The result is channels_last, the layout the next conv runs fastest in.
        """
        n = torch.arange(x.shape[0], device=x.device)[:, None]
        x = self._lerp_lines(x.permute(0, 3, 2, 1), n, self.ix, self.wx, dst)  # [N, cols, rows, C]
        x = self._lerp_lines(x.transpose(1, 2), n, self.iy, self.wy, dst)
        return x.permute(0, 3, 1, 2)  # [N, rows, cols, C] -> [N,C,d,d]

    @staticmethod
    def _lerp_lines(
        x: torch.Tensor, n: torch.Tensor, index: dict[str, torch.Tensor], weight: dict[str, torch.Tensor], dst: str
    ) -> torch.Tensor:
        """Lines of x [N,s,...] at the ``dst`` window's positions -> [N,d,...], zero outside the map."""
        w1 = weight[f"w1_{dst}"].to(x.dtype)[:, :, None, None]
        w0 = weight[f"inside_{dst}"].to(x.dtype)[:, :, None, None] - w1
        return x[n, index[f"i0_{dst}"]] * w0 + x[n, index[f"i1_{dst}"]] * w1


class LocalPath(nn.Module):
    """stride_8_map + L1 -> log-depth, dense or at query windows (plan §6.3 layer names)."""

    def __init__(
        self, l1_dim: int, s8_dim: int = 64, dim: int = 64, head_dim: int = 32, align_corners: bool = False
    ) -> None:
        super().__init__()
        self.align_corners = align_corners
        self._tables: dict[tuple, tuple[AxisTable, AxisTable]] = {}  # see axis_tables

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

    def at_windows(
        self,
        s8: torch.Tensor,
        l1: torch.Tensor,
        bidx: torch.Tensor,
        oy: torch.Tensor,
        ox: torch.Tensor,
        image_size: tuple[int, int],
    ) -> torch.Tensor:
        """Window execution -> features of the 2×2 output pixels at (oy, ox): [N,head_dim,2,2].

        ``bidx`` [N] batch index per query; ``oy``/``ox`` [N] output origins, already clamped
        to [0, H-2] / [0, W-2].
        """
        return self._run(_WindowOps(bidx, oy, ox, self.axis_tables(image_size, s8.device)), s8, l1)

    def axis_tables(self, image_size: tuple[int, int], device: torch.device) -> tuple[AxisTable, AxisTable]:
        """(rows, columns) tables of an image size, built on first use and kept (a few kB each).

        While exporting or tracing (sizes symbolic) they are built afresh: part of the graph."""
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return tuple(AxisTable.build(n, self.align_corners, device) for n in image_size)
        key = (*image_size, self.align_corners, str(device))
        tables = self._tables.get(key)
        if tables is None:
            if len(self._tables) >= MAX_CACHED_SIZES:
                self._tables.clear()
            tables = self._tables[key] = tuple(AxisTable.build(n, self.align_corners, device) for n in image_size)
        return tables
