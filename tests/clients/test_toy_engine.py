"""The toy engine's model (examples/toy_engine.py): its figures add up the way
the schema defines them, and its knobs do what DESIGN.md says."""

import math
import unittest

import moectl_client as mc
from toy_engine import ToyMoE


def command(epoch, knobs=None, layer_knobs=None):
    return mc.Command(epoch=epoch, issued_ns=0, reason="", knobs=knobs or {},
                      layer_knobs=layer_knobs or {})


class ToyMoETest(unittest.TestCase):

    def check_layer(self, model, s):
        k = model.knobs[s.layer]
        self.assertEqual(sum(s.expert_demand), s.num_tokens * k["top_k"])
        self.assertEqual(s.num_token_slots, s.num_tokens * k["top_k"])
        served = int(sum(s.expert_tokens))
        self.assertEqual(served + s.dropped, s.num_token_slots)
        self.assertEqual(s.overflowed, s.rerouted + s.dropped)
        self.assertEqual(int(sum(s.slot_tokens)), served)
        self.assertEqual(int(sum(s.device_tokens)), served)
        if s.capacity:
            self.assertLessEqual(max(s.expert_tokens), s.capacity)
        self.assertEqual(len(s.timing.device_expert_us), model.num_devices)
        self.assertGreater(s.router_entropy, 0)
        self.assertTrue(0 < s.gate_mass <= 1)

    def test_figures_add_up_under_every_overflow_policy(self):
        model = ToyMoE(num_replicas=20, seed=3)
        for policy in ("drop", "reroute"):
            model.apply(command(1 if policy == "drop" else 2, {"overflow_policy": policy}))
            layers, step_us = model.step(0)
            self.assertGreater(step_us, 0)
            for s in layers:
                self.check_layer(model, s)
            if policy == "drop":
                self.assertGreater(layers[0].dropped, 0)  # skewed: cf 1 overflows
                self.assertEqual(layers[0].rerouted, 0)
            else:
                self.assertGreater(layers[0].rerouted, 0)

    def test_capacity_factor_controls_drops(self):
        drops = {}
        for cf in (1.0, 2.0, 0.0):
            model = ToyMoE(capacity_factor=cf, seed=5)
            layers, _ = model.step(0)
            drops[cf] = sum(s.dropped for s in layers)
            self.assertEqual(layers[0].capacity, math.ceil(cf * 256 * 2 / 16) if cf else 0)
        self.assertGreater(drops[1.0], drops[2.0])
        self.assertEqual(drops[0.0], 0)  # unlimited

    def test_bias_moves_demand_and_replicas_split_load(self):
        model = ToyMoE(num_replicas=20, seed=7)
        base, _ = model.step(0)
        hot = int(max(range(16), key=lambda e: base[1].expert_demand[e]))
        bias = [0.0] * 16
        bias[hot] = -1.0  # scores are probabilities: -1 excludes it
        model.apply(command(1, layer_knobs={1: {"expert_bias": bias}}))
        after, _ = model.step(0)
        self.assertEqual(after[1].expert_demand[hot], 0)
        placement = model.knobs[0]["phy2log"]
        slots = [i for i, e in enumerate(placement) if e == 0]
        self.assertEqual(len(slots), 2)  # slots 16..19 replicate experts 0..3
        shares = [after[0].slot_tokens[i] for i in slots]
        self.assertLessEqual(abs(shares[0] - shares[1]), 1)

    def test_bad_values_are_refused_and_nothing_changes(self):
        model = ToyMoE()
        before = [dict(k) for k in model.knobs]
        for knobs, layers in (({"top_k": 17}, None), ({"capacity_factor": -1.0}, None),
                              ({"overflow_policy": "replica"}, None),
                              (None, {1: {"expert_bias": [0.0] * 3}}),
                              (None, {0: {"phy2log": [0] * 16}})):
            with self.subTest(knobs=knobs, layers=layers):
                with self.assertRaises(mc.CommandRefused):
                    model.apply(command(1, knobs, layers))
                self.assertEqual(model.knobs, before)


if __name__ == "__main__":
    unittest.main()
