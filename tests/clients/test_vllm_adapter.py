"""examples/vllm_adapter.py against a fake of vLLM's expert-parallel load
balancer state, with a fake controller's sockets on loopback."""

import json
import time
import unittest

import numpy as np

import moectl_client as mc
from moectl_client import wire
from fake_controller import FakeController
from test_toy_engine_loop import DaemonRun, moectl
from vllm_adapter import EplbAdapter, logical_to_physical

ENGINE = "vllm-0"


class FakeEplbState:
    """The parts of vLLM's EplbState (and the model's expert weights) the
    adapter touches: physical_to_logical_map [L, P], expert_load_pass [L, P],
    and weights that must move with the map. forward() routes a skewed batch
    and checks every token lands on a slot holding its expert's weights."""

    def __init__(self, num_layers=2, num_logical=8, num_redundant=4, num_ranks=4, top_k=2,
                 seed=1):
        self.num_layers, self.num_logical, self.top_k = num_layers, num_logical, top_k
        self.num_physical = num_logical + num_redundant
        self.num_ranks = num_ranks
        initial = list(range(num_logical)) + [i % num_logical for i in range(num_redundant)]
        self.physical_to_logical_map = np.array([initial] * num_layers)
        self.expert_load_pass = np.zeros((num_layers, self.num_physical), dtype=np.int32)
        # weights[l][slot] holds a copy of its logical expert's weights.
        self.weights = [[np.full(3, e, dtype=np.float32) for e in initial]
                        for _ in range(num_layers)]
        self.rng = np.random.default_rng(seed)
        self.moves = []

    def forward(self, num_tokens=64):
        self.expert_load_pass[:] = 0
        p = np.ones(self.num_logical)
        p[5] = 8.0  # a hot expert
        p /= p.sum()
        for layer in range(self.num_layers):
            row = self.physical_to_logical_map[layer]
            replicas = [np.flatnonzero(row == e) for e in range(self.num_logical)]
            for t in range(num_tokens):
                for expert in self.rng.choice(self.num_logical, size=self.top_k, replace=False,
                                              p=p):
                    slot = replicas[expert][t % len(replicas[expert])]
                    assert self.weights[layer][slot][0] == expert, "token on a wrong expert"
                    self.expert_load_pass[layer, slot] += 1
        return num_tokens

    def apply_placement(self, new_map, old_map):
        """Moves expert weights into the slots whose expert changed (what
        rearrange_expert_weights_inplace does across ranks)."""
        self.moves.append((new_map, old_map))
        for layer, (new, old) in enumerate(zip(new_map, old_map)):
            old_weights = self.weights[layer]
            source = {e: old_weights[old.index(e)] for e in set(old)}
            self.weights[layer] = [source[e].copy() for e in new]
        self.physical_to_logical_map = np.array(new_map)


class EplbAdapterTest(unittest.TestCase):

    def setUp(self):
        self.ctl = FakeController()
        self.addCleanup(self.ctl.close)
        self.state = FakeEplbState()
        self.refuse = None
        options = mc.PublisherOptions(engine_id=ENGINE, telemetry_endpoint=self.ctl.telemetry,
                                      command_endpoint=self.ctl.commands)
        self.adapter = EplbAdapter(options, num_logical_experts=self.state.num_logical,
                                   physical_to_logical_map=self.state.physical_to_logical_map,
                                   num_ep_ranks=self.state.num_ranks, top_k=self.state.top_k,
                                   apply_placement=self.apply_placement, hidden=64)
        self.addCleanup(self.adapter.close)
        self.adapter.hello()
        got = self.ctl.wait_for(lambda ch, rid, k, m: ch == "command" and k == "hello")
        self.assertIsNotNone(got)
        self.rid, self.hello = got[1], got[3]

    def apply_placement(self, new_map, old_map):
        if self.refuse:
            raise mc.CommandRefused(self.refuse)
        self.state.apply_placement(new_map, old_map)

    def deliver(self, epoch):
        """Polls until the adapter has taken the command of `epoch`."""
        self.ctl.pump_until(lambda: self.adapter.publisher.epoch >= epoch, self.adapter.poll)
        self.assertEqual(self.adapter.publisher.epoch, epoch)

    def run_pass(self):
        self.adapter.poll()
        tokens = self.state.forward()
        self.adapter.record_pass(self.state.expert_load_pass, num_tokens=tokens, step_us=250.0)
        got = self.ctl.wait_for(lambda ch, rid, k, m: k == "step")
        self.assertIsNotNone(got)
        return got[3]

    def next_ack(self):
        got = self.ctl.wait_for(lambda ch, rid, k, m: k == "ack", pump=self.adapter.poll)
        self.assertIsNotNone(got)
        return got[3]

    def test_hello_describes_the_expert_parallel_group(self):
        h = self.hello
        self.assertEqual((h.num_layers, h.num_experts, h.num_replicas, h.num_devices),
                         (2, 8, 12, 4))
        self.assertEqual(h.backend, b"vllm")
        knobs = wire.knobs_to_dict(h.knobs)
        self.assertEqual(knobs["phy2log"], [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3])
        self.assertEqual(knobs["top_k"], 2)  # fixed, reported
        self.assertEqual(knobs["capacity_factor"], 0.0)  # dropless
        self.assertEqual(len(h.layer_knobs), 0)  # every layer runs the same map

    def test_loads_in_become_demand_served_and_rank_figures(self):
        step = self.run_pass()
        self.assertEqual(step.epoch, 0)
        self.assertEqual(len(step.layers), 2)
        for layer, record in enumerate(step.layers):
            row = self.state.expert_load_pass[layer]
            self.assertEqual(list(record.slot_tokens), row.tolist())
            logical = np.bincount(self.state.physical_to_logical_map[layer], weights=row,
                                  minlength=8).astype(int).tolist()
            self.assertEqual(list(record.expert_demand), logical)
            self.assertEqual(list(record.expert_tokens), logical)  # dropless
            self.assertEqual(list(record.device_tokens), row.reshape(4, 3).sum(axis=1).tolist())
            self.assertEqual(record.num_tokens, 64)
            self.assertEqual(record.num_token_slots, 128)
            self.assertEqual((record.capacity, record.dropped), (0, 0))
            self.assertEqual(list(record.k_histogram), [0, 0, 64])
        hot = int(np.argmax(step.layers[0].expert_demand))
        self.assertEqual(hot, 5)

    def test_placement_command_out_becomes_the_new_map(self):
        self.run_pass()
        # Give the hot expert 5 three more slots on layer 1 (taking 0..2's spares).
        new_row = [0, 1, 2, 3, 4, 5, 6, 7, 5, 5, 5, 3]
        self.ctl.send_command(self.rid, ENGINE, 3, layer_knobs={1: {"phy2log": new_row}},
                              reason="replication: device max/mean 1.9 -> 1.2")
        self.deliver(3)  # poll() applies it between passes
        step = self.run_pass()
        self.assertEqual(step.epoch, 3)
        self.assertEqual(len(self.state.moves), 1)
        self.assertEqual(self.adapter.physical_to_logical_map[1], new_row)
        self.assertEqual(self.adapter.physical_to_logical_map[0],
                         [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3])
        self.assertEqual(self.state.physical_to_logical_map[1].tolist(), new_row)
        # The fake's weights moved with the map (forward() asserts it per token).
        self.assertEqual([w[0] for w in self.state.weights[1]], new_row)
        l2p, count = self.adapter.logical_maps(1)
        self.assertEqual(count, [1, 1, 1, 2, 1, 4, 1, 1])
        self.assertEqual(l2p[5], [5, 8, 9, 10])
        self.assertEqual(l2p[0], [0, -1, -1, -1])
        # The step's figures follow the new map.
        row = self.state.expert_load_pass[1]
        self.assertEqual(step.layers[1].expert_demand[5], int(row[[5, 8, 9, 10]].sum()))
        ack = self.next_ack()
        self.assertEqual((ack.epoch, ack.applied, ack.applied_at_step), (3, True, step.step))
        # An engine-wide phy2log applies to every layer.
        every = [0, 1, 2, 3, 4, 5, 6, 7, 5, 5, 4, 4]
        self.ctl.send_command(self.rid, ENGINE, 4, knobs={"phy2log": every})
        self.deliver(4)
        step = self.run_pass()
        self.assertEqual(step.epoch, 4)
        self.assertEqual(self.adapter.physical_to_logical_map, [every, every])
        self.assertEqual(self.next_ack().epoch, 4)

    def test_what_such_an_engine_refuses(self):
        cases = [
            ({"capacity_factor": 2.0}, None, None, "this engine has no knob capacity_factor"),
            ({"top_k": 4}, None, None, "this engine has no knob top_k"),
            (None, {0: {"phy2log": [0, 1, 2, 4, 4, 5, 6, 7, 0, 1, 2, 4]}}, None,
             "phy2log of layer 0: expert 3 has no replica"),
            (None, {1: {"phy2log": [0, 1, 2, 3, 4, 5, 6, 7]}}, None,
             "phy2log of layer 1: 8 slots, expected 12"),
            (None, {1: {"phy2log": [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 9]}}, None,
             "phy2log of layer 1: an expert id outside 0..7"),
            (None, {1: {"phy2log": [0, 1, 2, 3, 4, 5, 6, 7, 5, 5, 5, 5]}}, "no memory on rank 3",
             "no memory on rank 3"),
        ]
        for epoch, (knobs, layers, refuse, reason) in enumerate(cases, start=1):
            with self.subTest(reason=reason):
                self.refuse = refuse
                self.ctl.send_command(self.rid, ENGINE, epoch, knobs=knobs, layer_knobs=layers)
                ack = self.next_ack()
                self.assertEqual((ack.epoch, ack.applied), (epoch, False))
                self.assertIn(reason, ack.error.decode())
        self.assertEqual(self.state.moves, [])
        self.assertEqual(self.adapter.publisher.epoch, 0)
        self.assertEqual(self.run_pass().epoch, 0)

    def test_bad_inputs(self):
        options = mc.PublisherOptions(engine_id="x", telemetry_endpoint=self.ctl.telemetry,
                                      command_endpoint=self.ctl.commands)
        for bad_map, ranks in (([[0, 1, 2]], 2), ([[0, 1], [0, 1, 1]], 1), ([[0, 0]], 1)):
            with self.subTest(map=bad_map):
                with self.assertRaises(ValueError):
                    EplbAdapter(options, num_logical_experts=2, physical_to_logical_map=bad_map,
                                num_ep_ranks=ranks, top_k=1, apply_placement=None)
        with self.assertRaises(ValueError):
            self.adapter.record_pass([[1, 2, 3]])

    def test_logical_to_physical(self):
        l2p, count = logical_to_physical([0, 1, 0, 2, 0], 3)
        self.assertEqual(l2p, [[0, 2, 4], [1, -1, -1], [3, -1, -1]])
        self.assertEqual(count, [3, 1, 1])


class EplbAdapterUnderMoectldTest(unittest.TestCase):
    """The adapter under a real moectld: the replication policy re-places the
    fake EPLB's hot expert; the new physical_to_logical_map moves its weights,
    is acked, and the next passes run under its epoch."""

    def test_moectld_replaces_the_physical_to_logical_map(self):
        run = DaemonRun("""
[policies.bias]
enabled = false

[policies.replication]
min_steps = 8
""")
        self.addCleanup(run.close)
        self.assertTrue(run.start(), run.log())
        state = FakeEplbState(num_layers=2, num_logical=8, num_redundant=4, num_ranks=4)
        options = mc.PublisherOptions(engine_id="vllm-e2e", telemetry_endpoint=run.telemetry,
                                      command_endpoint=run.commands)
        adapter = EplbAdapter(options, num_logical_experts=8,
                              physical_to_logical_map=state.physical_to_logical_map,
                              num_ep_ranks=4, top_k=2, apply_placement=state.apply_placement)
        self.addCleanup(adapter.close)
        adapter.hello()
        passes_after, deadline = 0, time.monotonic() + 60
        while passes_after < 10 and time.monotonic() < deadline:
            adapter.poll()
            tokens = state.forward(num_tokens=64)  # asserts tokens meet their weights
            adapter.record_pass(state.expert_load_pass, num_tokens=tokens, step_us=500.0)
            if state.moves:
                passes_after += 1
            time.sleep(0.01)
        self.assertTrue(state.moves, run.log()[-3000:])
        self.assertEqual(adapter.physical_to_logical_map, state.physical_to_logical_map.tolist())
        self.assertGreater(adapter.logical_maps(0)[1][5] + adapter.logical_maps(1)[1][5], 2)
        epoch = adapter.publisher.epoch
        adapter.close()
        self.assertEqual(run.stop(), 0, run.log()[-3000:])
        decisions = json.loads(moectl("decisions", "--db", run.db, "--engine", "vllm-e2e",
                                      "--format", "json"))
        placed = [d for d in decisions if d["knob"] == "phy2log" and d["acked_epoch"]]
        self.assertTrue(placed, json.dumps(decisions, indent=1)[:3000])
        self.assertLessEqual(placed[0]["acked_epoch"], epoch)
        self.assertIsNotNone(placed[0]["applied_at_step"])


if __name__ == "__main__":
    unittest.main()
