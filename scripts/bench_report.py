#!/usr/bin/env python3
"""Writes docs/benchmarks.md from the JSON documents scripts/bench collected.

usage: bench_report.py OUT_DIR DOC COMMAND
"""
import datetime
import json
import os
import platform
import subprocess
import sys

# Every scenario's closed-loop run (scripts/closed-loop), when present.
CLOSED_LOOP_DIR = os.path.join('out', 'closed-loop')
ORDER = ['planner', 'engine', 'engine_peer', 'storage', 'controller', 'gpu', 'closed_loop']


def machine():
    cpu = platform.processor() or 'unknown cpu'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return f'{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}'


def flatten(prefix, value, rows):
    """Scalar leaves of a JSON object as (dotted.key, value); lists are summarised."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f'{prefix}.{k}' if prefix else k, v, rows)
    elif isinstance(value, list):
        rows.append((prefix, f'[{len(value)} entries]'))
    elif value is None:
        rows.append((prefix, 'not run'))
    else:
        if isinstance(value, float):
            value = f'{value:.6g}'
        rows.append((prefix, value))


def fmt(value):
    if isinstance(value, float):
        return f'{value:.4g}'
    return value


def measured_line(path):
    """When the figures of one section were measured (its JSON file's time)."""
    when = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    return f'Measured {when:%Y-%m-%d %H:%M} UTC.'


def engine_section(out_dir):
    """The engine's headline figures from engine.json and engine_peer.json (if present)."""
    def read(name):
        path = os.path.join(out_dir, name + '.json')
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)
    bench, peer = read('engine'), read('engine_peer')
    if bench is None and peer is None:
        return []
    lines = ['## engine', '', measured_line(os.path.join(out_dir, 'engine.json')), '']
    rows = []
    if peer is not None and 'summary' in peer:
        p = peer['summary']
        rows += [('layer tokens/s, engine vs PyTorch peer (median of paired rounds; goal >= 1.5)',
                  f"{p['engine_vs_peer_tokens_per_s']:.3g}x "
                  f"({p['engine_tokens_per_s']:.4g} vs {p['peer_tokens_per_s']:.4g} tokens/s)"),
                 ('outputs equal to the peer (normwise relative error, tolerance)',
                  f"{p['outputs_equal']} ({p['output_relative_error']:.2g}, "
                  f"{p['output_tolerance']:.0e}; {p['tokens_with_other_experts']} tokens "
                  'with other experts)')]
    if bench is not None and 'summary' in bench:
        b = bench['summary']
        rows += [('routed expert FFN vs dense limit (goal >= 0.8)',
                  f"{b['expert_ffn_vs_dense_limit']:.3g} ({b['expert_ffn_gflops']:.4g} vs "
                  f"{b['dense_limit_gflops']:.4g} GFLOP/s)"),
                 ('routing + permutation + combine share of the routed layer',
                  f"{b['routing_permutation_combine_share_of_routed_layer']:.3g}"),
                 ('core peak, 2048^3 OpenBLAS SGEMM (GFLOP/s)',
                  f"{b['core_peak_square_sgemm_gflops']:.4g}"),
                 ('per-expert OpenBLAS loop (the old path), GFLOP/s; engine speedup over it',
                  f"{b['per_expert_openblas_loop_gflops']:.4g}; "
                  f"{b['expert_ffn_speedup_vs_openblas_loop']:.3g}x")]
    lines += ['| figure | value |', '|---|---|'] + [f'| {k} | {v} |' for k, v in rows]
    lines.append('')
    for name, doc in (('engine', bench), ('engine_peer', peer)):
        if doc is None:
            continue
        lines += [f'`{doc.get("command", name)}`:', '', '| figure | value |', '|---|---|']
        flat = []
        flatten('', {k: v for k, v in doc.items() if k != 'command'}, flat)
        lines += [f'| {k} | {fmt(v)} |' for k, v in flat]
        lines.append('')
    return lines


def controller_section(data):
    """The controller's own costs (bench/controller_bench.cc): cycle, ingest, memory."""
    shape = data.get('shape', {})
    lines = ['## controller', '',
             f'`{data.get("command", "controller_bench")}`: {shape.get("layers")} layers x '
             f'{shape.get("experts")} experts, top-{shape.get("top_k")}, '
             f'{shape.get("replicas")} slots on {shape.get("devices")} devices; policies '
             f'from configs/policies/default.toml. Wall times on a shared machine include '
             'waits for a core; CPU times are the control thread\'s own.', '',
             '| figure | value |', '|---|---|']

    def row(name, value, fmt='{:.4g}'):
        if value is not None:
            lines.append(f'| {name} | {fmt.format(value) if isinstance(value, float) else value} |')

    cycle = data.get('cycle', {})
    if 'wall' in cycle:
        row('cycle wall p50 (us)', cycle['wall'].get('p50_us'))
        row('cycle wall p99 (us)', cycle['wall'].get('p99_us'))
        row('cycle CPU p50 (us)', cycle['cpu'].get('p50_us'))
        row('cycle CPU p99 (us)', cycle['cpu'].get('p99_us'))
        row('snapshot to command p99 (us)', cycle.get('snapshot_to_command', {}).get('p99_us'))
        sent = cycle.get('sent_command', {})
        row('cycles that sent a command', sent.get('cycles'))
        row('  their wall p50 (us)', sent.get('wall', {}).get('p50_us'))
        row('  their wall p90 (us)', sent.get('wall', {}).get('p90_us'))
        row('  their CPU p99 (us)', sent.get('cpu', {}).get('p99_us'))
        row('cycle p99 under 1 ms', cycle.get('p99_under_goal'))
    row('allocator', data.get('allocator'))
    alone = data.get('policies_alone', {})
    row('counterfactual capacity, calibrated, replaying the demand (us)',
        alone.get('counterfactual_calibrated_us'))
    row('  the same from the capacity replays kept at ingest (us)',
        alone.get('counterfactual_with_replays_us'))
    row('  a capacity replay, per step at ingest (us)', alone.get('capacity_replay_per_step_us'))
    row('bias policy alone (us)', alone.get('bias_us'))
    row('replication policy alone (us, worker thread)', alone.get('replication_us'))
    for run in data.get('ingest', []):
        tag = f'ingest {run.get("engines")} engines at {run.get("offered_steps_per_s"):.0f} steps/s'
        row(f'{tag}: steps stored / sent', f'{run.get("steps_stored")} / {run.get("steps_sent")}')
        row(f'{tag}: stored steps/s', run.get('stored_steps_per_s'))
        row(f'{tag}: stored layer rows/s', run.get('stored_layer_rows_per_s'))
        row(f'{tag}: nothing lost', run.get('nothing_lost'))
        cpu = run.get('cpu_s', {})
        if cpu.get('controller_thread'):
            row(f'{tag}: steps per controller-thread CPU second',
                run.get('steps_received', 0) / cpu['controller_thread'])
    memory = data.get('memory', {})
    row('moectld RSS growth per engine (MiB)', memory.get('rss_mib_per_engine'))
    row('moectld RSS at start (MiB)', memory.get('rss_start_mib'))
    lines.append('')
    return lines


def main():
    out_dir, doc, command = sys.argv[1:4]
    now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    try:
        rev = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                             text=True).stdout.strip()
    except OSError:
        rev = 'unknown'
    lines = ['# Benchmarks', '',
             f'Regenerated by `{command}` (do not edit by hand).', '',
             f'- date: {now}', f'- commit: {rev}', f'- machine: {machine()}', '',
             'Each section lists the scalar figures of one benchmark\'s JSON; the full',
             f'documents are in `{out_dir}/` after a run. Ratios are against baselines',
             'measured in the same run.', '']
    names = sorted(os.listdir(out_dir), key=lambda n: (ORDER.index(n[:-5]) if n[:-5] in ORDER
                                                       else 99, n))
    for name in names:
        if not name.endswith('.json'):
            continue
        if name in ('engine.json', 'engine_peer.json'):
            if name == 'engine.json' or 'engine.json' not in names:
                lines += engine_section(out_dir)
            continue
        with open(os.path.join(out_dir, name)) as f:
            data = json.load(f)
        if name == 'controller.json' and isinstance(data, dict) and 'skipped' not in data:
            lines += controller_section(data)
            continue
        lines += [f'## {name[:-5]}', '', measured_line(os.path.join(out_dir, name)), '']
        if isinstance(data, dict) and data.get('benchmark') == 'closed-loop':
            # One table of the contenders (scripts/closed_loop_report.py); with
            # every scenario's run (scripts/closed-loop), all of them.
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import closed_loop_report
            every = closed_loop_report.load_docs(CLOSED_LOOP_DIR) \
                if os.path.isdir(CLOSED_LOOP_DIR) else []
            if every:
                lines += closed_loop_report.report(every, 'scripts/closed-loop')
            else:
                lines += closed_loop_report.table(data)
            continue
        rows = []
        flatten('', data.get('summary', data) if isinstance(data, dict) else data, rows)
        if isinstance(data, dict) and 'summary' in data:
            for k, v in data.items():
                if k != 'summary' and not isinstance(v, (dict, list)):
                    rows.insert(0, (k, v))
        lines += ['| figure | value |', '|---|---|']
        lines += [f'| {k} | {v} |' for k, v in rows]
        lines.append('')
    with open(doc, 'w') as f:
        f.write('\n'.join(lines))


if __name__ == '__main__':
    main()
