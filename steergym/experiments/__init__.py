"""Experiments: a spec (tasks x methods x seeds x configs, a budget) run as one Ray Tune job.

    steergym run benchmarks/specs/steering.json --out runs/steering

`spec` loads and validates a spec and expands it into trials (no Ray); `runner` runs them on Ray Tune
(imported only when called: `import steergym` never imports Ray); `methods` is the table of the
trainers a spec may name and how one trial calls its run function.
"""
