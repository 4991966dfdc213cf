"""A small log-log line plot drawn with Pillow (no matplotlib needed)."""

from __future__ import annotations

import math
from pathlib import Path

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
          (0, 0, 0), (100, 100, 255)]
W, H = 960, 600
LEFT, RIGHT, TOP, BOTTOM = 80, 260, 50, 60


def line_plot(series: dict[str, list[tuple[float, float]]], path: Path, title: str,
              xlabel: str, ylabel: str) -> Path | None:
    """Each series is [(x, y), ...]; both axes logarithmic. Returns the path written, or
    None without Pillow."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        return None
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    if not xs:
        return None
    x0, x1 = math.log2(min(xs)), math.log2(max(xs))
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float, y: float) -> tuple[float, float]:
        return (LEFT + (math.log2(x) - x0) / (x1 - x0) * pw,
                TOP + ph - (math.log10(y) - y0) / (y1 - y0) * ph)

    d.rectangle([LEFT, TOP, LEFT + pw, TOP + ph], outline=(120, 120, 120))
    for e in range(y0, y1 + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** e
            if not 10.0 ** y0 <= v <= 10.0 ** y1:
                continue
            _, y = px(2 ** x0, v)
            d.line([LEFT, y, LEFT + pw, y], fill=(225, 225, 225) if m == 1 else (242, 242, 242))
            d.text((LEFT - 8, y), f"{v:g}", fill=(60, 60, 60), font=font, anchor="rm")
    for x in sorted(set(xs)):
        gx, _ = px(x, 10.0 ** y0)
        d.line([gx, TOP, gx, TOP + ph], fill=(235, 235, 235))
        d.text((gx, TOP + ph + 8), f"{x:g}", fill=(60, 60, 60), font=font, anchor="mt")
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        coords = [px(x, y) for x, y in sorted(pts)]
        if len(coords) > 1:
            d.line(coords, fill=color, width=2)
        for cx, cy in coords:
            d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=color)
        ly = TOP + 10 + 18 * i
        d.line([LEFT + pw + 15, ly, LEFT + pw + 40, ly], fill=color, width=3)
        d.text((LEFT + pw + 46, ly), name, fill=(30, 30, 30), font=font, anchor="lm")
    d.text((W / 2, 20), title, fill=(20, 20, 20), font=font, anchor="mm")
    d.text((LEFT + pw / 2, H - 20), xlabel, fill=(20, 20, 20), font=font, anchor="mm")
    d.text((20, TOP + ph / 2), ylabel, fill=(20, 20, 20), font=font, anchor="mm")
    img.save(path)
    return path
