"""The Python codec against the C++ one (docs/telemetry.md, "Envelope and
versions"): messages made by the C++ codec decode here field for field, what
Python encodes the C++ codec decodes and re-encodes to the same message, and
both refuse the same bad input with the same kind of error."""

import os
import subprocess
import tempfile
import unittest

from moectl_client import wire
from moectl_client.wire import WireError, pb

WIRE_SAMPLES = os.environ.get("WIRE_SAMPLES_BIN", "")


def envelope_bytes(**fields):
    return pb.Envelope(**fields).SerializeToString()


class CppSamplesTest(unittest.TestCase):
    """tests/telemetry/sample_messages.h, encoded by the C++ codec."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        subprocess.run([WIRE_SAMPLES, "write", cls.dir.name], check=True, timeout=30)

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def sample(self, kind):
        with open(os.path.join(self.dir.name, kind + ".bin"), "rb") as f:
            got_kind, message = wire.decode(f.read())
        self.assertEqual(got_kind, kind)
        return message

    def test_step_record(self):
        s = self.sample("step")
        self.assertEqual(s.engine_id, b"engine-a")
        self.assertEqual((s.seq, s.step, s.epoch), (41, 1000, 7))
        self.assertEqual(s.timestamp_ns, 1700000000123456789)
        self.assertTrue(s.timing_on_device)
        self.assertEqual(s.step_us, 1234.5)
        self.assertEqual(s.telemetry_dropped, 3)
        self.assertEqual(s.placement_moved_bytes, 3 * 786432)
        self.assertEqual(len(s.layers), 2)
        l0, l1 = s.layers
        self.assertEqual(list(l1.expert_tokens), [100, 200, 300, 401])
        self.assertEqual(list(l1.expert_demand), [90, 180, 330, 501])
        self.assertEqual(l0.capacity, 450)
        self.assertEqual(list(l0.slot_tokens), [100, 200, 300, 200, 200])
        self.assertEqual(list(l0.device_tokens), [600, 400])
        self.assertEqual((l0.overflowed, l0.rerouted, l0.dropped), (12, 10, 2))
        self.assertEqual(list(l0.k_histogram), [0, 5, 20, 487])
        self.assertTrue(l0.HasField("quality_error"))
        self.assertEqual(l0.quality_error, 0.0125)
        self.assertFalse(l1.HasField("quality_error"))  # absent, not 0
        self.assertTrue(l1.routed_on_device)
        self.assertEqual(list(l0.timing.device_expert_us), [30.0, 33.0])
        self.assertEqual(l0.timing.total_us, 77.0)

    def test_hello(self):
        h = self.sample("hello")
        self.assertEqual(h.schema_version, wire.SCHEMA_VERSION)
        self.assertEqual((h.num_layers, h.num_experts, h.num_replicas, h.num_devices),
                         (2, 4, 5, 2))
        knobs = wire.knobs_to_dict(h.knobs)
        self.assertEqual(knobs["overflow_policy"], "reroute")
        self.assertEqual(knobs["top_k"], 8)
        self.assertEqual(knobs["capacity_factor"], 1.25)
        self.assertEqual(knobs["phy2log"], [0, 1, 2, 3, 1])
        self.assertEqual(len(knobs["expert_bias"]), 4)
        self.assertAlmostEqual(knobs["expert_bias"][3], 1e-7, delta=1e-12)  # float32 on the wire
        self.assertEqual(set(knobs), set(wire.ALL_KNOBS))  # every field present
        self.assertEqual(len(h.layer_knobs), 1)
        self.assertEqual(h.layer_knobs[0].layer, 1)
        self.assertEqual(set(wire.knobs_to_dict(h.layer_knobs[0].knobs)), {"expert_bias"})

    def test_command(self):
        c = self.sample("command")
        self.assertEqual(c.epoch, 8)
        self.assertEqual(c.reason.decode(), "capacity: overflow 3.1% > 2% target")
        sparse = wire.knobs_to_dict(c.layer_knobs[0].knobs)
        # Present-but-empty survives: an empty bias is not "leave as is".
        self.assertEqual(sparse, {"capacity_factor": 2.0, "expert_bias": []})

    def test_heartbeat_and_ack(self):
        hb = self.sample("heartbeat")
        self.assertEqual((hb.seq, hb.step, hb.epoch), (42, 1001, 7))
        ack = self.sample("ack")
        self.assertFalse(ack.applied)
        self.assertEqual(ack.error.decode(), "top_k 99 exceeds num_experts")
        self.assertEqual(ack.applied_at_step, 1002)

    def test_sync_and_await(self):
        sync = self.sample("sync")
        self.assertEqual((sync.engine_id, sync.step), (b"engine-a", 1000))
        self.assertTrue(self.sample("step").await_sync)

    def test_python_reencodes_cpp_bytes_unchanged(self):
        for kind in ("step", "hello", "heartbeat", "command", "ack", "sync"):
            with self.subTest(kind=kind):
                with open(os.path.join(self.dir.name, kind + ".bin"), "rb") as f:
                    data = f.read()
                got_kind, message = wire.decode(data)
                again = wire.encode(got_kind, message)
                self.assertEqual(wire.decode(again)[1], message)


class PythonToCppTest(unittest.TestCase):
    """Python-encoded messages through the C++ codec and back."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def reencode(self, data):
        """(exit status, stdout, bytes the C++ codec wrote back or None)."""
        src = os.path.join(self.dir.name, "in.bin")
        dst = os.path.join(self.dir.name, "out.bin")
        if os.path.exists(dst):
            os.remove(dst)
        with open(src, "wb") as f:
            f.write(data)
        done = subprocess.run([WIRE_SAMPLES, "reencode", src, dst], capture_output=True,
                              text=True, timeout=30)
        out = None
        if done.returncode == 0:
            with open(dst, "rb") as f:
                out = f.read()
        return done.returncode, done.stdout.strip(), out

    def roundtrip(self, kind, message):
        rc, said, out = self.reencode(wire.encode(kind, message))
        self.assertEqual(rc, 0, said)
        self.assertEqual(said, kind)
        got_kind, back = wire.decode(out)
        self.assertEqual(got_kind, kind)
        self.assertEqual(back, message)

    def test_messages_the_publisher_sends(self):
        hello = pb.Hello(engine_id="toy-é".encode(), seq=1, schema_version=1, backend=b"numpy",
                         num_layers=2, num_experts=4, num_replicas=6, num_devices=2, hidden=32,
                         epoch=0, timestamp_ns=1700000000000000000)
        wire.knobs_from_dict({"top_k": 2, "top_p": 0.0, "k_min": 1, "capacity_factor": 1.5,
                              "overflow_policy": "replica", "noise_std": 0.0, "shortlist": 0,
                              "availability_weight": 0.0, "expert_bias": [0.0, 0.5, -0.25, 0.0],
                              "phy2log": [0, 1, 2, 3, 0, 1]}, hello.knobs)
        lk = hello.layer_knobs.add(layer=1)
        wire.knobs_from_dict({"phy2log": [0, 1, 2, 3, 2, 3]}, lk.knobs)
        self.roundtrip("hello", hello)

        step = pb.StepRecord(engine_id=b"toy", seq=2, step=0, timestamp_ns=1700000000000000001,
                             epoch=0, step_us=812.25, telemetry_dropped=4)
        layer = step.layers.add(layer=0, num_tokens=8, num_token_slots=16, capacity=5,
                                overflowed=3, rerouted=1, dropped=2, router_entropy=1.25,
                                gate_mass=0.75)
        layer.expert_demand.extend([8, 4, 3, 1])
        layer.expert_tokens.extend([5, 4, 3, 2])
        layer.slot_tokens.extend([3, 4, 3, 2, 2, 0])
        layer.device_tokens.extend([10, 4])
        layer.k_histogram.extend([0, 0, 8])
        layer.quality_error = 0.0
        layer.timing.router_us = 10.5
        layer.timing.device_expert_us.extend([1.0, 2.0])
        self.roundtrip("step", step)

        self.roundtrip("heartbeat", pb.Heartbeat(engine_id=b"toy", seq=3, step=0, epoch=0,
                                                 timestamp_ns=5))
        self.roundtrip("ack", pb.Ack(engine_id=b"toy", epoch=9, applied=False,
                                     error="this engine has no knob top_p".encode(),
                                     timestamp_ns=6))
        self.roundtrip("ack", pb.Ack(engine_id=b"toy", epoch=9, applied=True, applied_at_step=17,
                                     timestamp_ns=7))

    def test_bad_bytes_are_refused_alike(self):
        """Each case: both codecs refuse it, with the same error kind."""
        long_text = pb.Ack(engine_id=b"e", error=b"x" * (wire.MAX_TEXT_BYTES + 1))
        bad_enum = pb.Command(engine_id=b"e", epoch=1)
        bad_enum.knobs.overflow_policy = 7
        long_array = pb.StepRecord(engine_id=b"e")
        long_array.layers.add().k_histogram.extend([0] * (wire.MAX_ARRAY_LENGTH + 1))
        big_count = pb.Hello(engine_id=b"e", num_experts=wire.MAX_ARRAY_LENGTH + 1)
        cases = {
            "empty": (b"", "corruption"),
            "garbage": (b"not protobuf at all", "corruption"),
            "no version": (pb.Envelope(ack=pb.Ack(engine_id=b"e")).SerializeToString(),
                           "corruption"),
            "version 2": (envelope_bytes(schema_version=2, ack=pb.Ack(engine_id=b"e")),
                          "unsupported"),
            "no payload": (envelope_bytes(schema_version=1), "corruption"),
            "newer payload type": (envelope_bytes(schema_version=1) + b"\x7a\x02\x08\x01",
                                   "unsupported"),
            "empty engine id": (envelope_bytes(schema_version=1, ack=pb.Ack(epoch=3)),
                                "corruption"),
            "engine id 256 bytes": (envelope_bytes(schema_version=1,
                                                   ack=pb.Ack(engine_id=b"e" * 256)),
                                    "corruption"),
            "engine id starts with NUL": (envelope_bytes(schema_version=1,
                                                         ack=pb.Ack(engine_id=b"\0e")),
                                          "corruption"),
            "engine id not UTF-8": (envelope_bytes(schema_version=1,
                                                   heartbeat=pb.Heartbeat(engine_id=b"\xc3\x28")),
                                    "corruption"),
            "surrogate in UTF-8": (envelope_bytes(schema_version=1,
                                                  ack=pb.Ack(engine_id=b"e",
                                                             error=b"\xed\xa0\x80")),
                                   "corruption"),
            "text over 4096 bytes": (envelope_bytes(schema_version=1, ack=long_text),
                                     "corruption"),
            "unknown overflow policy": (envelope_bytes(schema_version=1, command=bad_enum),
                                        "corruption"),
            "array over 2^20": (envelope_bytes(schema_version=1, step=long_array), "corruption"),
            "count over 2^20": (envelope_bytes(schema_version=1, hello=big_count), "corruption"),
        }
        for name, (data, code) in cases.items():
            with self.subTest(case=name):
                with self.assertRaises(WireError) as raised:
                    wire.decode(data)
                self.assertEqual(raised.exception.code, code, str(raised.exception))
                rc, said, _ = self.reencode(data)
                self.assertEqual(rc, 1, said)
                self.assertTrue(said.startswith(code + ": "), said)

    def test_unknown_fields_are_ignored(self):
        """A newer minor schema adds fields: both codecs decode the rest."""
        data = envelope_bytes(schema_version=1, heartbeat=pb.Heartbeat(engine_id=b"e", seq=4))
        data += b"\xa0\x06\x01"  # field 100, varint 1: unknown to both
        kind, hb = wire.decode(data)
        self.assertEqual((kind, hb.seq), ("heartbeat", 4))
        rc, said, _ = self.reencode(data)
        self.assertEqual((rc, said), (0, "heartbeat"))


class EncodeTest(unittest.TestCase):
    """What the client refuses to send."""

    def test_encode_checks_invariants(self):
        with self.assertRaises(WireError) as raised:
            wire.encode("ack", pb.Ack(engine_id=b"", epoch=1))
        self.assertEqual(raised.exception.code, "invalid_argument")
        self.assertIn("Ack.engine_id is empty", str(raised.exception))
        with self.assertRaises(WireError):
            wire.encode("bogus", pb.Ack(engine_id=b"e"))

    def test_knob_dicts(self):
        k = wire.knobs_from_dict({"capacity_factor": 2, "phy2log": [], "overflow_policy": "drop"})
        self.assertEqual(wire.knobs_to_dict(k),
                         {"capacity_factor": 2.0, "phy2log": [], "overflow_policy": "drop"})
        with self.assertRaises(WireError):
            wire.knobs_from_dict({"capacity": 1.0})
        with self.assertRaises(WireError):
            wire.knobs_from_dict({"overflow_policy": "spill"})


if __name__ == "__main__":
    unittest.main()
