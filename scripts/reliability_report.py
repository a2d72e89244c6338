#!/usr/bin/env python3
"""Writes docs/reliability.md from the reliability tests' JSON results.

Usage: reliability_report.py RESULTS_DIR RUNS_TSV OUT_MD COMMAND [FUZZ_SECONDS] [FUZZ_LOG_DIR]

RESULTS_DIR holds one JSON file per test (tests/reliability/reliability_result.h
has the schema); RUNS_TSV one line per test case run by scripts/reliability
(binary, test name, pass|FAIL, seconds). Test cases that write no JSON (the
storage-level tests, the fuzz corpora) get their row here.
"""
import datetime
import glob
import json
import os
import platform
import re
import sys

# The storage-level fault tests: the attack each one makes and what it asserts.
STORAGE_TESTS = {
    "no record is lost while another connection holds the write lock": (
        "tests/storage/store_test.cc",
        "locked database (Store level)",
        "another connection holds the write lock; every record queued commits once it is released"),
    "a database renamed over the live one: the writer reopens the path, nothing queued lost": (
        "tests/storage/durability_test.cc",
        "database file replaced (Store level)",
        "another moectl database renamed over the live one mid-write; every step lands in one "
        "file or the other, both pass integrity_check"),
    "a foreign file renamed over the live one: the failure shows in stats, writes wait": (
        "tests/storage/durability_test.cc",
        "foreign file renamed over the database (Store level)",
        "a non-moectl SQLite file at the path is left alone; writes wait and land once a moectl "
        "database is put back"),
    "a deleted database: the writer starts a new one at the path": (
        "tests/storage/durability_test.cc",
        "database file deleted (Store level)",
        "the file deleted under the writer; a new one is started at the path"),
    "every write refused or lost is counted": (
        "tests/storage/durability_test.cc",
        "full write queue, writes after close (Store level)",
        "every refused or lost write is counted once in StoreStats::lost()"),
    "under continuous load the WAL stays bounded and retention rolls rows up": (
        "tests/storage/durability_test.cc",
        "WAL growth under continuous load (Store level)",
        "checkpoints and retention run while the queue never empties; the WAL stays bounded"),
}

FUZZ_TARGETS = {
    "envelope": ("tests/fuzz/fuzz_envelope.cc", "telemetry envelope decoder"),
    "command": ("tests/fuzz/fuzz_command.cc", "engine command path"),
    "config": ("tests/fuzz/fuzz_config.cc", "configuration loaders"),
}


def fmt(v, digits=1):
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1024 / 1024:.0f} GiB memory"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs{mem}, {platform.system()} {platform.release()}"


def main():
    results_dir, runs_tsv, out_md, command = sys.argv[1:5]
    fuzz_seconds = sys.argv[5] if len(sys.argv) > 5 else ""
    fuzz_logs = sys.argv[6] if len(sys.argv) > 6 else ""
    runs = []
    with open(runs_tsv) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4:
                runs.append({"binary": parts[0], "name": parts[1], "status": parts[2],
                             "seconds": int(parts[3])})
    status_by_name = {r["name"]: r["status"] for r in runs}

    rows = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        name = r.get("test", "").split(": ", 1)[-1]
        r["status"] = status_by_name.get(name, "pass?")
        rows.append(r)
    named = {r.get("test", "").split(": ", 1)[-1] for r in rows}
    for run in runs:
        name = run["name"]
        if name in named:
            continue
        if name in STORAGE_TESTS:
            file, attack, what = STORAGE_TESTS[name]
            ok = run["status"] == "pass"
            rows.append({"attack": attack, "test": f"{file}: {name}", "tries": 1, "refused": None,
                         "committed_lost": 0 if ok else None, "daemon_serving": None,
                         "engine_serving": None, "rss_mb_before": None, "rss_mb_max": None,
                         "rss_bound_mb": None, "notes": what + " (asserted by the test)",
                         "status": run["status"]})
        elif name.startswith("corpus "):
            target = name.split(" ", 1)[1]
            file, what = FUZZ_TARGETS.get(target, ("tests/fuzz", target))
            corpus = glob.glob(f"tests/fuzz/corpus/{target}/*")
            rows.append({"attack": f"fuzz corpus replay: {what}",
                         "test": f"{file}: fuzz_{target}_corpus (CTest)",
                         "tries": len(corpus), "refused": None,
                         "committed_lost": None, "daemon_serving": None, "engine_serving": None,
                         "rss_mb_before": None, "rss_mb_max": None, "rss_bound_mb": None,
                         "notes": f"every checked-in input of tests/fuzz/corpus/{target} decoded "
                                  "without a crash (tries = corpus size)",
                         "status": run["status"]})
        else:
            rows.append({"attack": f"{run['binary']}: {name}", "test": name, "tries": None,
                         "refused": None, "committed_lost": None, "daemon_serving": None,
                         "engine_serving": None, "rss_mb_before": None, "rss_mb_max": None,
                         "rss_bound_mb": None, "notes": "wrote no result file",
                         "status": run["status"]})
    if fuzz_seconds and fuzz_logs:
        for target, (file, what) in FUZZ_TARGETS.items():
            log = os.path.join(fuzz_logs, f"{target}.log")
            units = peak = None
            try:
                with open(log) as f:
                    text = f.read()
                m = re.search(r"stat::number_of_executed_units:\s*(\d+)", text)
                units = int(m.group(1)) if m else None
                m = re.search(r"stat::peak_rss_mb:\s*(\d+)", text)
                peak = float(m.group(1)) if m else None
            except OSError:
                pass
            crashed = bool(glob.glob(os.path.join(fuzz_logs, f"{target}-crash-*")))
            rows.append({"attack": f"libFuzzer ({fuzz_seconds} s): {what}",
                         "test": f"{file}: scripts/fuzz {fuzz_seconds} {target}", "tries": units,
                         "refused": None, "committed_lost": None, "daemon_serving": None,
                         "engine_serving": None, "rss_mb_before": None, "rss_mb_max": peak,
                         "rss_bound_mb": 2048.0, "notes": "ASan + UBSan; tries = inputs executed",
                         "status": "FAIL" if crashed or units is None else "pass"})

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = []
    out.append("# Reliability report\n")
    out.append("Generated by `scripts/reliability` (do not edit by hand): every attack below is a "
               "test that runs real processes on loopback (moectld, moe-engine, SQLite files in "
               "temporary directories) or the library it attacks, and fails if anything committed "
               "is lost. Each row comes from the JSON file its test wrote "
               "(tests/reliability/reliability_result.h).\n")
    out.append(f"- command: `{command}`")
    out.append(f"- date: {now}")
    out.append(f"- machine: {machine()} (shared with other builds: rates are this run's)")
    passed = sum(1 for r in rows if r["status"] == "pass")
    out.append(f"- result: {passed} of {len(rows)} rows passed\n")
    out.append("| # | attack | result | tries | refused | committed lost | daemon serving | "
               "engine serving | RSS MiB before / max (bound) |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        rss = "n/a"
        if r.get("rss_mb_max") is not None:
            rss = (f"{fmt(r.get('rss_mb_before'))} / {fmt(r.get('rss_mb_max'))} "
                   f"({fmt(r.get('rss_bound_mb'), 0)})")
        result = "pass" if r["status"] == "pass" else f"**{r['status']}**"
        out.append(f"| {i} | {r['attack']} | {result} | {fmt(r.get('tries'))} | "
                   f"{fmt(r.get('refused'))} | {fmt(r.get('committed_lost'))} | "
                   f"{fmt(r.get('daemon_serving'))} | {fmt(r.get('engine_serving'))} | {rss} |")
    out.append("")
    out.append("n/a: does not apply (a Store-level or decoder test has no daemon or engine). "
               "Refused: writes or messages refused and counted (not lost silently). Committed "
               "lost: rows read back committed before the attack and missing or changed after it.\n")
    out.append("## Details\n")
    for i, r in enumerate(rows, 1):
        out.append(f"{i}. **{r['attack']}** (`{r['test']}`): {r.get('notes', '')}")
        figures = r.get("figures")
        if figures:
            parts = ", ".join(f"{k} {fmt(v, 1)}" for k, v in figures.items())
            out.append(f"   Figures: {parts}.")
    out.append("")
    load = [r for r in rows if r.get("figures", {}).get("stored_steps_per_s") is not None]
    if load:
        out.append("## Load\n")
        out.append("| run | offered steps/s | stored steps/s | stored layer rows/s | held | sent | "
                   "stored | engine drops | store tail s |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in load:
            f = r["figures"]
            held = f["stored_steps_per_s"] / f["offered_steps_per_s"] if f["offered_steps_per_s"] else 0
            out.append(f"| {r['attack']} | {f['offered_steps_per_s']:.0f} | "
                       f"{f['stored_steps_per_s']:.0f} | {f['stored_layer_rows_per_s']:.0f} | "
                       f"{held:.2f} | {f['steps_sent']} | {f['steps_stored']} | "
                       f"{f['engine_drops']} | {f['store_tail_s']:.1f} |")
        out.append("")
    out.append("## How the attacks are made\n")
    out.append("- Crash loop: two moe-engine processes run flat out; moectld is killed with "
               "SIGKILL after a seeded random 150-1500 ms of each run (`MOE_RELIABILITY_SEED` "
               "changes the seed) and restarted on the same endpoints. Just before each kill a "
               "read-only connection reads what is committed (steps per engine, every decision "
               "and epochs row); after it, `PRAGMA integrity_check`, those rows and their set "
               "values, no (engine, epoch) commanded twice (database and the engines' own logs), "
               "no decision of the killed run left `sent`/`acked` once the restart settles, and "
               "every engine's steps stored again past where they were.")
    out.append("- Disk full: the daemon's RLIMIT_FSIZE is lowered to 4 KiB with prlimit(2) on its "
               "pid (SIGXFSZ ignored, inherited through exec), so every write past 4 KiB fails "
               "with EFBIG, which SQLite reports as a disk I/O error (SQLITE_IOERR_WRITE) rather "
               "than SQLITE_FULL. SQLite's `max_page_count` is per connection and cannot be set "
               "on the daemon's connection from another process; no Store-level max_page_count "
               "test exists yet.")
    out.append("- Locked database: `BEGIN EXCLUSIVE` from another connection for 5 s, longer "
               "than the daemon's 2 s busy timeout.")
    out.append("- File replaced: another moectl database renamed over the live file while the "
               "engine streams. Updates of decisions whose rows stayed in the old file cannot "
               "land in the new one: they are counted as lost writes (reason "
               "`unmatched_update`), which is the `refused` figure of that row; committed rows "
               "are all in the old file.")
    out.append("- Load: 8 synthetic engines of DeepSeek-V3's shape (bench/ingest_engine.cc, the "
               "engine controller_bench's ingest section runs), each on its own thread at a "
               "fixed share of the offered rate, into one moectld; a backlog is waited out, so a "
               "rate below the offered one is reported, not failed; a step not stored is.")
    out.append("- Rerun with `scripts/reliability` (add `--fuzz SECONDS` for libFuzzer rows; the "
               "slow variants run here, `./scripts/test` runs only the default ones).\n")
    out.append("## Test runs\n")
    out.append("| binary | test | result | seconds |")
    out.append("|---|---|---|---|")
    for run in runs:
        out.append(f"| {run['binary']} | {run['name']} | {run['status']} | {run['seconds']} |")
    out.append("")
    with open(out_md, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
