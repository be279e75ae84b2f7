"""Synthetic characters rendered from the TrueType fonts shipped inside matplotlib.

The seed's synthetic -> real case: clean printed glyphs, made varied by random stroke width,
affine warp, optional elastic distortion, blur and pixel noise, then framed like MNIST (glyph in a 20x20 box, centred by mass).
Deterministic for a seed: every random draw comes from one torch.Generator.
`syndigits` renders the ten digits; `synchars` any character set (e.g. digits + A-Z, 36 classes:
the large labelled source task for transfer learning), class i = the i-th character.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from string import ascii_uppercase

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

# Text fonts that have digit glyphs; symbol fonts (STIXSiz*, cmex/cmsy/cmmi) and the
# DejaVu*Display fonts (no digits) are excluded.
FONT_PATTERNS = ("DejaVu*.ttf", "STIXGeneral*.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf")
RENDER_PX = 64
DIGITS = "0123456789"
CHARSETS = {"digits": DIGITS, "alnum": DIGITS + ascii_uppercase}  # named character sets


def charset(name_or_chars: str) -> str:
    """A named set ('digits', 'alnum') or the characters themselves; each class once."""
    chars = CHARSETS.get(name_or_chars, name_or_chars)
    if len(chars) < 2 or len(set(chars)) != len(chars) or any(c.isspace() for c in chars):
        raise ValueError(
            f"charset {name_or_chars!r}: need at least 2 distinct, non-blank characters "
            f"(or one of {', '.join(CHARSETS)})"
        )
    return chars


def font_paths(chars: str = DIGITS) -> list[Path]:
    import matplotlib
    from matplotlib.ft2font import FT2Font

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = sorted({p for pat in FONT_PATTERNS for p in root.glob(pat)})
    usable = [p for p in found if all(FT2Font(str(p)).get_char_index(ord(c)) for c in chars)]
    if not usable:
        raise FileNotFoundError(f"no font with glyphs for every one of {chars!r} under {root}")
    return usable


def _render_glyph(path: Path, char: str) -> np.ndarray:
    from matplotlib.ft2font import FT2Font

    font = FT2Font(str(path))
    font.set_size(RENDER_PX, 72)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        font.set_text(char)
        font.draw_glyphs_to_bitmap()
    img = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    rows, cols = np.nonzero(img > 0.05)
    return img[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _mnist_frame(glyph: np.ndarray, side: int) -> np.ndarray:
    """Fit the glyph's longer side to 20/28 of the frame, then centre its mass (as MNIST did)."""
    box = max(2, round(side * 20 / 28))
    h, w = glyph.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    g = TF.resize(torch.from_numpy(glyph)[None], [nh, nw], antialias=True)[0].clamp(0, 1).numpy()
    out = np.zeros((side, side), np.float32)
    mass = g.sum()
    cy = (g.sum(1) * np.arange(nh)).sum() / mass
    cx = (g.sum(0) * np.arange(nw)).sum() / mass
    top = int(np.clip(round(side / 2 - cy), 0, side - nh))
    left = int(np.clip(round(side / 2 - cx), 0, side - nw))
    out[top : top + nh, left : left + nw] = g
    return out


def glyph_bank(side: int, chars: str = DIGITS) -> tuple[torch.Tensor, list[str]]:
    """(fonts, len(chars), side, side) clean, MNIST-framed glyphs and the font names."""
    paths = font_paths(chars)
    bank = np.stack([[_mnist_frame(_render_glyph(p, c), side) for c in chars] for p in paths])
    return torch.from_numpy(bank), [p.stem for p in paths]


def render(
    n: int,
    seed: int,
    side: int = 28,
    max_rotation: float = 15.0,
    noise: float = 0.05,
    bank: torch.Tensor | None = None,
    batch: int = 4096,
    balanced: bool = False,
    elastic: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n random glyphs of the bank's classes: images (n, 1, side, side) float32 in [0,1], labels,
    font index. `balanced`: every class n // K or n // K + 1 times (shuffled), else i.i.d.
    `elastic`: std of the smooth random displacement field in pixels (0: none; no RNG draw, so
    existing outputs stay byte-identical)."""
    if bank is None:
        bank, _ = glyph_bank(side)
    g = torch.Generator().manual_seed(seed)
    n_fonts, n_classes = bank.shape[0], bank.shape[1]
    if balanced:
        y = (torch.arange(n) % n_classes)[torch.randperm(n, generator=g)]
    else:
        y = torch.randint(0, n_classes, (n,), generator=g)
    font = torch.randint(0, n_fonts, (n,), generator=g)
    out = []
    for start in range(0, n, batch):
        yb, fb = y[start : start + batch], font[start : start + batch]
        out.append(_augment(bank[fb, yb][:, None], g, max_rotation, noise, elastic))
    x = torch.cat(out).numpy()
    return x, y.numpy().astype(np.int64), font.numpy()


def _augment(
    x: torch.Tensor, g: torch.Generator, max_rotation: float, noise: float, elastic: float = 0.0
) -> torch.Tensor:
    b = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=g)

    # stroke width: thicken (max-pool dilation) a third, thin (erosion) a sixth, keep the rest
    stroke = torch.rand(b, generator=g)
    thick = F.max_pool2d(x, 3, stride=1, padding=1)
    thin = -F.max_pool2d(-x, 3, stride=1, padding=1)
    x = torch.where((stroke < 1 / 3).view(-1, 1, 1, 1), thick, x)
    x = torch.where((stroke > 5 / 6).view(-1, 1, 1, 1), thin, x)

    # affine: rotation, anisotropic scale, shear, translation (output -> input sampling grid)
    rot = torch.deg2rad(uniform(-max_rotation, max_rotation))
    shear = uniform(-0.3, 0.3)
    sx, sy = uniform(0.85, 1.15), uniform(0.85, 1.15)
    tx, ty = uniform(-0.12, 0.12), uniform(-0.12, 0.12)
    cos, sin = torch.cos(rot), torch.sin(rot)
    theta = torch.stack(
        [
            torch.stack([cos / sx, (-sin + shear * cos) / sx, tx], 1),
            torch.stack([sin / sy, (cos + shear * sin) / sy, ty], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if elastic > 0:
        grid = grid + _elastic_field(x.shape, g, elastic)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # blur with a random sigma in [0.1, 1.0] (grouped: one kernel per image is costly; 4 bins)
    sigma = uniform(0.1, 1.0)
    bins = torch.bucketize(sigma, torch.tensor([0.325, 0.55, 0.775]))
    for k, s in enumerate((0.2, 0.45, 0.7, 0.9)):
        idx = (bins == k).nonzero().flatten()
        if len(idx):
            x[idx] = TF.gaussian_blur(x[idx], kernel_size=[5, 5], sigma=[s, s])

    # contrast + additive noise
    peak = uniform(0.75, 1.0).view(-1, 1, 1, 1)
    x = x / x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6) * peak
    x = x + noise * torch.randn(x.shape, generator=g)
    return x.clamp_(0, 1)


def _elastic_field(shape: torch.Size, g: torch.Generator, std_px: float) -> torch.Tensor:
    """A smooth random displacement field (Simard et al. 2003): white noise on a coarse 4x4 grid,
    bicubically upsampled (the smoothing), scaled to `std_px` pixels, in grid_sample units."""
    b, _, h, w = shape
    coarse = torch.randn((b, 2, 4, 4), generator=g)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    field = field / field.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    scale = torch.tensor([2.0 / w, 2.0 / h]).view(1, 2, 1, 1)  # pixels -> [-1, 1] grid units
    return (field * std_px * scale).permute(0, 2, 3, 1)
