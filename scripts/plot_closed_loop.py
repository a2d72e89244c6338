#!/usr/bin/env python3
"""Plots a closed-loop benchmark's series (written by `moectl bench closed-loop
--plot FILE`): per contender, the cost-model critical path, the measured step
time, the drop rate and the knobs in force over the steps.

usage: plot_closed_loop.py SERIES_JSON OUT.(png|svg)
"""
import json
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def main():
    series_path, out = sys.argv[1:3]
    with open(series_path) as f:
        doc = json.load(f)
    contenders = doc['contenders']
    panels = [('latency_us', 'critical path, cost model (us)'),
              ('measured_us', 'step time, measured (us)'),
              ('drop_rate', 'drop rate'),
              ('capacity_factor', 'capacity factor'),
              ('top_k', 'top-k'),
              ('max_abs_bias', 'max |expert bias|')]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.3 * len(panels)), sharex=True)
    for ax, (key, title) in zip(axes, panels):
        for c in contenders:
            ax.plot(c['step'], c[key], label=c['name'], linewidth=1)
        ax.set_ylabel(title, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=3, loc='upper right')
    axes[0].set_title(f'closed-loop benchmark: {doc["scenario"]}')
    axes[-1].set_xlabel('engine step')
    fig.tight_layout()
    fig.savefig(out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
