#!/usr/bin/env python3
"""Markdown tables of a replication_bench JSON document (docs/replication.md).

usage: replication_report.py BENCH_JSON
"""
import json
import sys

CONTENDERS = ['none', 'static', 'eplb_prev', 'policy_mean', 'lookahead',
              'lookahead_max_moves_8', 'lookahead_expert_scope', 'eplb_forecast', 'oracle']


def pct(x):
    return f'{100 * x:.2f}%'


def ratio(x):
    return 'n/a' if x is None else f'{x:.3f}'


def main(path):
    with open(path) as f:
        doc = json.load(f)
    cfs = [f'{cf:g}' for cf in doc['capacity_factors']]
    la = doc['lookahead']
    print(f"Window {doc['window']} steps, {doc['devices']} devices, "
          f"{doc['redundant']} redundant slots per layer (rounded up to whole devices); "
          f"look-ahead: forecast `{la['method']}` (half-life {la['half_life_steps']:g}, "
          f"change threshold {la['change_threshold']:g}), max_moves {la['max_moves']}, "
          f"move_weight {la['move_weight']:g}, min_gain {la['min_gain']:g}.\n")
    ratio_table(doc, cfs, 'lookahead_vs_eplb_prev',
                'Ratios look-ahead (told capacity is per slot) / EPLB on the previous window '
                '(below 1: look-ahead better):', True)
    ratio_table(doc, cfs, 'lookahead_expert_scope_vs_eplb_prev',
                'Ratios look-ahead told capacity is per logical expert (replica counts for '
                'device balance) / EPLB on the previous window:', False)
    contender_tables(doc, cfs)


def ratio_table(doc, cfs, key, title, geomean):
    print(title + '\n')
    head = ['trace', 'max/mean mean', 'max/mean p99']
    for scope in ('expert', 'slot', 'slot_r'):
        head += [f'drops {scope} cf {cf}' for cf in cfs]
    head.append('bytes migrated')
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    for t in doc['traces']:
        r = t.get(key)
        if r is None:
            continue
        row = [t['name'], ratio(r['max_over_mean_mean']), ratio(r['max_over_mean_p99'])]
        for scope in ('expert', 'slot', 'slot_r'):
            row += [ratio(r['drop_rate'][scope][cf]) for cf in cfs]
        row.append(ratio(r['bytes_migrated']))
        print('| ' + ' | '.join(row) + ' |')
    if geomean:
        g = doc['real_traces_geomean_lookahead_vs_eplb_prev']
        row = ['geomean, real traces', ratio(g['max_over_mean_mean']),
               ratio(g['max_over_mean_p99'])]
        for scope in ('expert', 'slot', 'slot_r'):
            row += [ratio(g['drop_rate'].get(scope, {}).get(cf)) for cf in cfs]
        row.append('')
        print('| ' + ' | '.join(row) + ' |')
    print()


def contender_tables(doc, cfs):
    for t in doc['traces']:
        print(f"\n**{t['name']}** ({t['source']}): {t['steps']} steps ({t['judged_steps']} judged), "
              f"{t['layers']} layers, {t['experts']} experts top-{t['top_k']}, "
              f"{t['replicas']} slots on {t['devices']} devices.\n")
        head = ['contender', 'max/mean mean', 'p99'] + \
            [f'drops {s} cf {cf}' for s in ('expert', 'slot', 'slot_r') for cf in cfs] + \
            ['replicas moved', 'GB migrated', 'plan ms']
        print('| ' + ' | '.join(head) + ' |')
        print('|' + '---|' * len(head))
        for name in CONTENDERS:
            c = t['contenders'].get(name)
            if c is None or 'error' in c:
                continue
            row = [name, f"{c['max_over_mean']['mean']:.3f}", f"{c['max_over_mean']['p99']:.3f}"]
            row += [pct(c['drop_rate'][s][cf]) for s in ('expert', 'slot', 'slot_r') for cf in cfs]
            row += [str(c['replicas_moved']), f"{c['bytes_migrated'] / 1e9:.1f}",
                    f"{c['plan_cpu_ms_per_boundary']:.1f}"]
            print('| ' + ' | '.join(row) + ' |')

    print('\nForecasts (EPLB planned on each, judged on the next window): '
          'L1 error of the shares / device max-over-mean (mean over steps) / '
          f'drops slot_r cf {cfs[0]}:\n')
    names = list(doc['traces'][0]['forecasts'].keys())
    print('| forecast | ' + ' | '.join(t['name'] for t in doc['traces']) + ' |')
    print('|---|' + '---|' * len(doc['traces']))
    for m in names:
        cells = []
        for t in doc['traces']:
            f = t['forecasts'][m]
            cells.append(f"{f['share_error_l1']:.3f} / {f['eplb_max_over_mean_mean']:.4f} / "
                         f"{pct(f['eplb_drop_rate_slot_r_cf1'])}")
        print(f'| {m} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
