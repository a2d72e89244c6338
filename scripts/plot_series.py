#!/usr/bin/env python3
"""Draws the figures moectl asks for (`moectl plot`, `moectl bench closed-loop
--plot`): stacked panels over one shared x axis, with vertical markers (the
epochs: a new setting in force) across every panel.

usage: plot_series.py FIGURE_JSON OUT.(png|svg)

FIGURE_JSON:
  {"title": str, "xlabel": str,
   "panels": [{"ylabel": str,
               "lines": [{"label": str, "x": [num], "y": [num | null]}]}],
   "markers": [{"x": num, "label": str, "id": str}]}
A null y is a gap in its line. Markers are labelled while the labels fit
(at most MAX_LABELS; beyond that every n-th one); each marker's id is the id
of its element in an SVG. Text in an SVG stays text (searchable).
"""
import json
import sys

import matplotlib

matplotlib.use('Agg')
matplotlib.rcParams['svg.fonttype'] = 'none'  # text as <text>, not paths
matplotlib.rcParams['svg.hashsalt'] = 'moectl'  # stable ids from run to run
import matplotlib.pyplot as plt  # noqa: E402

MAX_LABELS = 16


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    figure_path, out = argv[1:3]
    with open(figure_path) as f:
        doc = json.load(f)
    panels = doc.get('panels', [])
    if not panels:
        print('plot_series.py: no panels to draw', file=sys.stderr)
        return 2
    markers = doc.get('markers', [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.2 + 2.3 * len(panels)),
                             sharex=True, squeeze=False)
    axes = [row[0] for row in axes]
    for ax, panel in zip(axes, panels):
        for line in panel.get('lines', []):
            y = [float('nan') if v is None else v for v in line['y']]
            ax.plot(line['x'], y, label=line.get('label'), linewidth=1)
        ax.set_ylabel(panel.get('ylabel', ''), fontsize=8)
        ax.grid(alpha=0.3)
        if len(panel.get('lines', [])) > 1:
            ax.legend(fontsize=7, ncol=3, loc='upper right')
    every = max(1, -(-len(markers) // MAX_LABELS))
    for i, m in enumerate(markers):
        for k, ax in enumerate(axes):
            gid = m.get('id', f'marker-{i}') + ('' if k == 0 else f'-{k}')
            ax.axvline(m['x'], color='tab:red', linestyle='--', linewidth=0.8, alpha=0.7,
                       gid=gid)
        if m.get('label') and i % every == 0:
            axes[0].annotate(m['label'], xy=(m['x'], 1.0), xycoords=('data', 'axes fraction'),
                             xytext=(2, -2), textcoords='offset points', rotation=90,
                             fontsize=6, color='tab:red', va='top', ha='left')
    if doc.get('title'):
        axes[0].set_title(doc['title'], fontsize=10)
    axes[-1].set_xlabel(doc.get('xlabel', ''))
    fig.tight_layout()
    fig.savefig(out, metadata={'Date': None} if out.lower().endswith('.svg') else None)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
