"""An engine's side of the moectl wire protocol (docs/telemetry.md), in Python.

A ``Publisher`` owns two ZeroMQ sockets that connect to a controller
(``moectld``): PUSH for telemetry (Hello, StepRecord, Heartbeat) and DEALER,
with a routing id of its own (``<engine id>#<16 random hex digits>``), for
commands (Command in; Hello and Ack out). It behaves like the C++ ``EngineLink`` (telemetry/src/engine_link.cc):

- every send is non-blocking into a bounded queue of ``send_queue`` messages
  per channel; a message that does not fit is dropped and counted, and the
  count so far travels in the next StepRecord's ``telemetry_dropped``;
- one sequence counter, starting at 1, stamps every telemetry-channel message
  and is consumed even when the message is dropped; the Hello also sent on the
  command channel carries the same seq;
- after the command channel's first handshake, every further handshake (a
  restarted controller) re-sends the Hello, with a fresh seq and timestamp and
  the epoch and knobs in force;
- commands are taken only from ``poll()``, which the engine calls at step
  boundaries; a command is refused at once (Ack with ``applied = false`` and
  the reason) when its epoch is stale, when it sets a knob the engine does
  not have, names a layer out of range, or when the engine's callback raises
  ``CommandRefused``; an accepted command is acked after the first step that
  ran under its epoch, with ``applied_at_step`` = that step.

Thread safety: a Publisher must be used from one thread (ZeroMQ sockets are
not thread safe). It owns its ZeroMQ context.
"""

import dataclasses
import logging
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import zmq
from zmq.utils import monitor as zmq_monitor
from zmq.utils import z85

from . import wire
from .wire import pb

log = logging.getLogger("moectl_client")


def _should_log(count):
    """The 1st..10th event of a kind and every 1000th after (as the C++ side)."""
    return count <= 10 or count % 1000 == 0


def routing_id(engine_id):
    """The command socket's routing id for one connection: the engine id (cut
    to fit ZeroMQ's 255 bytes), '#' and 16 random hex digits, as the C++
    EngineLink does. The controller routes by the id the connection's Hello
    names, so a restarted engine is a new route, never a duplicate that a
    ROUTER would ignore (docs/telemetry.md, "Routes")."""
    head = engine_id.encode("utf-8")[:wire.MAX_ID_BYTES - 17]
    return head + b"#" + os.urandom(8).hex().encode("ascii")


def now_ns():
    return time.time_ns()


@dataclasses.dataclass
class CurveKeys:
    """A CURVE key pair, Z85 text of 40 characters each."""
    public_key: str
    secret_key: str


def generate_curve_keys():
    """A fresh CURVE key pair (needs libzmq with CURVE)."""
    if not zmq.has("curve"):
        raise RuntimeError("libzmq was built without CURVE support")
    public, secret = zmq.curve_keypair()
    return CurveKeys(public.decode("ascii"), secret.decode("ascii"))


def _check_curve_key(what, key):
    try:
        raw = z85.decode(key.encode("ascii") if isinstance(key, str) else key)
    except Exception:
        raw = b""
    if len(raw) != 32:
        raise ValueError("%s must be a 40-character Z85 CURVE key" % what)


@dataclasses.dataclass
class PublisherOptions:
    """How to reach the controller. Defaults match the C++ EngineLinkOptions."""
    engine_id: str                      # required, 1..255 bytes; starts the DEALER routing id
    telemetry_endpoint: str             # required, e.g. "tcp://127.0.0.1:5555"
    command_endpoint: str               # required, e.g. "tcp://127.0.0.1:5556"
    send_queue: int = 1000              # messages queued per channel before drops (>= 1)
    curve: Optional[CurveKeys] = None   # this engine's key pair; None = no CURVE
    controller_public_key: str = ""     # Z85; required with `curve`
    linger_ms: int = 100                # how long close() may wait to flush queued messages
    reconnect_interval_ms: int = 100    # first reconnect delay; doubles up to the max
    reconnect_interval_max_ms: int = 2000
    max_message_bytes: int = 64 << 20   # larger inbound messages close the connection
    heartbeat_interval_s: float = 1.0   # tick() sends a Heartbeat after this much silence

    def validate(self):
        """Raises ValueError naming the first bad field."""
        engine_id = self.engine_id.encode("utf-8")
        if not engine_id or len(engine_id) > wire.MAX_ID_BYTES or engine_id[0] == 0:
            raise ValueError("PublisherOptions.engine_id must be 1..%d bytes, not starting with "
                             "a zero byte" % wire.MAX_ID_BYTES)
        if not self.telemetry_endpoint or not self.command_endpoint:
            raise ValueError("PublisherOptions: telemetry_endpoint and command_endpoint are "
                             "required")
        if self.send_queue < 1:
            raise ValueError("PublisherOptions.send_queue must be >= 1, got %d" % self.send_queue)
        if (self.linger_ms < 0 or self.reconnect_interval_ms < 1 or
                self.reconnect_interval_max_ms < self.reconnect_interval_ms or
                self.max_message_bytes < 1 or self.heartbeat_interval_s <= 0):
            raise ValueError("PublisherOptions: linger_ms must be >= 0, reconnect_interval_ms "
                             ">= 1 and <= reconnect_interval_max_ms, max_message_bytes >= 1, "
                             "heartbeat_interval_s > 0")
        if self.curve is not None:
            if not zmq.has("curve"):
                raise ValueError("CURVE requested but libzmq was built without CURVE support")
            _check_curve_key("PublisherOptions.curve.public_key", self.curve.public_key)
            _check_curve_key("PublisherOptions.curve.secret_key", self.curve.secret_key)
            _check_curve_key("PublisherOptions.controller_public_key",
                             self.controller_public_key)


@dataclasses.dataclass
class EngineInfo:
    """What the engine runs: the shape fields of the Hello."""
    num_layers: int                  # MoE layers
    num_experts: int                 # routed experts per layer
    num_replicas: int = 0            # physical expert slots per layer; 0 = num_experts
    num_devices: int = 1             # devices in the expert-parallel group
    num_shared_experts: int = 0      # shared experts per layer
    hidden: int = 0                  # model hidden size (elements)
    backend: str = "python"          # free text, e.g. "cpu", "cuda", "vllm"

    def replicas(self):
        return self.num_replicas or self.num_experts


@dataclasses.dataclass
class LayerTiming:
    """Microseconds; see LayerTiming in the schema."""
    router_us: float = 0.0
    dispatch_us: float = 0.0
    expert_us: float = 0.0
    combine_us: float = 0.0
    all_to_all_us: float = 0.0
    total_us: float = 0.0
    device_expert_us: Sequence[float] = ()


@dataclasses.dataclass
class LayerStats:
    """What one MoE layer did in one step (the schema's LayerRecord).

    Arrays may be lists or numpy arrays of non-negative integers. Counts are
    token-slots (a token routed to K experts makes K). ``expert_demand`` (before
    capacity) and ``expert_tokens`` (served) are what the controller's policies
    read; the rest may stay empty or zero when the engine does not know them.
    """
    layer: int
    num_tokens: int
    expert_demand: Sequence[int]           # token-slots that chose each expert [num_experts]
    expert_tokens: Sequence[int]           # token-slots served per expert [num_experts]
    num_token_slots: int = 0               # 0 = sum(expert_demand)
    slot_tokens: Sequence[int] = ()        # per physical slot [num_replicas]
    device_tokens: Sequence[int] = ()      # per device [num_devices]
    overflowed: int = 0                    # token-slots whose first choice was full
    rerouted: int = 0                      # of those, served elsewhere
    dropped: int = 0                       # of those, sent to the backup path
    k_histogram: Sequence[int] = ()        # tokens that used k experts, index k
    router_entropy: float = 0.0            # nats
    gate_mass: float = 0.0                 # 0..1
    quality_error: Optional[float] = None  # None: not sampled
    capacity: int = 0                      # token-slots per expert this step; 0 = unlimited
    timing: LayerTiming = dataclasses.field(default_factory=LayerTiming)


@dataclasses.dataclass
class Command:
    """A validated command from the controller, as the engine's callback sees it.

    ``knobs`` applies to every layer first, then ``layer_knobs[layer]``; both
    hold only the knobs the command changes (see wire.knobs_to_dict)."""
    epoch: int
    issued_ns: int
    reason: str
    knobs: Dict[str, object]
    layer_knobs: Dict[int, Dict[str, object]]


class CommandRefused(Exception):
    """Raise from the command callback to refuse a command; the message is the
    reason sent back in the Ack."""


def _off_knobs(info):
    """What an engine without a knob effectively runs: its "off" value."""
    return {
        "top_k": 1, "top_p": 0.0, "k_min": 0, "capacity_factor": 0.0,
        "overflow_policy": "drop", "noise_std": 0.0, "shortlist": 0,
        "availability_weight": 0.0,
        "expert_bias": [0.0] * info.num_experts,
        "phy2log": [s % info.num_experts for s in range(info.replicas())] if info.num_experts
        else [],
    }


def _truncate_utf8(text, max_bytes):
    """`text` as UTF-8 of at most `max_bytes`, cut at a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return data
    return data[:max_bytes].decode("utf-8", "ignore").encode("utf-8")


def _as_list(values):
    return values.tolist() if hasattr(values, "tolist") else list(values)


class Publisher:
    """An engine's link to moectld. See the module docstring for the contract.

    Args:
      options: a PublisherOptions (validated here; ValueError if bad).
      engine: the EngineInfo sent in every Hello.
      knobs: the engine-wide settings in force, as a dict of the knobs this
        engine HAS (see wire.ALL_KNOBS). A command that sets any other knob is
        refused with a reason. The Hello reports the others at their "off"
        value, so that it carries every field as the schema asks.
      on_command: called from poll() with each valid Command whose knobs the
        engine has; it applies them (they are in force from the next step) or
        raises CommandRefused(reason). Any other exception refuses the command
        too, with the exception's text, and is logged.
      layer_knobs: per-layer settings that differ from `knobs`.
      epoch: the epoch in force at start (0 for a fresh engine).
      fixed_knobs: settings the engine runs but cannot change (e.g. a top_k
        fixed by the model): reported in the Hello instead of the "off" value;
        commands that set them are refused like any knob it does not have.

    Connecting never blocks and succeeds without a controller (ZeroMQ
    reconnects in the background; queued messages wait for it). A malformed
    endpoint raises ValueError.
    """

    def __init__(self, options: PublisherOptions, engine: EngineInfo,
                 knobs: Dict[str, object],
                 on_command: Callable[[Command], None],
                 layer_knobs: Optional[Dict[int, Dict[str, object]]] = None,
                 epoch: int = 0, fixed_knobs: Optional[Dict[str, object]] = None):
        options.validate()
        fixed_knobs = dict(fixed_knobs or {})
        unknown = sorted((set(knobs) | set(fixed_knobs)) - set(wire.ALL_KNOBS))
        if unknown:
            raise ValueError("unknown knob(s): %s" % ", ".join(unknown))
        both = sorted(set(knobs) & set(fixed_knobs))
        if both:
            raise ValueError("knob(s) both changeable and fixed: %s" % ", ".join(both))
        wire.knobs_from_dict(knobs)  # raises for a bad value type or policy name
        wire.knobs_from_dict(fixed_knobs)
        self._fixed = fixed_knobs
        self._options = options
        self._engine_id = options.engine_id
        self._info = engine
        self._supported = frozenset(knobs)
        self._knobs = dict(knobs)
        self._layer_knobs = {int(l): dict(k) for l, k in (layer_knobs or {}).items()}
        self._on_command = on_command
        self._epoch = int(epoch)         # in force
        self._newest_epoch = int(epoch)  # newest accepted
        self._pending_acks: List[int] = []
        self._next_seq = 1
        self._dropped = 0
        self._malformed = 0
        self._refused = 0
        self._handshakes = 0
        self._hello_sent = False
        self._last_step = 0
        self._last_publish = time.monotonic()
        self._closed = False

        self._context = zmq.Context()
        try:
            self._push = self._context.socket(zmq.PUSH)
            self._dealer = self._context.socket(zmq.DEALER)
            self._dealer.setsockopt(zmq.ROUTING_ID, routing_id(options.engine_id))
            # ZMTP heartbeats: a dead controller is noticed in seconds.
            self._dealer.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            self._dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
            self._monitor = self._dealer.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            self._monitor.setsockopt(zmq.LINGER, 0)
            self._configure(self._push, options.telemetry_endpoint)
            self._configure(self._dealer, options.command_endpoint)
        except zmq.ZMQError as e:
            self._context.destroy(linger=0)
            raise ValueError("Publisher: cannot set up the sockets (endpoints %s, %s): %s" %
                             (options.telemetry_endpoint, options.command_endpoint, e)) from e
        except Exception:
            self._context.destroy(linger=0)
            raise

    # -- lifecycle ----------------------------------------------------------

    def close(self):
        """Closes the sockets; waits at most linger_ms to flush queued messages."""
        if self._closed:
            return
        self._closed = True
        try:
            self._dealer.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)
        self._push.close(linger=self._options.linger_ms)
        self._dealer.close(linger=self._options.linger_ms)
        self._context.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- what the engine calls ---------------------------------------------

    def hello(self):
        """Sends the Hello on both channels (fresh seq and timestamp). Call it
        once at start; the Publisher re-sends it by itself after a reconnect."""
        self._send_hello()

    def step(self, step: int, layers: Sequence[LayerStats], step_us: float,
             timestamp_ns: Optional[int] = None, timing_on_device: bool = False,
             placement_moved_bytes: int = 0, placement_copy_us: float = 0.0,
             placement_move_us: float = 0.0):
        """Publishes what step `step` did, stamped with the epoch in force, then
        acks the commands that step was the first to run under. Never blocks.
        Sends the Hello first if hello() was not called. Raises wire.WireError
        for a record that breaks the schema's limits (never for a drop)."""
        if not self._hello_sent:
            self._send_hello()
        self._pump_monitor()
        record = pb.StepRecord(
            engine_id=self._engine_id.encode("utf-8"), step=int(step),
            timestamp_ns=now_ns() if timestamp_ns is None else int(timestamp_ns),
            epoch=self._epoch, timing_on_device=bool(timing_on_device), step_us=float(step_us),
            telemetry_dropped=self._dropped, placement_moved_bytes=int(placement_moved_bytes),
            placement_copy_us=float(placement_copy_us),
            placement_move_us=float(placement_move_us))
        for stats in layers:
            self._fill_layer(record.layers.add(), stats)
        self._send_telemetry("step", record)
        self._last_step = int(step)
        self._last_publish = time.monotonic()
        for epoch in [e for e in self._pending_acks if e <= self._epoch]:
            self._send_ack(epoch, True, "", int(step))
        self._pending_acks = [e for e in self._pending_acks if e > self._epoch]

    def heartbeat(self, step: Optional[int] = None):
        """Publishes a Heartbeat (last step completed, epoch in force)."""
        if not self._hello_sent:
            self._send_hello()
        self._pump_monitor()
        message = pb.Heartbeat(engine_id=self._engine_id.encode("utf-8"),
                               step=self._last_step if step is None else int(step),
                               epoch=self._epoch, timestamp_ns=now_ns())
        self._send_telemetry("heartbeat", message)
        self._last_publish = time.monotonic()

    def poll(self):
        """Handles every command that arrived since the last call (never blocks):
        each goes to the callback or is refused. Call it between steps only.
        Returns the number of commands handled."""
        self._pump_monitor()
        handled = 0
        while True:
            try:
                frames = self._dealer.recv_multipart(zmq.DONTWAIT)
            except zmq.Again:
                return handled
            if len(frames) != 1:
                self._count_malformed("multipart message")
                continue
            try:
                kind, message = wire.decode(frames[0])
            except wire.WireError as e:
                self._count_malformed(str(e))
                continue
            if kind != "command":
                self._count_malformed("not a Command")
                continue
            target = message.engine_id.decode("utf-8")
            if target != self._engine_id:
                self._count_malformed("Command for engine '%s'" % target)
                continue
            self._handle(message)
            handled += 1

    def tick(self):
        """For an idle loop: polls commands and sends a Heartbeat when nothing
        was published for heartbeat_interval_s."""
        self.poll()
        if time.monotonic() - self._last_publish >= self._options.heartbeat_interval_s:
            self.heartbeat()

    def update_hello(self, knobs=None, layer_knobs=None):
        """Replaces what the next Hello reports (the Publisher already tracks
        the knobs of every command it accepted)."""
        if knobs is not None:
            self._knobs.update(knobs)
        if layer_knobs is not None:
            self._layer_knobs = {int(l): dict(k) for l, k in layer_knobs.items()}

    # -- state --------------------------------------------------------------

    @property
    def epoch(self):
        """The epoch in force: the next step() is stamped with it."""
        return self._epoch

    @property
    def knobs(self):
        """The engine-wide knobs in force (a copy)."""
        return dict(self._knobs)

    @property
    def dropped(self):
        """Messages dropped so far because a send queue was full (all channels)."""
        return self._dropped

    @property
    def malformed(self):
        """Inbound command-channel messages skipped as malformed."""
        return self._malformed

    @property
    def refused(self):
        """Commands refused so far."""
        return self._refused

    # -- internals ----------------------------------------------------------

    def _configure(self, socket, endpoint):
        o = self._options
        socket.setsockopt(zmq.SNDHWM, o.send_queue)
        socket.setsockopt(zmq.RCVHWM, o.send_queue)
        socket.setsockopt(zmq.LINGER, o.linger_ms)
        socket.setsockopt(zmq.RECONNECT_IVL, o.reconnect_interval_ms)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, o.reconnect_interval_max_ms)
        socket.setsockopt(zmq.MAXMSGSIZE, o.max_message_bytes)
        # Queue to a connection that is not up yet, so the Hello and the first
        # steps wait for a controller that starts later.
        socket.setsockopt(zmq.IMMEDIATE, 0)
        if o.curve is not None:
            socket.setsockopt(zmq.CURVE_SERVERKEY, o.controller_public_key.encode("ascii"))
            socket.setsockopt(zmq.CURVE_PUBLICKEY, o.curve.public_key.encode("ascii"))
            socket.setsockopt(zmq.CURVE_SECRETKEY, o.curve.secret_key.encode("ascii"))
        socket.connect(endpoint)

    def _send_or_drop(self, socket, data):
        try:
            socket.send(data, zmq.DONTWAIT)
        except zmq.Again:
            self._dropped += 1
            if _should_log(self._dropped):
                log.warning("telemetry: engine '%s' dropped message #%d (send queue of %d full)",
                            self._engine_id, self._dropped, self._options.send_queue)

    def _send_telemetry(self, kind, message):
        message.seq = self._next_seq
        data = wire.encode(kind, message)
        self._next_seq += 1  # consumed even when dropped: the controller sees the gap
        self._send_or_drop(self._push, data)

    def _hello_message(self):
        info = self._info
        hello = pb.Hello(
            engine_id=self._engine_id.encode("utf-8"), seq=self._next_seq,
            schema_version=wire.SCHEMA_VERSION, backend=info.backend.encode("utf-8"),
            num_layers=info.num_layers, num_experts=info.num_experts,
            num_shared_experts=info.num_shared_experts, num_replicas=info.replicas(),
            num_devices=info.num_devices, hidden=info.hidden, epoch=self._epoch,
            timestamp_ns=now_ns())
        in_force = _off_knobs(info)
        in_force.update(self._fixed)
        in_force.update(self._knobs)
        wire.knobs_from_dict(in_force, hello.knobs)
        for layer in sorted(self._layer_knobs):
            diff = {k: v for k, v in self._layer_knobs[layer].items() if in_force.get(k) != v}
            if diff:
                lk = hello.layer_knobs.add(layer=layer)
                wire.knobs_from_dict(diff, lk.knobs)
        return hello

    def _send_hello(self):
        hello = self._hello_message()
        data = wire.encode("hello", hello)
        self._next_seq += 1
        self._send_or_drop(self._push, data)
        self._send_or_drop(self._dealer, data)
        self._hello_sent = True

    def _pump_monitor(self):
        reconnected = False
        while True:
            try:
                event = zmq_monitor.recv_monitor_message(self._monitor, zmq.DONTWAIT)
            except zmq.Again:
                break
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._handshakes += 1
                if self._handshakes > 1:
                    reconnected = True
        if reconnected and self._hello_sent:
            log.info("telemetry: engine '%s' reconnected to the controller; re-sending Hello",
                     self._engine_id)
            self._send_hello()

    def _count_malformed(self, why):
        self._malformed += 1
        if _should_log(self._malformed):
            log.warning("telemetry: engine '%s' skipped malformed command message #%d: %s",
                        self._engine_id, self._malformed, why)

    def _send_ack(self, epoch, applied, error, applied_at_step):
        ack = pb.Ack(engine_id=self._engine_id.encode("utf-8"), epoch=epoch, applied=applied,
                     error=_truncate_utf8(error, wire.MAX_TEXT_BYTES),
                     applied_at_step=applied_at_step, timestamp_ns=now_ns())
        self._send_or_drop(self._dealer, wire.encode("ack", ack))

    def _refuse(self, epoch, reason):
        self._refused += 1
        log.warning("command epoch %d refused: %s", epoch, reason)
        self._send_ack(epoch, False, reason, 0)

    def _handle(self, message):
        epoch = message.epoch
        if epoch <= self._newest_epoch:
            self._refuse(epoch, "stale epoch %d (newest is %d)" % (epoch, self._newest_epoch))
            return
        command = Command(epoch=epoch, issued_ns=message.issued_ns,
                          reason=message.reason.decode("utf-8"),
                          knobs=wire.knobs_to_dict(message.knobs), layer_knobs={})
        for lk in message.layer_knobs:
            command.layer_knobs.setdefault(lk.layer, {}).update(wire.knobs_to_dict(lk.knobs))
        named = set(command.knobs)
        for values in command.layer_knobs.values():
            named.update(values)
        missing = sorted(named - self._supported)
        if missing:
            self._refuse(epoch, "this engine has no knob %s (it has: %s)" %
                         (", ".join(missing), ", ".join(sorted(self._supported)) or "none"))
            return
        bad_layers = sorted(l for l in command.layer_knobs if l >= self._info.num_layers)
        if bad_layers:
            self._refuse(epoch, "layer %d out of range (%d layers)" %
                         (bad_layers[0], self._info.num_layers))
            return
        try:
            self._on_command(command)
        except CommandRefused as e:
            self._refuse(epoch, str(e) or "refused by the engine")
            return
        except Exception as e:  # the engine's bug must not end its serving loop
            log.exception("command epoch %d: the engine's callback failed", epoch)
            self._refuse(epoch, "engine error: %s: %s" % (type(e).__name__, e))
            return
        log.info("command epoch %d accepted (%s)", epoch, command.reason or "no reason")
        self._newest_epoch = epoch
        self._epoch = epoch
        self._knobs.update(command.knobs)
        for layer_values in self._layer_knobs.values():
            for name in command.knobs:
                layer_values.pop(name, None)
        for layer, values in command.layer_knobs.items():
            self._layer_knobs.setdefault(layer, {}).update(values)
        self._pending_acks.append(epoch)

    def _fill_layer(self, out, s):
        demand = _as_list(s.expert_demand)
        out.layer = int(s.layer)
        out.num_tokens = int(s.num_tokens)
        out.num_token_slots = int(s.num_token_slots) if s.num_token_slots else sum(demand)
        out.expert_demand.extend(demand)
        out.expert_tokens.extend(_as_list(s.expert_tokens))
        out.slot_tokens.extend(_as_list(s.slot_tokens))
        out.device_tokens.extend(_as_list(s.device_tokens))
        out.k_histogram.extend(_as_list(s.k_histogram))
        out.overflowed = int(s.overflowed)
        out.rerouted = int(s.rerouted)
        out.dropped = int(s.dropped)
        out.router_entropy = float(s.router_entropy)
        out.gate_mass = float(s.gate_mass)
        if s.quality_error is not None:
            out.quality_error = float(s.quality_error)
        out.capacity = int(s.capacity)
        t = s.timing
        out.timing.router_us = float(t.router_us)
        out.timing.dispatch_us = float(t.dispatch_us)
        out.timing.expert_us = float(t.expert_us)
        out.timing.combine_us = float(t.combine_us)
        out.timing.all_to_all_us = float(t.all_to_all_us)
        out.timing.total_us = float(t.total_us)
        out.timing.device_expert_us.extend(float(x) for x in _as_list(t.device_expert_us))
