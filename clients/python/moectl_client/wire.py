"""The moectl wire format: one serialised ``Envelope`` per ZeroMQ message.

The protobuf classes are generated from ``telemetry/moe_telemetry.proto`` by
``protoc --python_out`` at build time (CMake target ``moectl_client_wire``);
they are never checked in. This module finds the generated
``moe_telemetry_pb2.py`` in, in order:

1. the folder named by the environment variable ``MOECTL_CLIENT_WIRE_DIR``
   (CTest sets it to the build folder's ``clients/python/wire``);
2. ``<repository>/<MOECTL_BUILD_DIR or "build">/clients/python/wire``, for a
   checkout built with ``./scripts/build``;
3. the ordinary import path (``moe_telemetry_pb2`` on ``PYTHONPATH``).

``encode`` and ``decode`` enforce the same invariants as the C++ codec
(telemetry/src/codec.cc, docs/telemetry.md "Envelope and versions"): the
schema major version, engine ids of 1..255 bytes of UTF-8 that do not start
with a zero byte, text of at most 4096 bytes, arrays and declared counts of at
most 2**20, and known enum values. A violation raises ``WireError``.
"""

import importlib.util
import os
import sys

SCHEMA_VERSION = 1  # the schema major version this client speaks
MAX_ID_BYTES = 255
MAX_TEXT_BYTES = 4096
MAX_ARRAY_LENGTH = 1 << 20

# Knob names, as in the KnobSet message and DESIGN.md's control surface.
SCALAR_KNOBS = ("top_k", "top_p", "k_min", "capacity_factor", "overflow_policy",
                "noise_std", "shortlist", "availability_weight")
VECTOR_KNOBS = ("expert_bias", "phy2log")
ALL_KNOBS = SCALAR_KNOBS + VECTOR_KNOBS
_COUNT_KNOBS = ("top_k", "k_min", "shortlist")

# OverflowPolicy on the wire <-> the names used in knob dicts.
OVERFLOW_POLICIES = ("drop", "reroute", "replica")  # index = enum value

_PAYLOADS = ("step", "hello", "heartbeat", "command", "ack", "sync")


class WireError(Exception):
    """A message that does not encode or decode.

    ``code`` is ``"corruption"`` (bytes that are not a valid envelope, or break
    an invariant), ``"unsupported"`` (another schema major version, or a
    payload type newer than this client) or ``"invalid_argument"`` (a message
    this client was asked to encode breaks an invariant).
    """

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def _load_pb2():
    name = "moe_telemetry_pb2"
    candidates = []
    if os.environ.get("MOECTL_CLIENT_WIRE_DIR"):
        candidates.append(os.environ["MOECTL_CLIENT_WIRE_DIR"])
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    build = os.environ.get("MOECTL_BUILD_DIR", "build")
    candidates.append(os.path.join(repo, build, "clients", "python", "wire"))
    for folder in candidates:
        path = os.path.join(folder, name + ".py")
        if os.path.isfile(path):
            if name in sys.modules:
                return sys.modules[name]
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(
            "moectl_client: the generated wire classes (moe_telemetry_pb2.py) were not found; "
            "build them with `cmake --build build --target moectl_client_wire` and set "
            "MOECTL_CLIENT_WIRE_DIR to build/clients/python/wire (looked in: %s)" %
            ", ".join(candidates)) from e


pb = _load_pb2()


# ---------------------------------------------------------------------------
# Checks shared by encode and decode (mirroring codec.cc's Checker).

def _text_bytes(field, value):
    """UTF-8 bytes of a text field given as str or bytes; checks its length."""
    if isinstance(value, str):
        data = value.encode("utf-8")
    else:
        data = bytes(value)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise WireError("corruption", "%s is not valid UTF-8" % field) from None
    if len(data) > MAX_TEXT_BYTES:
        raise WireError("corruption",
                        "%s is %d bytes, more than %d" % (field, len(data), MAX_TEXT_BYTES))
    return data


def _check_engine_id(field, value):
    data = _text_bytes(field, value)
    if not data:
        raise WireError("corruption", "%s is empty" % field)
    if len(data) > MAX_ID_BYTES:
        raise WireError("corruption",
                        "%s is %d bytes, more than %d" % (field, len(data), MAX_ID_BYTES))
    if data[0] == 0:
        raise WireError("corruption", "%s starts with a zero byte" % field)
    return data


def _check_length(field, length):
    if length > MAX_ARRAY_LENGTH:
        raise WireError("corruption", "%s has %d elements, more than %d" %
                        (field, length, MAX_ARRAY_LENGTH))


def _check_count(field, count):
    if count > MAX_ARRAY_LENGTH:
        raise WireError("corruption", "%s is %d, more than %d" % (field, count, MAX_ARRAY_LENGTH))


def _check_knobs(k, where):
    if k.HasField("overflow_policy") and k.overflow_policy not in pb.OverflowPolicy.values():
        raise WireError("corruption", "%s.overflow_policy has unknown value %d" %
                        (where, k.overflow_policy))
    for name in _COUNT_KNOBS:
        if k.HasField(name):
            _check_count("%s.%s" % (where, name), getattr(k, name))
    for name in VECTOR_KNOBS:
        if k.HasField(name):
            _check_length("%s.%s" % (where, name), len(getattr(k, name).values))


def _check_layer_knobs(layer_knobs, where):
    _check_length(where, len(layer_knobs))
    for i, lk in enumerate(layer_knobs):
        _check_count("%s[%d].layer" % (where, i), lk.layer)
        _check_knobs(lk.knobs, "%s[%d].knobs" % (where, i))


def _check_payload(kind, m):
    """Raises WireError("corruption", ...) if payload `m` breaks an invariant."""
    name = {"step": "StepRecord", "hello": "Hello", "heartbeat": "Heartbeat",
            "command": "Command", "ack": "Ack", "sync": "Sync"}[kind]
    _check_engine_id(name + ".engine_id", m.engine_id)
    if kind == "step":
        _check_length("StepRecord.layers", len(m.layers))
        for i, l in enumerate(m.layers):
            where = "StepRecord.layers[%d]" % i
            _check_count(where + ".layer", l.layer)
            for field in ("expert_tokens", "expert_demand", "slot_tokens", "device_tokens",
                          "k_histogram"):
                _check_length("%s.%s" % (where, field), len(getattr(l, field)))
            _check_length(where + ".timing.device_expert_us", len(l.timing.device_expert_us))
    elif kind == "hello":
        _text_bytes("Hello.backend", m.backend)
        for field in ("num_layers", "num_experts", "num_shared_experts", "num_replicas",
                      "num_devices"):
            _check_count("Hello." + field, getattr(m, field))
        _check_knobs(m.knobs, "Hello.knobs")
        _check_layer_knobs(m.layer_knobs, "Hello.layer_knobs")
    elif kind == "command":
        _text_bytes("Command.reason", m.reason)
        _check_knobs(m.knobs, "Command.knobs")
        _check_layer_knobs(m.layer_knobs, "Command.layer_knobs")
    elif kind == "ack":
        _text_bytes("Ack.error", m.error)


# ---------------------------------------------------------------------------
# Encode / decode.

def encode(kind, message):
    """Serialises payload `message` (a pb.StepRecord, pb.Hello, ...) of type
    `kind` ("step", "hello", "heartbeat", "command", "ack" or "sync") into one
    Envelope with this client's schema version. Raises WireError
    ("invalid_argument") when the message breaks an invariant."""
    if kind not in _PAYLOADS:
        raise WireError("invalid_argument", "unknown payload type %r" % (kind,))
    try:
        _check_payload(kind, message)
    except WireError as e:
        raise WireError("invalid_argument", "telemetry encode: %s" % e) from None
    envelope = pb.Envelope(schema_version=SCHEMA_VERSION)
    getattr(envelope, kind).CopyFrom(message)
    return envelope.SerializeToString()


def _has_unknown_fields(envelope, data):
    unknown = getattr(envelope, "UnknownFields", None)
    if unknown is not None:
        try:
            return len(unknown()) > 0
        except NotImplementedError:
            pass
    # Without reflection on unknown fields: bytes beyond what the known
    # fields account for can only be unknown fields.
    return len(data) > envelope.ByteSize()


def decode(data):
    """Parses one message: returns (kind, payload) with kind one of "step",
    "hello", "heartbeat", "command", "ack", "sync". Raises WireError: "corruption" for
    empty or unparsable bytes, a missing schema_version, no payload, or a
    broken invariant; "unsupported" for another major version or a payload
    type this client does not know."""
    data = bytes(data)
    if not data:
        raise WireError("corruption", "telemetry decode: empty message")
    envelope = pb.Envelope()
    try:
        envelope.ParseFromString(data)
    except Exception:  # google.protobuf.message.DecodeError, or RuntimeWarning-ish
        raise WireError("corruption", "telemetry decode: %d bytes are not a valid "
                        "moe.telemetry.v1.Envelope" % len(data)) from None
    if envelope.schema_version == 0:
        raise WireError("corruption", "telemetry decode: envelope has no schema_version")
    if envelope.schema_version != SCHEMA_VERSION:
        raise WireError("unsupported", "telemetry decode: schema major version %d is not "
                        "supported (this client speaks version %d)" %
                        (envelope.schema_version, SCHEMA_VERSION))
    kind = envelope.WhichOneof("payload")
    if kind is None:
        if _has_unknown_fields(envelope, data):
            raise WireError("unsupported", "telemetry decode: envelope carries a payload type "
                            "unknown to this client")
        raise WireError("corruption", "telemetry decode: envelope has no payload")
    payload = getattr(envelope, kind)
    try:
        _check_payload(kind, payload)
    except WireError as e:
        raise WireError("corruption", "telemetry decode: %s" % e) from None
    return kind, payload


# ---------------------------------------------------------------------------
# KnobSet <-> plain dicts: {"capacity_factor": 1.25, "overflow_policy": "drop",
# "expert_bias": [..floats..], "phy2log": [..ints..]}; absent keys are "leave
# as is".

def knobs_to_dict(k):
    """The fields present in pb.KnobSet `k`, as a dict."""
    out = {}
    for name in SCALAR_KNOBS:
        if k.HasField(name):
            value = getattr(k, name)
            if name == "overflow_policy":
                value = OVERFLOW_POLICIES[value]
            out[name] = value
    for name in VECTOR_KNOBS:
        if k.HasField(name):
            out[name] = list(getattr(k, name).values)
    return out


def knobs_from_dict(values, out=None):
    """Fills pb.KnobSet `out` (a new one when None) from dict `values`.
    Raises WireError("invalid_argument") for an unknown knob or policy name."""
    k = pb.KnobSet() if out is None else out
    for name, value in values.items():
        if name not in ALL_KNOBS:
            raise WireError("invalid_argument", "unknown knob %r" % (name,))
        if name == "overflow_policy":
            if value not in OVERFLOW_POLICIES:
                raise WireError("invalid_argument", "overflow_policy must be one of %s, not %r" %
                                (", ".join(OVERFLOW_POLICIES), value))
            k.overflow_policy = OVERFLOW_POLICIES.index(value)
        elif name in VECTOR_KNOBS:
            field = getattr(k, name)
            field.SetInParent()  # present even when empty
            del field.values[:]
            field.values.extend(float(v) if name == "expert_bias" else int(v) for v in value)
        elif name in ("top_k", "k_min", "shortlist"):
            setattr(k, name, int(value))
        else:
            setattr(k, name, float(value))
    return k
