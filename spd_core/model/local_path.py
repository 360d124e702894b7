"""Local path of SPD v15 (plan §6.3) and its exact sparse execution (DESIGN §1).

One sequence of layers, written once, executed two ways:

* **stride 8, per frame** — ``conv_s8_1``, ``conv_s8_2`` on the whole ``stride_8_map``
  (:meth:`LocalPath.stride8`). It does not depend on the queries and costs about as much as
  five queries, so the frame pass runs it once (``FrameFeatures.local_s8``) and every query of
  the frame shares it.
* **the rest, dense or at windows** (:meth:`LocalPath._run`): ×2 up, merge with L1, ``conv_m1``,
  ``conv_m2``, ×2 up, ``conv_u1``, ``conv_u2``, ×2 up, ``conv_f``. Dense: padded convs on full
  maps, ``F.interpolate`` ×2 (training, evaluation). Windows: per execution unit — one query's
  2×2 output pixels, or a tile of T×T output pixels shared by the queries inside it — the same
  layers on the small windows of each stage's grid that the unit's output depends on. Zero
  padding is reproduced by zeroing window positions outside the stage's map, and upsampling
  gathers the very source indices and weights ``F.interpolate`` uses, from global coordinates.
  The result equals the dense map at the unit's pixels to float round-off, borders included.

Windows are derived per axis by walking the layers backwards from the unit's output window
(:class:`AxisTable`): a 3×3 conv widens its input window by one on each side; a ×2 upsampling
needs the source span of its destination window's interpolation indices. For a query (2×2
output) this gives, per axis:

==========  ======  ======  =====================================
window      stride  width   what it holds
==========  ======  ======  =====================================
s8_2        8       7       ``local_s8`` gathered (conv_s8_2 out)
merge       4       10      up(s8_2) + proj_l1(L1 gathered)
m1          4       8       conv_m1 out
m2          4       6       conv_m2 out
u_in        2       8       up(m2)
u1          2       6       conv_u1 out
u2          2       4       conv_u2 out
f_in        1       4       up(u2)
f           1       2       conv_f out: the query's 2×2 pixels
==========  ======  ======  =====================================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = {"s8_2": 8, "merge": 4, "m1": 4, "m2": 4, "u_in": 2, "u1": 2, "u2": 2, "f_in": 1, "f": 1}
# The window path walked backwards from the output: (window, how it is made, the window it feeds)
BACKWARD = (
    ("f_in", "conv", "f"),
    ("u2", "up", "f_in"),
    ("u1", "conv", "u2"),
    ("u_in", "conv", "u1"),
    ("m2", "up", "u_in"),
    ("m1", "conv", "m2"),
    ("merge", "conv", "m1"),
    ("s8_2", "up", "merge"),
)
GATHERED = ("s8_2", "merge")  # windows read from full maps (local_s8, L1)
UPSAMPLED = ("merge", "u_in", "f_in")  # destinations of the ×2 upsamplings
QUERY_OUT = 2  # a query's output window: the 2×2 pixels around it
MAX_CACHED_TABLES = 16  # (image size, unit size) table pairs LocalPath keeps
TRACE_REFERENCE = 256  # axis whose window widths a traced (exported) graph uses for any size


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


@dataclass(frozen=True)
class AxisRows:
    """One axis's indices and weights for N execution units (rows of an :class:`AxisTable`).

    gather[key] long [N,w]: clamped global positions of a gathered window; inside[key] [N,w]:
    1 inside the stage's map, 0 outside (what zero padding sees); up[dst]: (i0, i1, w1) [N,w]
    window-local source indices of the ×2 upsampling into ``dst`` and the weight of i1
    (0 outside the map).
    """

    gather: dict[str, torch.Tensor]
    inside: dict[str, torch.Tensor]
    up: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class AxisTable:
    """Every window of one axis (rows or columns) for each unit origin ``o`` in [0, n-out]: a unit
    looks its row up instead of recomputing it. ``width[key]``: the window widths (the widest any
    origin needs; a narrower one is zero-masked at its end)."""

    def __init__(
        self, n: int, out: int, align_corners: bool, device: torch.device, widths: dict[str, int] | None = None
    ) -> None:
        """``widths``: fixed window widths (at least what any origin needs) instead of the widest
        origin's, for a traced graph where ``n`` is symbolic."""
        if widths is None and not 2 <= out <= n:
            raise ValueError(f"unit of {out} output pixels does not fit an axis of {n}")
        self.n, self.out = n, out
        size = {k: n // s for k, s in STRIDE.items()}
        origin = {"f": torch.arange(n - out + 1)}
        self.width = {"f": out}
        pos = {"f": origin["f"][:, None] + torch.arange(out)}
        up = {}
        for key, kind, dst in BACKWARD:
            if kind == "conv":  # a 3×3 conv: one more on each side
                origin[key], self.width[key] = origin[dst] - 1, self.width[dst] + 2
            else:  # ×2 upsampling: the span of the interpolation sources of the dst window
                i0, i1, lam = upsample_source_index(
                    pos[dst].clamp(0, size[dst] - 1), size[key], size[dst], align_corners
                )
                origin[key] = i0.min(1).values
                self.width[key] = widths[key] if widths else int((i1.max(1).values - origin[key]).max()) + 1
                up[dst] = (i0 - origin[key][:, None], i1 - origin[key][:, None], lam)
            pos[key] = origin[key][:, None] + torch.arange(self.width[key])
        inside = {k: ((p >= 0) & (p < size[k])).float() for k, p in pos.items()}
        columns = {f"gather_{k}": pos[k].clamp(0, size[k] - 1) for k in GATHERED}
        columns |= {f"{name}_{dst}": t for dst in UPSAMPLED for name, t in zip(("i0", "i1"), up[dst][:2], strict=True)}
        weights = {f"inside_{k}": t for k, t in inside.items()} | {f"w1_{d}": up[d][2] * inside[d] for d in UPSAMPLED}
        # two packed tables, so a lookup is two gathers; the names only slice them
        self._index, self._index_cols = self._pack(columns, device)
        self._weight, self._weight_cols = self._pack(weights, device)

    @staticmethod
    def _pack(cols: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, dict[str, slice]]:
        slices, start = {}, 0
        for name, t in cols.items():
            width = int(t.shape[1])  # a constant, also in a traced graph
            slices[name] = slice(start, start + width)
            start += width
        return torch.cat(list(cols.values()), 1).to(device), slices

    def rows(self, origin: torch.Tensor) -> AxisRows:
        """The windows of units at ``origin`` [N] (each in [0, n-out])."""
        ix, w = self._index[origin], self._weight[origin]
        col = {name: ix[:, s] for name, s in self._index_cols.items()}
        wt = {name: w[:, s] for name, s in self._weight_cols.items()}
        return AxisRows(
            gather={k: col[f"gather_{k}"] for k in GATHERED},
            inside={k[7:]: t for k, t in wt.items() if k.startswith("inside_")},
            up={d: (col[f"i0_{d}"], col[f"i1_{d}"], wt[f"w1_{d}"]) for d in UPSAMPLED},
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

    def up(self, x: torch.Tensor, dst: str) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=self.align_corners)


class _WindowOps:
    """Execute the local path on the windows [N,C,wy,wx] of N units (one batch element each)."""

    def __init__(self, bidx: torch.Tensor, rows: AxisRows, cols: AxisRows) -> None:
        self.bidx, self.ry, self.rx = bidx, rows, cols
        self._masks: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def mask(self, x: torch.Tensor, key: str) -> torch.Tensor:
        """Zero the window positions outside the stage's map (what zero padding sees); in place."""
        m = self._masks.get((key, x.dtype))
        if m is None:
            inside = self.ry.inside[key][:, :, None] * self.rx.inside[key][:, None, :]
            m = self._masks[(key, x.dtype)] = inside[:, None].to(x.dtype)
        return x.mul_(m)

    def gather(self, fmap: torch.Tensor, key: str) -> torch.Tensor:
        """Window ``key`` of a full map [B,C,h,w] -> [N,C,wy,wx] (channels_last), integer indices only:
        one row gather of whole C-vectors (a view of the map when it is channels_last, as encode keeps it)."""
        rows, cols = self.ry.gather[key], self.rx.gather[key]
        b, c, h, w = fmap.shape
        flat = fmap.permute(0, 2, 3, 1).reshape(b * h * w, c)
        at = (self.bidx[:, None, None] * h + rows[:, :, None]) * w + cols[:, None, :]
        x = flat.index_select(0, at.reshape(-1)).view(*at.shape, c)
        return self.mask(x.permute(0, 3, 1, 2), key)

    def conv(self, layer: nn.Conv2d, x: torch.Tensor, key: str) -> torch.Tensor:
        return self.mask(F.gelu(F.conv2d(x, layer.weight, layer.bias)), key)

    def up(self, x: torch.Tensor, dst: str) -> torch.Tensor:
        """×2 bilinear upsampling of a window [N,C,sy,sx] evaluated on window ``dst``.

        Rows then columns, in NHWC order: gather the two source lines of each output line as whole
        rows of a flat tensor and blend them with F.interpolate's weights, zeroed outside the map.
        The result is channels_last, the layout the next conv runs fastest in.
        """
        n, c, sy, sx = x.shape
        units = torch.arange(n, device=x.device)
        (i0, i1, w1), inside = self.ry.up[dst], self.ry.inside[dst]  # [N,dy]
        at = units[:, None] * sy
        flat = x.permute(0, 2, 3, 1).reshape(n * sy, sx * c)
        x = _lerp(flat, at + i0, at + i1, (inside - w1)[..., None], w1[..., None])  # [N,dy,sx*C]
        (j0, j1, v1), inside = self.rx.up[dst], self.rx.inside[dst]  # [N,dx]
        dy = i0.shape[1]
        at = ((units[:, None] * dy + torch.arange(dy, device=x.device)) * sx)[..., None]  # [N,dy,1]
        w0, w1 = (inside - v1)[:, None, :, None], v1[:, None, :, None]
        x = _lerp(x.reshape(n * dy * sx, c), at + j0[:, None], at + j1[:, None], w0, w1)  # [N,dy,dx,C]
        return x.permute(0, 3, 1, 2)


def _lerp(x: torch.Tensor, at0: torch.Tensor, at1: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
    """x[at0]·w0 + x[at1]·w1 for rows at0, at1 (any shape S) of x [M,R] -> [*S,R]; w0, w1
    broadcast against it. Two row gathers (whole rows: fast on the CPU) and two in-place blends."""
    r = x.shape[1]  # not -1: K may be 0
    lo = x.index_select(0, at0.reshape(-1)).view(*at0.shape, r).mul_(w0.to(x.dtype))
    return lo.add_(x.index_select(0, at1.reshape(-1)).view(*at1.shape, r).mul_(w1.to(x.dtype)))


class LocalPath(nn.Module):
    """stride_8_map + L1 -> log-depth, dense or at windows (plan §6.3 layer names)."""

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
        # the windows and the frame's maps are channels_last (SPDModel.encode): so are the weights,
        # or every conv call would convert them
        self.to(memory_format=torch.channels_last)

    def stride8(self, s8: torch.Tensor) -> torch.Tensor:
        """The stride-8 convs on the whole ``stride_8_map`` [B,s8_dim,H/8,W/8] -> ``local_s8`` [B,dim,H/8,W/8],
        once per frame (shared by every query)."""
        return F.gelu(self.conv_s8_2(F.gelu(self.conv_s8_1(s8))))

    def _run(self, ops: _DenseOps | _WindowOps, local_s8: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
        """The local path after the stride-8 convs, for either execution -> conv_f features."""
        x = ops.up(ops.gather(local_s8, "s8_2"), "merge")
        x = ops.mask(F.gelu(x + self.proj_l1(ops.gather(l1, "merge"))), "merge")
        x = ops.conv(self.conv_m1, x, "m1")
        x = ops.conv(self.conv_m2, x, "m2")
        x = ops.up(x, "u_in")
        x = ops.conv(self.conv_u1, x, "u1")
        x = ops.conv(self.conv_u2, x, "u2")
        x = ops.up(x, "f_in")
        return ops.conv(self.conv_f, x, "f")

    def dense(self, local_s8: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
        """Padded execution on full maps -> features [B,head_dim,H,W]."""
        return self._run(_DenseOps(self.align_corners), local_s8, l1)

    def at_windows(
        self,
        local_s8: torch.Tensor,
        l1: torch.Tensor,
        bidx: torch.Tensor,
        oy: torch.Tensor,
        ox: torch.Tensor,
        image_size: tuple[int, int],
        out: int | tuple[int, int] = QUERY_OUT,
    ) -> torch.Tensor:
        """Window execution -> features of the out×out output pixels from (oy, ox): [N,head_dim,oh,ow].

        ``bidx`` [N] batch index per unit; ``oy``/``ox`` [N] unit origins in [0, H-oh] / [0, W-ow];
        ``out`` 2 for queries (their 2×2 pixels), T for shared tiles (per axis when a tuple).
        """
        ty, tx = self.axis_tables(image_size, out, local_s8.device)
        return self._run(_WindowOps(bidx, ty.rows(oy), tx.rows(ox)), local_s8, l1)

    def axis_tables(
        self, image_size: tuple[int, int], out: int | tuple[int, int], device: torch.device
    ) -> tuple[AxisTable, AxisTable]:
        """(rows, columns) tables of an image size and unit size, built on first use and kept (kB each)."""
        outs = (out, out) if isinstance(out, int) else tuple(out)
        if torch.compiler.is_compiling() or torch.jit.is_tracing():  # exporting: sizes are symbolic
            return tuple(self._traced_table(n, o, device) for n, o in zip(image_size, outs, strict=True))
        key = (*image_size, *outs, self.align_corners, str(device))
        tables = self._tables.get(key)
        if tables is None:
            if len(self._tables) >= MAX_CACHED_TABLES:
                self._tables.clear()
            tables = tuple(AxisTable(n, o, self.align_corners, device) for n, o in zip(image_size, outs, strict=True))
            self._tables[key] = tables
        return tables

    def _traced_table(self, n: int, out: int, device: torch.device) -> AxisTable:
        """A table built inside a traced graph (part of it), with the widths of a concrete axis of
        TRACE_REFERENCE pixels: they do not grow with the axis beyond the smallest maps."""
        widths = AxisTable(TRACE_REFERENCE, out, self.align_corners, torch.device("cpu")).width
        return AxisTable(n, out, self.align_corners, device, widths)
