"""Episode frames and side-by-side comparison videos (imageio + MuJoCo's renderer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from steergym.registry import make_env
from steergym.rollout import outcome_frame, reset_policy


def episode_frames(env_id: str, policy: Any, seed: int, env_kwargs: dict[str, Any] | None = None
                   ) -> tuple[list[np.ndarray], bool]:
    """Rendered (H, W, 3) uint8 frames of one episode of `policy` (act/reset) from reset seed `seed`."""
    env = make_env(env_id, render_mode="rgb_array", **(env_kwargs or {}))
    try:
        obs, info = env.reset(seed=seed)
        reset_policy(policy, seed)
        frames, success, done = [env.render()], bool(info.get("is_success", False)), False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy.act(obs))
            frames.append(env.render())
            success = success or bool(info.get("is_success", False))
            done = terminated or truncated
    finally:
        env.close()
    return frames, success


def side_by_side(episodes: list[list[tuple[list[np.ndarray], bool]]], labels: list[str], fps: float,
                 path: str | os.PathLike) -> Path:
    """Write an .mp4/.gif: for each row of `episodes` (one (frames, success) per policy, same seed),
    the policies' frames next to each other, the shorter held on its last frame, then one second
    of the final frames framed green (success) or red (failure) and labelled."""
    import imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    if path.suffix.lower() == ".gif":
        writer = imageio.get_writer(tmp, mode="I", duration=1000.0 / fps, loop=0)
    else:
        writer = imageio.get_writer(tmp, fps=fps, macro_block_size=2)
    try:
        for row in episodes:
            length = max(len(frames) for frames, _ in row)
            for t in range(length):
                writer.append_data(np.hstack([
                    _label(frames[min(t, len(frames) - 1)], label) for (frames, _), label in zip(row, labels)
                ]))
            held = np.hstack([
                outcome_frame(frames[-1], success, f"{label}: {'success' if success else 'failure'}")
                for (frames, success), label in zip(row, labels)
            ])
            for _ in range(max(1, round(fps))):
                writer.append_data(held)
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return path


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(10, img.height // 16))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    x0, y0, x1, y1 = draw.textbbox((4, img.height - 4), text, font=font, anchor="lb")
    draw.rectangle((x0 - 2, y0 - 2, x1 + 2, y1 + 2), fill=(0, 0, 0))
    draw.text((4, img.height - 4), text, fill=(255, 255, 255), font=font, anchor="lb")
    return np.asarray(img)
