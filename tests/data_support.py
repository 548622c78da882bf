"""Films generated with ffmpeg for the dataset tests, with what each shot must become."""

from __future__ import annotations

import subprocess
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from cinema_cli.assemble.ffmpeg import ffmpeg_exe

FPS = 12
SIZE = "160x80"  # 2:1 already: the crop is the whole frame

# (lavfi source, seconds, how it joins the shot before, what the filters must say)
SHOTS = [
    ("testsrc", 2.0, None, []),
    ("smptebars", 2.0, "cut", []),
    ("rgbtestsrc", 2.0, "cut", []),
    ("testsrc2", 2.0, "dissolve", []),
    ("testsrc,lutrgb=r=val/9:g=val/9:b=val/9", 2.0, "cut", ["too_dark"]),
    ("color=c=0x707880", 2.0, "cut", ["flat"]),
    ("testsrc", 2.0, "cut", ["near_duplicate"]),  # shot 0 again
    ("smptehdbars[s];[s][sub]overlay", 2.0, "cut", ["subtitles"]),
    ("color=c=0xC03020,noise=alls=40:allf=t", 0.5, "cut", ["too_short"]),
    ("pal75bars", 2.0, "cut", []),
]
DISSOLVE = 1.0  # seconds of the crossfade into shot 3


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def subtitle_png(path: Path, width: int, height: int) -> Path:
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, height // 8))
    draw.text((width // 2, round(height * 0.85)), "I never said that to her.", font=font, anchor="mm",
              fill=(255, 255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0, 255))
    image.save(path)
    return path


def _source(spec: str, seconds: float, size: str) -> str:
    name, _, rest = spec.partition(",")
    if name.startswith("color="):
        return f"{name}:s={size}:r={FPS}:d={seconds}" + (f",{rest}" if rest else "")
    base, _, chain = name.partition("[")
    head = f"{base}=s={size}:r={FPS}:d={seconds}" if "=" not in base else f"{base}:s={size}:r={FPS}:d={seconds}"
    return head + (f",{rest}" if rest else "") + (f"[{chain}" if chain else "")


def make_film(path: Path, size: str = SIZE) -> Path:
    """The SHOTS film: hard cuts, a one-second crossfade, dark, flat, repeated, subtitled
    and too-short shots."""
    width, height = map(int, size.split("x"))
    sub = subtitle_png(path.with_suffix(".sub.png"), width, height)
    graph, inputs = [], ["-loop", "1", "-i", str(sub)]
    for i, (spec, seconds, _, _) in enumerate(SHOTS):
        source = _source(spec, seconds, size).replace("[sub]", "[0:v]").replace("[s]", f"[s{i}]")
        if "[s" in source:
            first, rest = source.split(f"[s{i}];", 1)
            graph.append(f"{first}[s{i}];{rest.replace('overlay', 'overlay=shortest=1')},"
                         f"format=yuv420p,settb=1/{FPS},setsar=1[v{i}]")
        else:
            graph.append(f"{source},format=yuv420p,settb=1/{FPS},setsar=1[v{i}]")
    dissolve_at = next(i for i, shot in enumerate(SHOTS) if shot[2] == "dissolve")
    before = "".join(f"[v{i}]" for i in range(dissolve_at))
    graph.append(f"{before}concat=n={dissolve_at}:v=1,settb=1/{FPS}[a]")
    offset = sum(s[1] for s in SHOTS[:dissolve_at]) - DISSOLVE
    graph.append(f"[a][v{dissolve_at}]xfade=transition=fade:duration={DISSOLVE}:offset={offset}[b]")
    after = "".join(f"[v{i}]" for i in range(dissolve_at + 1, len(SHOTS)))
    graph.append(f"[b]{after}concat=n={len(SHOTS) - dissolve_at}:v=1,format=yuv420p[out]")
    ffmpeg(*inputs, "-filter_complex", ";".join(graph), "-map", "[out]", "-r", str(FPS), "-c:v", "libx264",
           "-g", str(FPS), str(path))
    sub.unlink()
    return path


def make_letterboxed(path: Path) -> Path:
    """A 2.39:1 picture in a 16:9 frame (192x108, bars of 14 rows): two shots, a hard cut."""
    graph = (f"testsrc=s=192x80:r={FPS}:d=2[a];smptebars=s=192x80:r={FPS}:d=2[b];[a][b]concat=n=2:v=1,"
             "pad=192:108:0:14:black,format=yuv420p[out]")
    ffmpeg("-filter_complex", graph, "-map", "[out]", "-c:v", "libx264", str(path))
    return path
