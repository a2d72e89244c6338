"""A fake of moectld's two sockets for the Python client's tests: a PULL for
telemetry and a ROUTER (ROUTER_MANDATORY, ROUTER_HANDOVER) for commands, bound
on loopback, optionally CURVE servers with an allow-list checked by a ZAP
handler of its own, as telemetry/src/controller_link.cc does."""

import socket
import threading
import time

import zmq

from moectl_client import wire

ZAP_ENDPOINT = "inproc://zeromq.zap.01"


def free_loopback_endpoint():
    """A tcp://127.0.0.1:PORT endpoint that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "tcp://127.0.0.1:%d" % s.getsockname()[1]


class _ZapHandler(threading.Thread):
    """Answers CURVE handshakes: 200 for an allowed public key, 400 otherwise."""

    def __init__(self, context, allowed_keys):
        super().__init__(daemon=True)
        self.allowed = {zmq.utils.z85.decode(k.encode("ascii")) for k in allowed_keys}
        self.denied = 0
        self.socket = context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)
        self.stopping = False

    def run(self):
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self.stopping:
            if not poller.poll(50):
                continue
            frames = self.socket.recv_multipart()
            version, request_id, _domain, _address, _identity, mechanism = frames[:6]
            key = frames[6] if len(frames) > 6 else b""
            ok = mechanism == b"CURVE" and key in self.allowed
            if not ok:
                self.denied += 1
            self.socket.send_multipart([version, request_id, b"200" if ok else b"400",
                                        b"OK" if ok else b"denied", b"", b""])
        self.socket.close()


class FakeController:
    """Binds both channels (fresh loopback ports unless given)."""

    def __init__(self, telemetry=None, commands=None, curve_keys=None, allowed_keys=()):
        self.telemetry = telemetry or free_loopback_endpoint()
        self.commands = commands or free_loopback_endpoint()
        self.context = zmq.Context()
        self.zap = None
        if curve_keys is not None:
            self.zap = _ZapHandler(self.context, allowed_keys)
            self.zap.start()
        self.pull = self.context.socket(zmq.PULL)
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        for s in (self.pull, self.router):
            s.setsockopt(zmq.LINGER, 0)
            if curve_keys is not None:
                s.setsockopt(zmq.CURVE_SERVER, 1)
                s.setsockopt(zmq.CURVE_SECRETKEY, curve_keys.secret_key.encode("ascii"))
                s.setsockopt(zmq.ZAP_DOMAIN, b"moectl")
        self._bind(self.pull, self.telemetry)
        self._bind(self.router, self.commands)
        self.poller = zmq.Poller()
        self.poller.register(self.pull, zmq.POLLIN)
        self.poller.register(self.router, zmq.POLLIN)

    @staticmethod
    def _bind(sock, endpoint):
        # A just-closed fake may hold the port for a moment.
        for _ in range(50):
            try:
                sock.bind(endpoint)
                return
            except zmq.ZMQError as e:
                if e.errno != zmq.EADDRINUSE:
                    raise
                time.sleep(0.05)
        sock.bind(endpoint)

    def close(self):
        self.pull.close()
        self.router.close()
        if self.zap is not None:
            self.zap.stopping = True
            self.zap.join(2)
        self.context.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def recv(self, timeout_s=5.0):
        """The next message: (channel, routing_id, kind, payload), channel
        "telemetry" or "command"; None after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready = dict(self.poller.poll(int(left * 1000) + 1))
            if self.pull in ready:
                kind, message = wire.decode(self.pull.recv())
                return "telemetry", None, kind, message
            if self.router in ready:
                frames = self.router.recv_multipart()
                kind, message = wire.decode(frames[1])
                return "command", frames[0], kind, message

    def wait_for(self, predicate, timeout_s=5.0, pump=None):
        """Receives until predicate(channel, rid, kind, message) is true; returns
        that message's tuple (None on timeout). Calls pump() between polls, so a
        Publisher under test can run its loop in this thread."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.recv(0.02)
            if got is not None and predicate(*got):
                return got
            if pump is not None:
                pump()
        return None

    @staticmethod
    def pump_until(condition, pump, timeout_s=5.0):
        """Calls pump() until condition() holds; returns condition()."""
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            pump()
            time.sleep(0.002)
        return condition()

    def send(self, routing_id, data):
        self.router.send_multipart([routing_id, data])

    def send_command(self, routing_id, engine_id, epoch, knobs=None, layer_knobs=None,
                     reason="test"):
        command = wire.pb.Command(engine_id=engine_id.encode(), epoch=epoch,
                                  issued_ns=time.time_ns(), reason=reason.encode())
        wire.knobs_from_dict(knobs or {}, command.knobs)
        for layer, values in (layer_knobs or {}).items():
            wire.knobs_from_dict(values, command.layer_knobs.add(layer=layer).knobs)
        self.send(routing_id, wire.encode("command", command))
