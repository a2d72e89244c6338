"""moectl_client.Publisher over real ZeroMQ on loopback, against a fake of the
controller's sockets. Each test quotes the docs/telemetry.md rule it checks."""

import time
import unittest

import moectl_client as mc
from moectl_client import wire
from fake_controller import FakeController, free_loopback_endpoint

ENGINE = "py-engine"
INFO = mc.EngineInfo(num_layers=2, num_experts=4, num_replicas=6, num_devices=2, hidden=16,
                     backend="test")
KNOBS = {"top_k": 2, "capacity_factor": 1.0, "expert_bias": [0.0] * 4}


def layer_stats(layer):
    return mc.LayerStats(layer=layer, num_tokens=4, expert_demand=[4, 2, 1, 1],
                         expert_tokens=[3, 2, 1, 1], slot_tokens=[2, 2, 1, 1, 1, 0],
                         device_tokens=[5, 2], overflowed=1, dropped=1, capacity=3,
                         timing=mc.LayerTiming(router_us=5.0, device_expert_us=[1.5, 2.5]))


class PublisherTest(unittest.TestCase):

    def setUp(self):
        self.commands = []
        self.refuse_with = None

    def on_command(self, command):
        self.commands.append(command)
        if self.refuse_with is not None:
            raise self.refuse_with

    def publisher(self, controller=None, telemetry=None, commands=None, **options):
        opts = mc.PublisherOptions(engine_id=ENGINE,
                                   telemetry_endpoint=telemetry or controller.telemetry,
                                   command_endpoint=commands or controller.commands, **options)
        pub = mc.Publisher(opts, INFO, dict(KNOBS), self.on_command)
        self.addCleanup(pub.close)
        return pub

    def controller(self, **kwargs):
        c = FakeController(**kwargs)
        self.addCleanup(c.close)
        return c

    @staticmethod
    def is_(channel, kind):
        return lambda ch, rid, k, m: ch == channel and k == kind

    def connected(self, ctl, pub):
        """Hello on both channels; returns (telemetry Hello, command Hello, rid)."""
        pub.hello()
        # The two channels are independent: either Hello may arrive first.
        seen = {}

        def hello(ch, rid, kind, message):
            if kind == "hello":
                seen[ch] = (ch, rid, kind, message)
            return "telemetry" in seen and "command" in seen

        ctl.wait_for(hello, timeout_s=10.0)
        t, c = seen.get("telemetry"), seen.get("command")
        self.assertIsNotNone(t)
        self.assertIsNotNone(c)
        return t[3], c[3], c[1]

    def test_hello_on_both_channels_with_one_seq(self):
        """"An engine sends a Hello on both channels when it connects"; "The
        Hello also sent on the command channel carries the same seq"; the
        command channel's routing id is the engine id, '#' and a random tag."""
        ctl = self.controller()
        pub = self.publisher(ctl)
        t_hello, c_hello, rid = self.connected(ctl, pub)
        self.assertRegex(rid, b"^" + ENGINE.encode() + b"#[0-9a-f]{16}$")
        self.assertEqual(t_hello, c_hello)
        self.assertEqual(t_hello.seq, 1)
        self.assertEqual(t_hello.schema_version, wire.SCHEMA_VERSION)
        self.assertEqual((t_hello.num_layers, t_hello.num_experts, t_hello.num_replicas,
                          t_hello.num_devices, t_hello.hidden), (2, 4, 6, 2, 16))
        knobs = wire.knobs_to_dict(t_hello.knobs)
        self.assertEqual(set(knobs), set(wire.ALL_KNOBS))  # every field present
        self.assertEqual(knobs["capacity_factor"], 1.0)
        self.assertEqual(knobs["top_p"], 0.0)  # a knob it lacks: reported off
        self.assertEqual(knobs["phy2log"], [0, 1, 2, 3, 0, 1])
        pub.step(0, [layer_stats(0), layer_stats(1)], step_us=99.0)
        step = ctl.wait_for(self.is_("telemetry", "step"))[3]
        self.assertEqual(step.seq, 2)  # one counter for every telemetry message
        self.assertEqual(step.epoch, 0)
        self.assertEqual(list(step.layers[1].expert_demand), [4, 2, 1, 1])
        self.assertEqual(list(step.layers[1].expert_tokens), [3, 2, 1, 1])
        self.assertEqual(step.layers[0].num_token_slots, 8)  # defaults to sum(demand)
        self.assertEqual(list(step.layers[0].timing.device_expert_us), [1.5, 2.5])
        self.assertFalse(step.layers[0].HasField("quality_error"))

    def test_command_acked_after_first_step_under_its_epoch(self):
        """"applies commands only at step boundaries; acks each command with
        the epoch it applied"; Ack.applied_at_step = "first step that runs
        under epoch"; telemetry carries the epoch in force."""
        ctl = self.controller()
        pub = self.publisher(ctl)
        _, _, rid = self.connected(ctl, pub)
        pub.step(0, [layer_stats(0)], step_us=1.0)
        ctl.send_command(rid, ENGINE, 5, {"capacity_factor": 2.0},
                         {1: {"expert_bias": [0.1, 0.0, 0.0, -0.1]}}, reason="capacity: drops")
        deadline = time.monotonic() + 5
        while not self.commands and time.monotonic() < deadline:
            pub.poll()
            time.sleep(0.005)
        self.assertEqual(len(self.commands), 1)
        command = self.commands[0]
        self.assertEqual((command.epoch, command.reason), (5, "capacity: drops"))
        self.assertEqual(command.knobs, {"capacity_factor": 2.0})
        self.assertEqual(list(command.layer_knobs), [1])
        self.assertAlmostEqual(command.layer_knobs[1]["expert_bias"][0], 0.1, places=6)
        self.assertEqual(pub.epoch, 5)
        self.assertIsNone(ctl.wait_for(self.is_("command", "ack"), timeout_s=0.3))  # not yet
        pub.step(1, [layer_stats(0)], step_us=1.0)
        step = ctl.wait_for(self.is_("telemetry", "step"))[3]
        self.assertEqual((step.step, step.epoch), (1, 5))
        ack = ctl.wait_for(self.is_("command", "ack"))[3]
        self.assertEqual((ack.epoch, ack.applied, ack.applied_at_step), (5, True, 1))
        self.assertEqual(ack.engine_id, ENGINE.encode())
        self.assertGreater(ack.timestamp_ns, 0)
        self.assertEqual(pub.knobs["capacity_factor"], 2.0)

    def test_refusals_are_acked_with_the_reason(self):
        """"what it may ignore (knobs it does not have: it refuses them in the
        ack)"; stale epochs and bad layers are refused too; the epoch in force
        does not move."""
        ctl = self.controller()
        pub = self.publisher(ctl)
        _, _, rid = self.connected(ctl, pub)
        cases = [
            (3, {"top_p": 0.9}, None, None, "this engine has no knob top_p"),
            (4, None, {0: {"shortlist": 4}}, None, "this engine has no knob shortlist"),
            (5, None, {2: {"top_k": 1}}, None, "layer 2 out of range (2 layers)"),
            (6, {"top_k": 9}, None, mc.CommandRefused("top_k 9 > 4 experts"),
             "top_k 9 > 4 experts"),
            (7, {"top_k": 3}, None, ZeroDivisionError("oops"),
             "engine error: ZeroDivisionError: oops"),
            (8, {"top_k": 1}, None, None, None),  # accepted
            (8, {"top_k": 2}, None, None, "stale epoch 8 (newest is 8)"),
            (2, {"top_k": 2}, None, None, "stale epoch 2 (newest is 8)"),
        ]
        for epoch, knobs, layers, refuse, expected in cases:
            with self.subTest(epoch=epoch, expected=expected):
                self.refuse_with = refuse
                ctl.send_command(rid, ENGINE, epoch, knobs, layers)
                ack = ctl.wait_for(self.is_("command", "ack"), pump=pub.poll) if expected else None
                if expected is None:
                    ctl.wait_for(lambda *a: False, timeout_s=0.2, pump=pub.poll)
                    self.assertEqual(pub.epoch, 8)
                    continue
                self.assertIsNotNone(ack)
                ack = ack[3]
                self.assertEqual((ack.epoch, ack.applied, ack.applied_at_step), (epoch, False, 0))
                self.assertIn(expected, ack.error.decode())
        self.assertEqual(pub.refused, 7)
        # The callback saw only commands whose knobs and layers the engine has.
        self.assertEqual([c.epoch for c in self.commands], [6, 7, 8])
        pub.step(3, [layer_stats(0)], step_us=1.0)
        step = ctl.wait_for(self.is_("telemetry", "step"))[3]
        self.assertEqual(step.epoch, 8)
        ack = ctl.wait_for(self.is_("command", "ack"))[3]
        self.assertEqual((ack.epoch, ack.applied, ack.applied_at_step), (8, True, 3))

    def test_malformed_command_messages_are_counted_and_skipped(self):
        """"a multipart message and undecodable bytes are malformed: the
        receiver counts them, logs them (rate-limited) and skips them"."""
        ctl = self.controller()
        pub = self.publisher(ctl)
        _, _, rid = self.connected(ctl, pub)
        ctl.send(rid, b"not protobuf")
        ctl.router.send_multipart([rid, b"part one", b"part two"])
        ack = wire.pb.Ack(engine_id=ENGINE.encode(), epoch=1, applied=True)
        ctl.send(rid, wire.encode("ack", ack))  # not a Command
        ctl.send_command(rid, "someone-else", 9, {"top_k": 1})
        ctl.send(rid, wire.pb.Envelope(schema_version=2).SerializeToString())
        deadline = time.monotonic() + 5
        while pub.malformed < 5 and time.monotonic() < deadline:
            pub.poll()
            time.sleep(0.005)
        self.assertEqual(pub.malformed, 5)
        self.assertEqual(self.commands, [])
        ctl.send_command(rid, ENGINE, 1, {"top_k": 1})
        self.assertTrue(ctl.pump_until(lambda: bool(self.commands), pub.poll))
        self.assertEqual([c.epoch for c in self.commands], [1])

    def test_bounded_queue_drops_and_counts_without_a_controller(self):
        """"The engine never blocks on a slow or absent controller"; "a message
        that does not fit is dropped and counted, and the count so far travels
        in the next StepRecord's telemetry_dropped"; "Messages queue even
        before the first connection"; seq is "consumed" by a drop."""
        telemetry, commands = free_loopback_endpoint(), free_loopback_endpoint()
        pub = self.publisher(telemetry=telemetry, commands=commands, send_queue=4)
        pub.hello()
        slowest = 0.0
        for step in range(200):
            started = time.monotonic()
            pub.step(step, [layer_stats(0), layer_stats(1)], step_us=1.0)
            slowest = max(slowest, time.monotonic() - started)
        self.assertLess(slowest, 0.5)  # never waits for the absent controller
        dropped_before = pub.dropped
        self.assertGreater(dropped_before, 150)  # bounded: most of 201 did not fit
        ctl = self.controller(telemetry=telemetry, commands=commands)
        first = ctl.wait_for(self.is_("telemetry", "hello"), timeout_s=10)
        self.assertIsNotNone(first)  # queued before the controller existed
        self.assertEqual(first[3].seq, 1)
        # Later steps carry the drop count so far and a seq that shows the gap.
        latest = None
        deadline = time.monotonic() + 10
        step = 200
        while time.monotonic() < deadline:
            pub.step(step, [layer_stats(0)], step_us=1.0)
            step += 1
            got = ctl.wait_for(lambda ch, rid, k, m: k == "step" and m.step >= 200,
                               timeout_s=0.05)
            if got is not None:
                latest = got[3]
                break
        self.assertIsNotNone(latest)
        self.assertGreaterEqual(latest.telemetry_dropped, dropped_before)
        self.assertEqual(latest.seq, latest.step + 2)  # Hello is 1, step s is s + 2

    def test_reconnect_resends_hello_with_the_settings_in_force(self):
        """"and again, with a fresh sequence number, each time its command
        channel reconnects (for example after the controller restarted)"."""
        first = self.controller()
        pub = self.publisher(first)
        _, _, rid = self.connected(first, pub)
        first.send_command(rid, ENGINE, 4, {"capacity_factor": 1.5},
                           {1: {"expert_bias": [0.0, 0.5, 0.0, 0.0]}})
        self.assertTrue(first.pump_until(lambda: bool(self.commands), pub.poll))
        pub.step(0, [layer_stats(0)], step_us=1.0)
        self.assertIsNotNone(first.wait_for(self.is_("command", "ack")))
        telemetry, commands = first.telemetry, first.commands
        first.close()
        second = FakeController(telemetry=telemetry, commands=commands)
        self.addCleanup(second.close)
        hellos = {}
        second.wait_for(lambda ch, rid, k, m: k == "hello" and not hellos.update({ch: m}) and
                        len(hellos) == 2, timeout_s=15,
                        pump=lambda: pub.step(1, [layer_stats(0)], step_us=1.0))
        self.assertEqual(set(hellos), {"telemetry", "command"})
        hello = hellos["command"]
        self.assertEqual(hellos["telemetry"], hello)  # the same Hello, one seq
        self.assertGreater(hello.seq, 2)
        self.assertEqual(hello.epoch, 4)
        self.assertEqual(wire.knobs_to_dict(hello.knobs)["capacity_factor"], 1.5)
        self.assertEqual([lk.layer for lk in hello.layer_knobs], [1])
        self.assertAlmostEqual(hello.layer_knobs[0].knobs.expert_bias.values[1], 0.5)

    def test_tick_sends_heartbeats_when_idle(self):
        """"An engine that publishes no StepRecord for a while (idle, or
        stalled) sends a Heartbeat instead"."""
        ctl = self.controller()
        pub = self.publisher(ctl, heartbeat_interval_s=0.05)
        self.connected(ctl, pub)
        pub.step(7, [layer_stats(0)], step_us=1.0)
        beats = []
        deadline = time.monotonic() + 5
        while len(beats) < 3 and time.monotonic() < deadline:
            pub.tick()
            got = ctl.recv(0.01)
            if got is not None and got[2] == "heartbeat":
                beats.append(got[3])
        self.assertEqual(len(beats), 3)
        self.assertEqual([b.step for b in beats], [7, 7, 7])
        self.assertEqual([b.seq for b in beats], [3, 4, 5])
        self.assertEqual(beats[0].engine_id, ENGINE.encode())

    def test_curve_allow_list(self):
        """"only engines whose public key is in the controller's allow-list get
        through"; "an engine talks to, and accepts commands from, only the
        holder of that key"."""
        server, allowed, stranger = (mc.generate_curve_keys() for _ in range(3))
        ctl = self.controller(curve_keys=server, allowed_keys=[allowed.public_key])
        pub = self.publisher(ctl, curve=allowed, controller_public_key=server.public_key)
        _, _, rid = self.connected(ctl, pub)
        ctl.send_command(rid, ENGINE, 2, {"top_k": 1})
        self.assertTrue(ctl.pump_until(lambda: bool(self.commands), pub.poll))
        self.assertEqual([c.epoch for c in self.commands], [2])

        outsider = mc.Publisher(
            mc.PublisherOptions(engine_id="outsider", telemetry_endpoint=ctl.telemetry,
                                command_endpoint=ctl.commands, curve=stranger,
                                controller_public_key=server.public_key, linger_ms=0),
            INFO, dict(KNOBS), self.on_command)
        self.addCleanup(outsider.close)
        outsider.hello()
        outsider.step(0, [layer_stats(0)], step_us=1.0)
        self.assertIsNone(ctl.wait_for(lambda ch, rid, k, m: m.engine_id == b"outsider",
                                       timeout_s=1.0))
        self.assertGreater(ctl.zap.denied, 0)

        impostor = mc.generate_curve_keys()  # not the controller: the engine's handshake fails
        fooled = mc.Publisher(
            mc.PublisherOptions(engine_id="fooled", telemetry_endpoint=ctl.telemetry,
                                command_endpoint=ctl.commands, curve=allowed,
                                controller_public_key=impostor.public_key, linger_ms=0),
            INFO, dict(KNOBS), self.on_command)
        self.addCleanup(fooled.close)
        fooled.hello()
        self.assertIsNone(ctl.wait_for(lambda ch, rid, k, m: m.engine_id == b"fooled",
                                       timeout_s=1.0))

    def test_bad_options_are_refused(self):
        ep = "tcp://127.0.0.1:1"
        bad = [
            dict(engine_id=""), dict(engine_id="x" * 256), dict(send_queue=0),
            dict(linger_ms=-1), dict(reconnect_interval_ms=5000),
            dict(curve=mc.CurveKeys("short", "short"), controller_public_key="short"),
        ]
        for fields in bad:
            with self.subTest(fields=fields):
                options = dict(engine_id=ENGINE, telemetry_endpoint=ep, command_endpoint=ep)
                options.update(fields)
                with self.assertRaises(ValueError):
                    mc.Publisher(mc.PublisherOptions(**options), INFO, dict(KNOBS),
                                 self.on_command)
        options = mc.PublisherOptions(engine_id=ENGINE, telemetry_endpoint=ep,
                                      command_endpoint=ep)
        with self.assertRaises(ValueError):
            mc.Publisher(options, INFO, {"capacity": 1.0}, self.on_command)
        with self.assertRaises(mc.WireError):
            mc.Publisher(options, INFO, {"overflow_policy": "spill"}, self.on_command)
        with self.assertRaises(ValueError):
            mc.Publisher(mc.PublisherOptions(engine_id=ENGINE, telemetry_endpoint="bogus://x",
                                             command_endpoint=ep), INFO, {}, self.on_command)


if __name__ == "__main__":
    unittest.main()
