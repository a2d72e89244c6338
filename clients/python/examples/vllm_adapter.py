"""Puts a vLLM-style expert-parallel load balancer (EPLB) under moectld.

vLLM's EPLB keeps, per MoE layer, a ``physical_to_logical_map`` (the logical
expert each physical expert slot holds; slots are spread evenly and in order
over the EP ranks) and counts the tokens each physical expert processed in a
forward pass (``expert_load_pass``, shape [num_moe_layers,
num_physical_experts]). Left alone it rebalances on its own cadence; with this
adapter the controller decides instead:

- in:  after each forward pass, ``record_pass(expert_load_pass)`` publishes a
  StepRecord: per layer, the tokens per physical slot, per logical expert
  (summed over its replicas: both demand and served, as vLLM's MoE is
  dropless), and per EP rank;
- out: a ``phy2log`` command from the controller becomes a new
  ``physical_to_logical_map``; the adapter checks it (every slot names an
  expert, every expert keeps a replica) and hands it to ``apply_placement``,
  which moves the expert weights (in vLLM: rearrange_expert_weights_inplace
  and the map updates). The ack follows the next pass, which ran under it.

Every other knob is refused in the ack: such an engine has no capacity
factor, noise or bias knob. Its top-k is reported in the Hello but fixed.

  adapter = EplbAdapter(options, num_logical_experts=64,
                        physical_to_logical_map=state.physical_to_logical_map,
                        num_ep_ranks=8, top_k=6, apply_placement=move_weights)
  adapter.hello()
  for each forward pass:
      adapter.poll()                         # between passes: a placement may change
      ...run the pass...
      adapter.record_pass(state.expert_load_pass, num_tokens=n, step_us=t)
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import moectl_client as mc  # noqa: E402


def _rows(table):
    """A [layers][n] table as lists of ints (numpy arrays and torch tensors
    have tolist())."""
    if hasattr(table, "tolist"):
        table = table.tolist()
    return [[int(v) for v in row] for row in table]


def logical_to_physical(physical_to_logical_map, num_logical_experts):
    """vLLM's derived maps from one layer's physical_to_logical row:
    (logical_to_physical [E][max replicas] padded with -1, replica_count [E])."""
    slots = [[] for _ in range(num_logical_experts)]
    for slot, expert in enumerate(physical_to_logical_map):
        slots[expert].append(slot)
    width = max(len(s) for s in slots) if slots else 0
    return [s + [-1] * (width - len(s)) for s in slots], [len(s) for s in slots]


class EplbAdapter:
    """One engine (all its EP ranks) on one Publisher; see the module docstring.

    Args:
      options: mc.PublisherOptions.
      num_logical_experts: routed experts per layer.
      physical_to_logical_map: the map in force, [num_moe_layers][num_physical].
      num_ep_ranks: EP ranks; num_physical must be a multiple of it.
      top_k: experts per token (reported, not a knob here).
      apply_placement: called with (new_map, old_map), both
        [num_moe_layers][num_physical] lists, at a step boundary; raise
        mc.CommandRefused to refuse it.
      backend, hidden: reported in the Hello.
    """

    def __init__(self, options, num_logical_experts, physical_to_logical_map, num_ep_ranks,
                 top_k, apply_placement, backend="vllm", hidden=0):
        self._map = _rows(physical_to_logical_map)
        self._num_experts = int(num_logical_experts)
        self._num_layers = len(self._map)
        self._num_physical = len(self._map[0]) if self._map else 0
        if not self._map or any(len(r) != self._num_physical for r in self._map):
            raise ValueError("physical_to_logical_map must be [num_moe_layers][num_physical]")
        if num_ep_ranks < 1 or self._num_physical % num_ep_ranks:
            raise ValueError("num_physical (%d) must be a multiple of num_ep_ranks (%d)" %
                             (self._num_physical, num_ep_ranks))
        for layer, row in enumerate(self._map):
            problem = self._check_row(row)
            if problem:
                raise ValueError("physical_to_logical_map layer %d: %s" % (layer, problem))
        self._num_ranks = int(num_ep_ranks)
        self._top_k = int(top_k)
        self._apply_placement = apply_placement
        self._step = 0
        self.last_move_us = 0.0  # how long the last apply_placement took
        info = mc.EngineInfo(num_layers=self._num_layers, num_experts=self._num_experts,
                             num_replicas=self._num_physical, num_devices=self._num_ranks,
                             hidden=hidden, backend=backend)
        self._publisher = mc.Publisher(
            options, info, knobs={"phy2log": list(self._map[0])}, on_command=self._on_command,
            layer_knobs={l: {"phy2log": list(r)} for l, r in enumerate(self._map)},
            fixed_knobs={"top_k": self._top_k, "capacity_factor": 0.0})

    def close(self):
        self._publisher.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def publisher(self):
        return self._publisher

    @property
    def physical_to_logical_map(self):
        """The map in force, [num_moe_layers][num_physical] (a copy)."""
        return [list(r) for r in self._map]

    def logical_maps(self, layer):
        """(logical_to_physical, logical_replica_count) of `layer`, vLLM's shapes."""
        return logical_to_physical(self._map[layer], self._num_experts)

    def hello(self):
        self._publisher.hello()

    def poll(self):
        """Takes the controller's commands; call it between forward passes."""
        return self._publisher.poll()

    def tick(self):
        self._publisher.tick()

    def record_pass(self, expert_load_pass, num_tokens=None, step_us=0.0, timestamp_ns=None):
        """Publishes one forward pass: `expert_load_pass` holds the tokens each
        physical expert processed, [num_moe_layers][num_physical]. num_tokens
        (tokens entering each MoE layer) defaults to sum / top_k."""
        loads = _rows(expert_load_pass)
        if len(loads) != self._num_layers or any(len(r) != self._num_physical for r in loads):
            raise ValueError("expert_load_pass must be [%d][%d]" %
                             (self._num_layers, self._num_physical))
        per_rank = self._num_physical // self._num_ranks
        layers = []
        for layer, row in enumerate(loads):
            logical = [0] * self._num_experts
            for slot, tokens in enumerate(row):
                logical[self._map[layer][slot]] += tokens
            ranks = [sum(row[r * per_rank:(r + 1) * per_rank]) for r in range(self._num_ranks)]
            slots = sum(row)
            tokens = int(num_tokens) if num_tokens is not None else slots // max(1, self._top_k)
            histogram = [0] * (self._top_k + 1)
            histogram[self._top_k] = tokens
            layers.append(mc.LayerStats(layer=layer, num_tokens=tokens, num_token_slots=slots,
                                        expert_demand=logical, expert_tokens=logical,
                                        slot_tokens=row, device_tokens=ranks,
                                        k_histogram=histogram, capacity=0))
        self._publisher.step(self._step, layers, step_us=step_us, timestamp_ns=timestamp_ns)
        self._step += 1

    def _check_row(self, row):
        if len(row) != self._num_physical:
            return "%d slots, expected %d" % (len(row), self._num_physical)
        if any(not 0 <= e < self._num_experts for e in row):
            return "an expert id outside 0..%d" % (self._num_experts - 1)
        missing = sorted(set(range(self._num_experts)) - set(row))
        if missing:
            return "expert %d has no replica" % missing[0]
        return None

    def _on_command(self, command):
        new_map = [list(r) for r in self._map]
        if "phy2log" in command.knobs:
            new_map = [list(command.knobs["phy2log"]) for _ in new_map]
        for layer, values in command.layer_knobs.items():
            if "phy2log" in values:
                new_map[layer] = list(values["phy2log"])
        for layer, row in enumerate(new_map):
            problem = self._check_row(row)
            if problem:
                raise mc.CommandRefused("phy2log of layer %d: %s" % (layer, problem))
        if new_map == self._map:
            return
        old_map = self._map
        started = time.perf_counter()
        self._apply_placement(new_map, [list(r) for r in old_map])
        self._map = new_map
        self.last_move_us = (time.perf_counter() - started) * 1e6
