"""gymnasium's RecordVideo on registered ids, steered ones included (MoviePy is a dependency).

RecordVideo renders once at reset and once per step of the env it wraps: for a steered id that is
once per agent step, i.e. the frame after each executed chunk for DSRL (H control steps), so a
video holds 1 + (agent steps) frames.
"""

from __future__ import annotations

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
from gymnasium.wrappers import RecordVideo

CARROT = "steergym/WidowXPutCarrotOnPlate"


@pytest.mark.parametrize("env_id, kwargs, agent_steps", [
    # chunks of H=4 control steps: 4 + 4 + 2 (the base TimeLimit ends the third chunk)
    (f"{CARROT}-DSRL-v0", {"base_max_episode_steps": 10}, 3),
    (f"{CARROT}-Residual-v0", {"base_max_episode_steps": 3}, 3),
    (f"{CARROT}-v0", {"max_episode_steps": 3}, 3),
])
def test_record_video_writes_one_frame_per_reset_and_agent_step(env_id, kwargs, agent_steps, tmp_path):
    env = RecordVideo(gym.make(env_id, render_mode="rgb_array", render_size=(64, 96), **kwargs),
                      str(tmp_path / "videos"), episode_trigger=lambda episode: True)
    try:
        env.reset(seed=0)
        env.action_space.seed(0)
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            steps, done = steps + 1, terminated or truncated
    finally:
        env.close()
    assert steps == agent_steps
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["rl-video-episode-0.mp4"]
    reader = imageio.get_reader(videos[0], "ffmpeg")
    try:
        frames = [frame for frame in reader]
    finally:
        reader.close()
    assert len(frames) == 1 + agent_steps
    assert frames[0].shape == (64, 96, 3) and np.ptp(frames[-1]) > 0  # the scene, not a blank frame
