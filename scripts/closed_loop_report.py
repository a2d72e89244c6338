#!/usr/bin/env python3
"""Markdown tables of the closed-loop benchmark's JSON documents.

usage: closed_loop_report.py DIR COMMAND     (DIR holds one SCENARIO.json per scenario)
Also importable: table(doc) returns one scenario's table lines.
"""
import json
import os
import sys

COLUMNS = [('contender', 'name', '{}'), ('p50 us', 'p50_latency_us', '{:.0f}'),
           ('p99 us', 'p99_latency_us', '{:.0f}'), ('meas. p50 us', 'p50_measured_step_us', '{:.0f}'),
           ('tok/s', 'tokens_per_s', '{:.0f}'), ('drop', 'drop_rate', '{:.4f}'),
           ('quality', 'quality_error', '{:.4f}'), ('migrated MB', 'bytes_migrated', '{:.2f}'),
           ('applied', 'decisions_applied', '{}'), ('rolled back', 'rolled_back', '{}'),
           ('reward', 'mean_reward', '{:.4f}')]


def table(doc):
    lines = [f'### {doc["scenario"]}' + (' (replay; fixed: ' + ', '.join(doc['fixed_knobs']) + ')'
                                          if doc.get('replay') else ''), '',
             '| ' + ' | '.join(c[0] for c in COLUMNS) + ' |',
             '|' + '---|' * len(COLUMNS)]
    for c in doc['contenders']:
        cells = []
        for _, key, fmt in COLUMNS:
            v = c[key]
            if key == 'bytes_migrated':
                v = v / 1e6
            if key == 'name' and c['name'] == 'static_oracle':
                v = f'static_oracle ({c["start"]["capacity_factor"]:g}, k{c["start"]["top_k"]}, ' \
                    f'noise {c["start"]["noise_std"]:g})'
            cells.append(fmt.format(v))
        lines.append('| ' + ' | '.join(cells) + ' |')
    v = doc.get('verdict', {})
    if v:
        lines += ['', f'moectl beats every single mechanism: {v.get("moectl_beats_single_mechanisms")}; '
                      f'p99 below static default: {v.get("moectl_p99_below_static_default")}; '
                      f'p99 below dropless: {v.get("moectl_p99_below_static_dropless", "n/a")}; '
                      f'vs oracle: {v.get("moectl_vs_oracle_relative", 0):+.1%} '
                      f'(best single mechanism: {v.get("best_single_mechanism")})']
    lines.append('')
    return lines


def load_docs(out_dir):
    docs = []
    for name in sorted(os.listdir(out_dir)):
        if name.endswith('.json'):
            with open(os.path.join(out_dir, name)) as f:
                try:
                    doc = json.load(f)
                except json.JSONDecodeError:
                    continue
            if isinstance(doc, dict) and doc.get('benchmark') == 'closed-loop':
                docs.append(doc)
    return docs


def report(docs, command):
    """The lines of the whole report: the verdicts, then a table per scenario."""
    lines = [f'Made by `{command}`. Latency is the critical path under the cost model fitted '
             'on a calibration run of the same invocation (measured step time beside it), '
             'a scenario\'s device slowdowns (straggler) priced into it for every contender; '
             'reward as in '
             'docs/controller.md. Every contender runs the same tokens, in lockstep with its '
             'controller on a step clock (the JSON\'s `clock`; docs/controller.md), and each '
             'controller prices with that same calibrated model (`cost_model.controller`), so '
             'its decisions land at the same steps however loaded the machine is; the first '
             'warm-up steps are run by all and not counted. The static default drops what '
             'does not fit its capacity ("default drops"), so its p99 is the p99 of less '
             'work. It cannot lie above the balanced p99: at capacity factor 1 per slot a '
             'slot holds at most T*K/R rows, so a device of R/D slots at most T*K/D, the '
             'balanced share; a contender that serves every token at the model\'s K is at '
             'or above that, so "p99 < default" needs drops or a smaller K. "p99 < dropless" '
             'compares with what serving engines run by default (no capacity limit: every '
             'token served at the model\'s K, the static default\'s other knobs); '
             '"p99 < oracle" with the best fixed setting of the grid, whose capacity factors '
             'include unlimited (the dropless run).', '']
    lines += ['| scenario | moectl best of 1,3,4,5 | vs best of them | beats oracle | vs oracle | '
              'p99 < oracle | p99 < dropless | moectl p99 / dropless p99 | p99 < default | '
              'default drops | moectl p99 / balanced p99 | default p99 / balanced p99 |',
              '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for d in docs:
        v = d.get('verdict', {})
        by = {c['name']: c for c in d['contenders']}
        def ratio(name):
            c = by.get(name, {})
            b = c.get('p99_balanced_us') or c.get('p50_balanced_us') or 0
            return f'{c["p99_latency_us"] / b:.3f}' if b and 'p99_latency_us' in c else 'n/a'
        def ratio_of(key):
            return f'{v[key]:.3f}' if key in v else 'n/a'
        def pct(key):
            return f'{v[key]:+.1%}' if key in v else 'n/a'
        drops = v.get('static_default_drop_rate')
        lines.append(f'| {d["scenario"]} | {v.get("moectl_beats_single_mechanisms")} | '
                     f'{pct("moectl_vs_best_single_mechanism_relative")} | '
                     f'{v.get("moectl_beats_oracle")} | {pct("moectl_vs_oracle_relative")} | '
                     f'{v.get("moectl_p99_below_static_oracle", "n/a")} | '
                     f'{v.get("moectl_p99_below_static_dropless", "n/a")} | '
                     f'{ratio_of("moectl_p99_vs_static_dropless")} | '
                     f'{v.get("moectl_p99_below_static_default")} | '
                     f'{"n/a" if drops is None else f"{drops:.1%}"} | {ratio("moectl")} | '
                     f'{ratio("static_default")} |')
    lines.append('')
    for d in docs:
        lines += table(d)
    return lines


def main():
    out_dir, command = sys.argv[1:3]
    print('## Closed-loop benchmark\n')
    print('\n'.join(report(load_docs(out_dir), command)))


if __name__ == '__main__':
    main()
