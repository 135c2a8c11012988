"""Diagnostic for benchmarks/ptr.py: does single-task CQL learn one of PTR's *prior* tasks from its
50 mixed-quality episodes at all, with PTR's settings and with gamma 0.99 / alpha 5 / batch 128?

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/ptr_diagnostic.py steergym/WidowXPutSpoonOnTowel-v0 5000

Reads the datasets benchmarks/ptr.py collected into --work /work/ptr_work (argument 3 overrides the
dataset folder); prints one JSON line (success over 20 episodes, q_data after training).
"""
import json
import sys
import time

import gymnasium as gym
import torch

torch.set_num_threads(1)
from steergym.algorithms.calql import CalQL
from steergym.algorithms.ptr import ptr_calql_config
from steergym.algorithms.multitask_runs import load_task_datasets
from steergym.bench.evaluate import evaluate

task, steps = sys.argv[1], int(sys.argv[2])
root = sys.argv[3] if len(sys.argv) > 3 else "/work/ptr_work/datasets"
name = f"ptr/{task.split('/')[1].removesuffix('-v0')}/mixed-v0"
(_, data), = load_task_datasets([name], root).items()
out = {}
for label, cfg in (("ptr_settings", ptr_calql_config(log_every=500)),
                   ("gamma99_alpha5_b128", ptr_calql_config(discount=0.99, cql_alpha=5.0, batch_size=128,
                                                            critic_hidden=(256, 256), log_every=500))):
    env = gym.make(task)
    agent = CalQL(env, cfg, seed=0)
    env.close()
    t = time.time()
    agent.pretrain(data, steps, progress=False)
    r = evaluate(task, lambda o: agent.predict(o)[0], episodes=20, seed=0, progress=False)
    out[label] = {"success": r.success_rate, "seconds": round(time.time() - t), "q_data": agent.history[-1]["q_data"]}
    print(label, out[label], flush=True)
print(json.dumps({"task": task, "steps": steps, "rows": len(data), **out}))
