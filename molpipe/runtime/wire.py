"""Wire format of the MPI backend: a Message as one contiguous byte buffer, never a pickle.

A frame is ``[u64 header length][JSON header][pad][array bytes, each 16-byte aligned]``.
The header holds every scalar (kind, key, stage, step, path, worker, skip, error, stats,
version) and, for every array, its name, dtype, shape and byte offset; the arrays (the payload and the instance's
fields) travel as raw bytes and come back as views into the receive buffer. An instance is
any dataclass whose fields are numpy arrays or JSON scalars (``Instance``, test toys); its
class travels as ``module:qualname`` and is rebuilt with its fields as keywords.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import struct

import numpy as np

from molpipe.runtime.message import Kind, Message

ALIGN = 16
_LEN = struct.Struct("<Q")


def _pad(n: int) -> int:
    return -n % ALIGN


def pack(header: dict, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """One uint8 buffer holding ``header`` (JSON-able) and ``arrays`` (name -> ndarray)."""
    arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    buf, views = frame(header, {name: (a.dtype, a.shape) for name, a in arrays.items()})
    for name, a in arrays.items():
        views[name][...] = a
    return buf


def frame(header: dict, layout: dict[str, tuple]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """An empty frame for arrays of ``layout`` (name -> (dtype, shape)), and views of its
    arrays to fill in place (``pack`` without the copies: e.g. a difference written by
    ``np.subtract(..., out=view)``)."""
    specs, offset = [], 0
    for name, (dtype, shape) in layout.items():
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise TypeError(f"array {name!r} has dtype object: cannot travel over MPI")
        nbytes = dt.itemsize * math.prod(shape)
        specs.append([name, dt.str, list(shape), offset])
        offset += nbytes + _pad(nbytes)
    head = json.dumps({**header, "arrays": specs}, separators=(",", ":")).encode()
    start = _LEN.size + len(head)
    start += _pad(start)
    buf = np.empty(start + offset, dtype=np.uint8)
    buf[:_LEN.size] = np.frombuffer(_LEN.pack(len(head)), dtype=np.uint8)
    buf[_LEN.size:_LEN.size + len(head)] = np.frombuffer(head, dtype=np.uint8)
    buf[_LEN.size + len(head):start] = 0
    views, end = {}, start
    for name, dt, shape, off in specs:
        dt = np.dtype(dt)
        size = dt.itemsize * math.prod(shape)
        buf[end:start + off] = 0                 # padding never carries stale memory
        views[name] = buf[start + off:start + off + size].view(dt).reshape(shape)
        end = start + off + size
    buf[end:] = 0
    return buf, views


def unpack(buf: np.ndarray) -> tuple[dict, dict[str, np.ndarray]]:
    """Inverse of ``pack``: (header, arrays); the arrays are views into ``buf``."""
    (n,) = _LEN.unpack(buf[:_LEN.size].tobytes())
    header = json.loads(buf[_LEN.size:_LEN.size + n].tobytes())
    start = _LEN.size + n
    start += _pad(start)
    arrays = {}
    for name, dtype, shape, off in header.pop("arrays"):
        dt = np.dtype(dtype)
        size = dt.itemsize * math.prod(shape)      # (np.prod costs ~5 µs an array)
        arrays[name] = buf[start + off:start + off + size].view(dt).reshape(shape)
    return header, arrays


# -- JSON-able scalars: keys may be tuples, which JSON turns into lists ------------------------
def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"{type(x).__name__} value {x!r} cannot travel over MPI (not JSON-able)")


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def type_name(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve(name: str):
    """The object called ``module:qualname`` (imported on first use)."""
    module, _, qual = name.partition(":")
    obj = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def _encode_inst(inst, arrays: dict) -> dict | None:
    if inst is None:
        return None
    if not dataclasses.is_dataclass(inst):
        raise TypeError(f"instance of type {type(inst).__name__} cannot travel over MPI "
                        "(needs a dataclass of arrays and scalars)")
    scalars = {}
    for f in dataclasses.fields(inst):
        v = getattr(inst, f.name)
        if isinstance(v, np.ndarray):
            arrays[f"i/{f.name}"] = v
        else:
            scalars[f.name] = _jsonable(v)
    return {"type": type_name(inst), "scalars": scalars}


def _decode_inst(spec: dict | None, arrays: dict):
    if spec is None:
        return None
    cls = resolve(spec["type"])
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{spec['type']} is not a dataclass")
    fields = {k[2:]: v for k, v in arrays.items() if k.startswith("i/")}
    return cls(**fields, **spec["scalars"])


def encode(msg: Message, gen: int = 0) -> np.ndarray:
    """``msg`` as one buffer (``gen`` names the pipeline it belongs to, so that a late frame
    of an aborted pipeline can be dropped)."""
    arrays = {f"p/{k}": np.asarray(v) for k, v in (msg.payload or {}).items()}
    header = {"k": msg.kind.value, "g": gen, "key": _jsonable(msg.key), "stage": msg.stage,
              "step": int(msg.step), "path": _jsonable(msg.path), "worker": msg.worker,
              "skip": msg.skip, "error": msg.error, "stats": _jsonable(msg.stats),
              "ver": msg.version, "inst": _encode_inst(msg.inst, arrays)}
    return pack(header, arrays)


def decode(header: dict, arrays: dict) -> Message:
    """The Message of an unpacked frame (see ``encode``)."""
    payload = {k[2:]: v for k, v in arrays.items() if k.startswith("p/")}
    return Message(Kind(header["k"]), _tuplify(header["key"]), header["stage"], header["step"],
                   payload, tuple((s, t) for s, t in header["path"]),
                   _decode_inst(header["inst"], arrays), header["worker"], header["skip"],
                   header["error"], header["stats"], header.get("ver"))


def is_message(header: dict) -> bool:
    return header["k"] in _KINDS


_KINDS = frozenset(k.value for k in Kind)
