#!/usr/bin/env python3
"""Progress lines and the closing summary of scripts/demo, read through moectl itself.

usage: demo_report.py progress MOECTL DB ELAPSED_S SOCKET
       demo_report.py summary MOECTL DB
"""
import json
import subprocess
import sys


def moectl(binary, *args):
    out = subprocess.run([binary, *args, '--format', 'json'], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def drop_rate(rows):
    slots = sum(r['slots'] for r in rows)
    return sum(r['dropped'] for r in rows) / slots if slots else 0.0


def main():
    mode, binary, db = sys.argv[1:4]
    history = moectl(binary, 'history', '--db', db, '--limit', '1000000')
    decisions = moectl(binary, 'decisions', '--db', db, '--limit', '100000')
    steps = sorted({r['step'] for r in history})
    applied = [d for d in decisions if d['acked_epoch'] is not None]
    if mode == 'progress':
        recent = [r for r in history if steps and r['step'] >= steps[-1] - 20]
        # The settings in force, as the running controller knows them.
        status = moectl(binary, 'status', '--socket', sys.argv[5])
        if status and 'knobs' in status[0]:
            e = status[0]
            k = e['knobs']
            settings = (f"epoch {e['epoch']}: capacity_factor {k['capacity_factor']:g} "
                        f"top_k {k['top_k']} max|bias| {k['max_abs_bias']:.3f}")
        else:
            settings = 'engine not seen yet'
        print(f"  t={sys.argv[4]:>3}s  steps {len(steps):5d}  drop rate (last 20 steps) "
              f"{drop_rate(recent):.4f}  decisions {len(decisions):3d} ({len(applied)} applied)"
              f"  {settings}", flush=True)
        return
    if not steps:
        print('no steps were stored: check the logs')
        sys.exit(1)
    window = max(1, len(steps) // 10)
    first = [r for r in history if r['step'] <= steps[window - 1]]
    last = [r for r in history if r['step'] >= steps[-window]]
    print()
    print('Summary')
    print(f'  steps run            {len(steps)}')
    print(f'  drop rate, first {window} steps {drop_rate(first):.4f}')
    print(f'  drop rate, last {window} steps  {drop_rate(last):.4f}')
    print(f'  decisions            {len(decisions)} recorded, {len(applied)} applied and acked, '
          f"{sum(d['status'] == 'measured' for d in decisions)} measured")
    print(f'  database             {db}')


if __name__ == '__main__':
    main()
