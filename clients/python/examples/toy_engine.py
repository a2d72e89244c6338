#!/usr/bin/python3
"""A toy MoE engine in numpy that moectld can control through moectl_client.

Each step, every layer routes a batch of tokens: gate logits (x @ W_g),
softmax scores, selection scores = scores + expert_bias + noise, top-k,
per-expert capacity ceil(cf * T * k / E) (0 = unlimited) with the overflow
policy (drop, or reroute to the next choice with room), replicas sharing an
expert's tokens evenly over the devices that hold them (phy2log), and a small
SwiGLU expert FFN per expert. It reports demand (before capacity) and served
token-slots per expert, per slot and per device, drops, entropy, gate mass and
measured timings; it applies commands between steps and acks them through the
Publisher.

The workload is skewed on purpose: most tokens sit near a few "hot" experts'
gate directions, which drift slowly, so a capacity factor of 1 drops
token-slots and the controller has something to fix.

  clients/python/examples/toy_engine.py --steps 500   # after ./scripts/build

(the wire classes come from build/clients/python/wire, or from
MOECTL_CLIENT_WIRE_DIR; see docs/integrations.md).
"""

import argparse
import json
import logging
import math
import os
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import moectl_client as mc  # noqa: E402

# The knobs the toy engine has; the Publisher refuses commands for the others
# (top_p, k_min, shortlist, availability_weight).
TOY_KNOBS = ("top_k", "capacity_factor", "overflow_policy", "noise_std", "expert_bias",
             "phy2log")


def _now_us():
    return time.perf_counter() * 1e6


class ToyMoE:
    """The model and its routing; no I/O. Knobs are per layer."""

    def __init__(self, num_layers=2, num_experts=16, top_k=2, hidden=32, ffn=64,
                 num_devices=4, num_replicas=0, tokens=256, capacity_factor=1.0,
                 num_hot=2, hot_fraction=0.6, seed=0):
        if num_replicas == 0:
            num_replicas = num_experts
        if num_replicas % num_devices or num_replicas < num_experts:
            raise ValueError("num_replicas must be >= num_experts and a multiple of num_devices")
        self.num_layers, self.num_experts, self.hidden = num_layers, num_experts, hidden
        self.num_devices, self.num_replicas, self.tokens = num_devices, num_replicas, tokens
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.w_gate = [rng.normal(size=(hidden, num_experts)) / math.sqrt(hidden)
                       for _ in range(num_layers)]
        self.w_up = [rng.normal(size=(num_experts, hidden, 2 * ffn)) / math.sqrt(hidden)
                     for _ in range(num_layers)]
        self.w_down = [rng.normal(size=(num_experts, ffn, hidden)) / math.sqrt(ffn)
                       for _ in range(num_layers)]
        self.num_hot, self.hot_fraction = num_hot, hot_fraction
        default_placement = [s % num_experts for s in range(num_replicas)]
        self.knobs = [{"top_k": top_k, "capacity_factor": capacity_factor,
                       "overflow_policy": "drop", "noise_std": 0.0,
                       "expert_bias": [0.0] * num_experts, "phy2log": list(default_placement)}
                      for _ in range(num_layers)]

    # -- knobs --------------------------------------------------------------

    def check_knobs(self, k):
        """Raises mc.CommandRefused naming the first value the toy cannot run."""
        e, r = self.num_experts, self.num_replicas
        if not 1 <= k["top_k"] <= e:
            raise mc.CommandRefused("top_k %d out of range 1..%d" % (k["top_k"], e))
        if not k["capacity_factor"] >= 0 or not math.isfinite(k["capacity_factor"]):
            raise mc.CommandRefused("capacity_factor must be >= 0, got %r" % k["capacity_factor"])
        if not k["noise_std"] >= 0 or not math.isfinite(k["noise_std"]):
            raise mc.CommandRefused("noise_std must be >= 0, got %r" % k["noise_std"])
        if k["overflow_policy"] not in ("drop", "reroute"):
            raise mc.CommandRefused("overflow_policy '%s' is not implemented by the toy engine "
                                    "(it has drop and reroute)" % k["overflow_policy"])
        if len(k["expert_bias"]) != e or not all(math.isfinite(b) for b in k["expert_bias"]):
            raise mc.CommandRefused("expert_bias must hold %d finite values, got %d" %
                                    (e, len(k["expert_bias"])))
        placement = k["phy2log"]
        if len(placement) != r or any(not 0 <= p < e for p in placement):
            raise mc.CommandRefused("phy2log must hold %d expert ids below %d" % (r, e))
        if len(set(placement)) != e:
            raise mc.CommandRefused("phy2log leaves an expert without a replica")

    def apply(self, command):
        """Applies a Command at a step boundary, all layers or none."""
        staged = [dict(k) for k in self.knobs]
        for k in staged:
            k.update(command.knobs)
        for layer, values in command.layer_knobs.items():
            staged[layer].update(values)
        for layer, k in enumerate(staged):
            try:
                self.check_knobs(k)
            except mc.CommandRefused as e:
                raise mc.CommandRefused("layer %d: %s" % (layer, e)) from None
        self.knobs = staged

    # -- one step -----------------------------------------------------------

    def tokens_for(self, step):
        """A skewed batch: hot_fraction of the tokens sit near the gate
        directions of num_hot experts of layer 0, which move every 200 steps."""
        rng, t, h = self.rng, self.tokens, self.hidden
        x = rng.normal(size=(t, h))
        hot = [(step // 200 + 5 * i) % self.num_experts for i in range(self.num_hot)]
        n_hot = int(self.hot_fraction * t)
        which = rng.integers(0, len(hot), size=n_hot)
        directions = self.w_gate[0][:, hot].T  # [num_hot, hidden]
        x[:n_hot] += 3.0 * directions[which] / np.linalg.norm(directions[which], axis=1,
                                                              keepdims=True) * math.sqrt(h) / 2
        return x

    def step(self, step):
        """Runs one step; returns (list of mc.LayerStats, step_us)."""
        start = _now_us()
        x = self.tokens_for(step)
        layers = []
        for l in range(self.num_layers):
            stats, x = self._layer(l, x)
            layers.append(stats)
        return layers, _now_us() - start

    def _layer(self, l, x):
        k = self.knobs[l]
        e, t, top_k = self.num_experts, x.shape[0], k["top_k"]
        t0 = _now_us()
        logits = x @ self.w_gate[l]
        logits -= logits.max(axis=1, keepdims=True)
        scores = np.exp(logits)
        scores /= scores.sum(axis=1, keepdims=True)
        select = scores + np.asarray(k["expert_bias"])[None, :]
        if k["noise_std"] > 0:
            select = select + self.rng.normal(scale=k["noise_std"], size=select.shape)
        ranking = np.argsort(-select, axis=1)  # every expert, best first
        chosen = ranking[:, :top_k]
        gates = np.take_along_axis(scores, chosen, axis=1)
        gate_mass = float(gates.sum(axis=1).mean())
        gates = gates / gates.sum(axis=1, keepdims=True)
        entropy = float(-(scores * np.log(np.maximum(scores, 1e-30))).sum(axis=1).mean())
        demand = np.bincount(chosen.ravel(), minlength=e)
        t1 = _now_us()

        # Capacity: first choices first, then second choices, in token order.
        cf = k["capacity_factor"]
        capacity = math.ceil(cf * t * top_k / e) if cf > 0 else 0
        flat = chosen.T.ravel()  # slot i = rank i // t, token i % t
        if capacity:
            order = np.argsort(flat, kind="stable")
            starts = np.concatenate(([0], np.cumsum(np.bincount(flat, minlength=e))[:-1]))
            position = np.empty_like(flat)
            position[order] = np.arange(flat.size) - starts[flat[order]]
            served = position < capacity
        else:
            served = np.ones(flat.size, dtype=bool)
        assigned = flat.copy()
        load = np.bincount(flat[served], minlength=e)
        overflowed = int((~served).sum())
        rerouted = 0
        if overflowed and k["overflow_policy"] == "reroute":
            taken = {}  # token -> experts it already uses
            for i in np.flatnonzero(~served):
                token = i % t
                used = taken.setdefault(token, set(chosen[token].tolist()))
                for alt in ranking[token, top_k:]:
                    if alt not in used and load[alt] < capacity:
                        assigned[i], served[i] = alt, True
                        used.add(alt)
                        load[alt] += 1
                        rerouted += 1
                        break
        dropped = overflowed - rerouted
        expert_tokens = np.bincount(assigned[served], minlength=e)

        # Replicas split an expert's tokens evenly; slot s sits on device
        # s // (num_replicas / num_devices).
        placement = np.asarray(k["phy2log"])
        replicas = np.bincount(placement, minlength=e)
        slot_tokens = np.zeros(self.num_replicas, dtype=np.int64)
        for expert in range(e):
            slots = np.flatnonzero(placement == expert)
            share, extra = divmod(int(expert_tokens[expert]), len(slots))
            slot_tokens[slots] = share
            slot_tokens[slots[:extra]] += 1
        per_device = self.num_replicas // self.num_devices
        device_tokens = slot_tokens.reshape(self.num_devices, per_device).sum(axis=1)
        t2 = _now_us()

        # Expert FFNs (SwiGLU) on the served token-slots, timed per expert and
        # charged to devices by their replicas' share.
        out = np.zeros_like(x)
        gate_of = gates.T.ravel()
        expert_us = np.zeros(e)
        for expert in range(e):
            rows = np.flatnonzero(served & (assigned == expert))
            if rows.size == 0:
                continue
            s = _now_us()
            tokens = rows % t
            up = x[tokens] @ self.w_up[l][expert]
            a, b = np.split(up, 2, axis=1)
            y = (a / (1 + np.exp(-a)) * b) @ self.w_down[l][expert]
            np.add.at(out, tokens, gate_of[rows][:, None] * y)
            expert_us[expert] = _now_us() - s
        device_us = np.zeros(self.num_devices)
        for slot, expert in enumerate(placement):
            device_us[slot // per_device] += expert_us[expert] / replicas[expert]
        t3 = _now_us()
        x = x + out
        x = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + 1e-6)
        t4 = _now_us()

        k_histogram = [0] * (top_k + 1)
        k_histogram[top_k] = t
        timing = mc.LayerTiming(router_us=t1 - t0, dispatch_us=t2 - t1,
                                expert_us=float(device_us.max()), combine_us=t4 - t3,
                                total_us=(t1 - t0) + (t2 - t1) + float(device_us.max()) +
                                (t4 - t3), device_expert_us=device_us.tolist())
        stats = mc.LayerStats(
            layer=l, num_tokens=t, num_token_slots=t * top_k, expert_demand=demand,
            expert_tokens=expert_tokens, slot_tokens=slot_tokens, device_tokens=device_tokens,
            overflowed=overflowed, rerouted=rerouted, dropped=dropped, k_histogram=k_histogram,
            router_entropy=entropy, gate_mass=gate_mass, capacity=capacity, timing=timing)
        return stats, x


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine-id", default="toy-engine")
    p.add_argument("--telemetry", default="tcp://127.0.0.1:5555", help="controller's PULL")
    p.add_argument("--commands", default="tcp://127.0.0.1:5556", help="controller's ROUTER")
    p.add_argument("--steps", type=int, default=1000, help="most steps to run")
    p.add_argument("--step-interval-ms", type=float, default=10.0)
    p.add_argument("--stop-after-epoch-steps", type=int, default=0, metavar="N",
                   help="stop once N steps ran under a controller's epoch (0: run --steps)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--replicas", type=int, default=0, help="physical slots (0: one per expert)")
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--tokens", type=int, default=256, help="tokens per step")
    p.add_argument("--capacity-factor", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--without-knob", action="append", default=[], choices=TOY_KNOBS,
                   help="pretend the engine cannot change this knob (it reports its value "
                   "and refuses commands for it)")
    p.add_argument("--send-queue", type=int, default=1000)
    p.add_argument("--curve-keys", metavar="FILE",
                   help="JSON {public_key, secret_key, controller_public_key}: use CURVE")
    p.add_argument("--summary", metavar="FILE", help="write a JSON summary of the run here")
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("toy_engine")
    model = ToyMoE(num_layers=args.layers, num_experts=args.experts, top_k=args.top_k,
                   num_devices=args.devices, num_replicas=args.replicas, tokens=args.tokens,
                   capacity_factor=args.capacity_factor, seed=args.seed)
    curve, controller_key = None, ""
    if args.curve_keys:
        with open(args.curve_keys) as f:
            keys = json.load(f)
        curve = mc.CurveKeys(keys["public_key"], keys["secret_key"])
        controller_key = keys["controller_public_key"]
    options = mc.PublisherOptions(engine_id=args.engine_id, telemetry_endpoint=args.telemetry,
                                  command_endpoint=args.commands, send_queue=args.send_queue,
                                  curve=curve, controller_public_key=controller_key)
    info = mc.EngineInfo(num_layers=args.layers, num_experts=args.experts,
                         num_replicas=model.num_replicas, num_devices=args.devices,
                         hidden=model.hidden, backend="numpy")
    # A knob it "lacks" still runs at its value: reported as fixed in the Hello.
    knobs = {name: value for name, value in model.knobs[0].items()
             if name not in args.without_knob}
    fixed = {name: value for name, value in model.knobs[0].items() if name in args.without_knob}
    summary = {"engine_id": args.engine_id, "steps": 0, "commands": [], "epochs": {},
               "first_step_of_epoch": {}}

    def on_command(command):
        try:
            model.apply(command)
        except mc.CommandRefused as e:
            summary["commands"].append({"epoch": command.epoch, "applied": False,
                                        "reason": str(e)})
            raise
        summary["commands"].append({"epoch": command.epoch, "applied": True,
                                    "knobs": command.knobs,
                                    "layers": sorted(command.layer_knobs)})
        log.info("epoch %d: %s (%s)", command.epoch,
                 ", ".join("%s=%s" % kv for kv in command.knobs.items()) or
                 "layers %s" % sorted(command.layer_knobs), command.reason)

    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))

    with mc.Publisher(options, info, knobs, on_command, fixed_knobs=fixed) as pub:
        pub.hello()
        log.info("toy engine %s up: %d layers, %d experts, top_k %d, cf %.2f, %s / %s",
                 args.engine_id, args.layers, args.experts, args.top_k, args.capacity_factor,
                 args.telemetry, args.commands)
        steps_under_epoch = 0
        for step in range(args.steps):
            if stop:
                break
            started = time.monotonic()
            pub.poll()  # a step boundary: commands apply here
            layers, step_us = model.step(step)
            epoch = pub.epoch
            pub.step(step, layers, step_us)
            summary["steps"] += 1
            summary["epochs"][str(epoch)] = summary["epochs"].get(str(epoch), 0) + 1
            summary["first_step_of_epoch"].setdefault(str(epoch), step)
            steps_under_epoch = steps_under_epoch + 1 if epoch > 0 else 0
            if args.stop_after_epoch_steps and steps_under_epoch >= args.stop_after_epoch_steps:
                break
            due = started + args.step_interval_ms / 1000.0
            while not stop and time.monotonic() < due:
                pub.tick()
                time.sleep(min(0.005, max(0.0, due - time.monotonic())))
        summary.update(final_epoch=pub.epoch, dropped=pub.dropped, malformed=pub.malformed,
                       refused=pub.refused, knobs={k: v for k, v in pub.knobs.items()
                                                   if k not in ("expert_bias", "phy2log")})
    log.info("toy engine %s stopping after %d steps (epoch %d, %d telemetry dropped)",
             args.engine_id, summary["steps"], summary["final_epoch"], summary["dropped"])
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
