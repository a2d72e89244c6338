"""The Python toy engine (clients/python/examples/toy_engine.py) under a real
moectld over loopback: its telemetry is stored, a decision reaches it as a
command, it acks it, and its next steps carry the new epoch; a knob it lacks
is refused in the ack and the refusal is recorded. Checked through the
operator's CLI (moectl), the daemon's own log, and the engine's summary."""

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import moectl_client as mc
from fake_controller import free_loopback_endpoint

MOECTLD = os.environ.get("MOECTLD_BIN", "")
MOECTL = os.environ.get("MOECTL_BIN", "")
SOURCE = os.environ.get("MOE_SOURCE_DIR", "")
TOY = os.path.join(SOURCE, "clients", "python", "examples", "toy_engine.py")


def controller_toml(db, telemetry, commands):
    """A controller that decides quickly on a short run (as the C++ loop test)."""
    return """log_level = "debug"
cadence = "200ms"
ack_timeout = "3s"
outcome_steps = 6
window_steps = 32
progress_interval = "1s"

[transport]
telemetry = "%s"
commands = "%s"

[storage]
path = "%s"
flush_interval = "50ms"

[policies.capacity]
target_low = 0.001
target_high = 0.01
min_steps = 4

[policies.guard]
cooldown = "300ms"
stale_after = "5s"
min_steps_in_epoch = 4
rollback = false
""" % (telemetry, commands, db)


class DaemonRun:
    """One moectld in a temporary directory, with its own NOTIFY_SOCKET."""

    def __init__(self, extra_toml=""):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.db = os.path.join(self.dir, "moectl.db")
        self.telemetry = free_loopback_endpoint()
        self.commands = free_loopback_endpoint()
        self.config = os.path.join(self.dir, "controller.toml")
        with open(self.config, "w") as f:
            f.write(controller_toml(self.db, self.telemetry, self.commands) + extra_toml)
        self.notify_path = os.path.join(self.dir, "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.log_path = os.path.join(self.dir, "moectld.log")
        self.process = None

    def start(self, timeout_s=15):
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([MOECTLD, "--config", self.config], stdout=log,
                                            stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if b"READY=1" in self.notify.recv(4096):
                    return True
            except socket.timeout:
                break
        return False

    def stop(self, timeout_s=15):
        """SIGTERM; returns the exit status (None if it did not stop)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            return None

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def close(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.notify.close()
        self.tmp.cleanup()


def moectl(*args):
    done = subprocess.run([MOECTL] + list(args), capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise AssertionError("moectl %s failed (%d): %s" % (" ".join(args), done.returncode,
                                                            done.stderr))
    return done.stdout


class ToyEngineLoopTest(unittest.TestCase):

    def setUp(self):
        self.run_ = DaemonRun()
        self.addCleanup(self.run_.close)
        self.engines = []

    def tearDown(self):
        for p in self.engines:
            if p.poll() is None:
                p.kill()
                p.wait(5)

    def start_toy(self, engine_id, *extra):
        summary = os.path.join(self.run_.dir, engine_id + ".json")
        log = open(os.path.join(self.run_.dir, engine_id + ".log"), "wb")
        self.addCleanup(log.close)
        p = subprocess.Popen([sys.executable, TOY, "--engine-id", engine_id,
                              "--telemetry", self.run_.telemetry,
                              "--commands", self.run_.commands, "--step-interval-ms", "10",
                              "--summary", summary] + list(extra),
                             stdout=log, stderr=subprocess.STDOUT)
        self.engines.append(p)
        return p, summary

    def engine_log(self, engine_id):
        with open(os.path.join(self.run_.dir, engine_id + ".log"), errors="replace") as f:
            return f.read()

    def test_the_toy_engine_is_controlled_by_moectld(self):
        self.assertTrue(self.run_.start(), self.run_.log())
        toy, toy_summary = self.start_toy("py-toy", "--steps", "2000",
                                          "--stop-after-epoch-steps", "40")
        lacking, lacking_summary = self.start_toy("py-toy-nocf", "--steps", "250",
                                                  "--without-knob", "capacity_factor")
        for engine_id, p in (("py-toy", toy), ("py-toy-nocf", lacking)):
            try:
                rc = p.wait(120)
            except subprocess.TimeoutExpired:
                rc = None
            self.assertEqual(rc, 0, "%s:\n%s\ndaemon:\n%s" % (engine_id, self.engine_log(engine_id),
                                                              self.run_.log()[-4000:]))
        self.assertEqual(self.run_.stop(), 0, self.run_.log()[-4000:])
        with open(toy_summary) as f:
            toy_run = json.load(f)
        with open(lacking_summary) as f:
            lacking_run = json.load(f)

        # Every message the Python client sent decoded on the C++ side, and
        # every step was stored.
        daemon_log = self.run_.log()
        stopped = re.search(r"stopped: (\d+) steps, \d+ decisions, \d+ commands, (\d+) malformed",
                            daemon_log)
        self.assertIsNotNone(stopped, daemon_log[-2000:])
        self.assertEqual(int(stopped.group(2)), 0)
        self.assertEqual(int(stopped.group(1)), toy_run["steps"] + lacking_run["steps"])
        self.assertEqual(toy_run["dropped"], 0)

        engines = json.loads(moectl("engines", "--db", self.run_.db, "--format", "json"))
        by_id = {e["engine"]: e for e in engines}
        self.assertEqual(by_id["py-toy"]["backend"], "numpy")
        self.assertEqual((by_id["py-toy"]["layers"], by_id["py-toy"]["experts"]), (2, 16))

        # Telemetry stored: one row per step and layer.
        history = list(csv.DictReader(io.StringIO(moectl(
            "history", "--db", self.run_.db, "--engine", "py-toy", "--layer", "0",
            "--limit", "100000", "--format", "csv"))))
        self.assertEqual(len(history), toy_run["steps"])
        self.assertGreater(max(float(r["drop_rate"]) for r in history), 0.05)  # cf 1 drops

        # A decision reached the engine, was acked, and the next steps carry its epoch.
        decisions = json.loads(moectl("decisions", "--db", self.run_.db, "--engine", "py-toy",
                                      "--format", "json"))
        acked = [d for d in decisions if d["acked_epoch"] is not None]
        self.assertTrue(acked, json.dumps(decisions, indent=1)[:3000])
        first = min(acked, key=lambda d: d["acked_epoch"])
        epoch = first["acked_epoch"]
        self.assertIn(first["knob"], ("capacity_factor", "expert_bias", "phy2log", "top_k",
                                      "noise_std"))
        applied = [c for c in toy_run["commands"] if c["epoch"] == epoch]
        self.assertEqual(len(applied), 1)
        self.assertTrue(applied[0]["applied"])
        # The ack's first governed step is the first step the engine ran under it.
        self.assertEqual(first["applied_at_step"], toy_run["first_step_of_epoch"][str(epoch)])
        later = [r for r in history if int(r["epoch"]) >= epoch]
        self.assertTrue(later)
        self.assertEqual(min(int(r["step"]) for r in later), first["applied_at_step"])
        self.assertGreaterEqual(toy_run["final_epoch"], epoch)
        self.assertGreaterEqual(sum(n for e, n in toy_run["epochs"].items() if int(e) > 0), 40)
        if first["knob"] == "capacity_factor":
            self.assertGreater(toy_run["knobs"]["capacity_factor"], 1.0)

        # An engine without capacity_factor refuses it; the refusal is recorded.
        decisions = json.loads(moectl("decisions", "--db", self.run_.db, "--engine",
                                      "py-toy-nocf", "--format", "json"))
        refused = [d for d in decisions if d["knob"] == "capacity_factor" and d["ack_error"]]
        self.assertTrue(refused, json.dumps(decisions, indent=1)[:3000])
        self.assertIn("this engine has no knob capacity_factor", refused[0]["ack_error"])
        self.assertGreater(lacking_run["refused"], 0)
        self.assertNotIn("capacity_factor", lacking_run["knobs"])


class ToyEngineCurveTest(unittest.TestCase):
    """CURVE against the real daemon: "only engines whose public key is in the
    controller's allow-list get through" (docs/telemetry.md)."""

    def test_only_allowed_keys_get_through(self):
        server, allowed, stranger = (mc.generate_curve_keys() for _ in range(3))
        run = DaemonRun("""
[transport.curve]
public_key = "%s"
secret_key = "%s"
[transport.curve.engines]
py-curve = "%s"
""" % (server.public_key, server.secret_key, allowed.public_key))
        self.addCleanup(run.close)
        self.assertTrue(run.start(), run.log())
        procs = []
        for engine_id, keys in (("py-curve", allowed), ("py-stranger", stranger)):
            key_file = os.path.join(run.dir, engine_id + ".keys")
            with open(key_file, "w") as f:
                json.dump({"public_key": keys.public_key, "secret_key": keys.secret_key,
                           "controller_public_key": server.public_key}, f)
            log = open(os.path.join(run.dir, engine_id + ".log"), "wb")
            self.addCleanup(log.close)
            procs.append(subprocess.Popen(
                [sys.executable, TOY, "--engine-id", engine_id, "--telemetry", run.telemetry,
                 "--commands", run.commands, "--steps", "80", "--step-interval-ms", "10",
                 "--curve-keys", key_file], stdout=log, stderr=subprocess.STDOUT))
        for p in procs:
            try:
                self.assertEqual(p.wait(60), 0)  # the refused one does not block either
            finally:
                if p.poll() is None:
                    p.kill()
        self.assertEqual(run.stop(), 0, run.log()[-4000:])
        engines = {e["engine"] for e in json.loads(moectl("engines", "--db", run.db,
                                                          "--format", "json"))}
        self.assertIn("py-curve", engines)
        self.assertNotIn("py-stranger", engines)
        history = list(csv.DictReader(io.StringIO(moectl(
            "history", "--db", run.db, "--engine", "py-curve", "--layer", "0", "--limit",
            "100000", "--format", "csv"))))
        self.assertEqual(len(history), 80)


if __name__ == "__main__":
    unittest.main()
