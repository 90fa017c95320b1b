#!/usr/bin/env python3
"""Independent, dependency-free reader for the Apache Arrow IPC *file* format.

Written from the spec (https://arrow.apache.org/docs/format/Columnar.html and
format/{File,Message,Schema}.fbs) with hand-rolled FlatBuffers parsing, so it
shares no code with the JS apache-arrow library that writes our caches.

Supported types: Utf8, LargeUtf8, Int (8/16/32/64, signed/unsigned),
FloatingPoint (SINGLE/DOUBLE), Bool, FixedSizeList<primitive>, plus
schema-level custom_metadata. Validity bitmaps honoured (absent => all valid).
Body compression, dictionaries and big-endian files are refused.

Usage:
  python3 read_arrow.py FILE            # full JSON dump
  python3 read_arrow.py --summary FILE  # compact per-column summary

JSON: non-finite floats are emitted as the strings "NaN", "Infinity",
"-Infinity" (plain JSON cannot represent them). Nulls are emitted as null.
Exit code 2 with a message on stderr for malformed/unsupported files.
"""
import json
import math
import struct
import sys

MAGIC = b"ARROW1"


class ArrowError(Exception):
    pass


# ---------------------------------------------------------------- flatbuffers
class FB:
    """Minimal FlatBuffers table accessor over a bytes-like buffer."""

    def __init__(self, buf, pos):
        self.buf = buf
        self.pos = pos
        if pos < 0 or pos + 4 > len(buf):
            raise ArrowError("flatbuffer table offset out of range: %d" % pos)
        soff = struct.unpack_from("<i", buf, pos)[0]
        self.vt = pos - soff
        if self.vt < 0 or self.vt + 4 > len(buf):
            raise ArrowError("flatbuffer vtable out of range")
        self.vt_size = struct.unpack_from("<H", buf, self.vt)[0]

    @staticmethod
    def root(buf, base=0):
        if len(buf) - base < 4:
            raise ArrowError("flatbuffer too short")
        return FB(buf, base + struct.unpack_from("<I", buf, base)[0])

    def _field(self, idx):
        voff = 4 + 2 * idx
        if voff + 2 > self.vt_size:
            return 0
        return struct.unpack_from("<H", self.buf, self.vt + voff)[0]

    def has(self, idx):
        return self._field(idx) != 0

    def scalar(self, idx, fmt, default=0):
        o = self._field(idx)
        if not o:
            return default
        return struct.unpack_from("<" + fmt, self.buf, self.pos + o)[0]

    def _indirect(self, idx):
        o = self._field(idx)
        if not o:
            return None
        p = self.pos + o
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def table(self, idx):
        p = self._indirect(idx)
        return None if p is None else FB(self.buf, p)

    def string(self, idx):
        p = self._indirect(idx)
        if p is None:
            return None
        n = struct.unpack_from("<I", self.buf, p)[0]
        return bytes(self.buf[p + 4:p + 4 + n]).decode("utf-8")

    def vector_tables(self, idx):
        p = self._indirect(idx)
        if p is None:
            return []
        n = struct.unpack_from("<I", self.buf, p)[0]
        out = []
        for i in range(n):
            e = p + 4 + 4 * i
            out.append(FB(self.buf, e + struct.unpack_from("<I", self.buf, e)[0]))
        return out

    def vector_structs(self, idx, fmt):
        """Vector of fixed-size structs; returns list of tuples."""
        p = self._indirect(idx)
        if p is None:
            return []
        n = struct.unpack_from("<I", self.buf, p)[0]
        size = struct.calcsize("<" + fmt)
        return [struct.unpack_from("<" + fmt, self.buf, p + 4 + size * i) for i in range(n)]


# ---------------------------------------------------------------- schema
# Type union (Schema.fbs)
T_INT, T_FLOAT, T_BINARY, T_UTF8, T_BOOL, T_FSL, T_LARGEUTF8 = 2, 3, 4, 5, 6, 16, 20
# MessageHeader union (Message.fbs)
H_SCHEMA, H_DICT, H_RECORDBATCH = 1, 2, 3


def parse_kv(tbl, idx):
    md = {}
    for kv in tbl.vector_tables(idx):
        md[kv.string(0)] = kv.string(1)
    return md


def parse_field(f):
    name = f.string(0)
    nullable = bool(f.scalar(1, "B", 0))
    ttype = f.scalar(2, "B", 0)
    t = f.table(3)
    if f.has(4):
        raise ArrowError("field %r: dictionary-encoded fields unsupported" % name)
    children = [parse_field(c) for c in f.vector_tables(5)]
    out = {"name": name, "nullable": nullable}
    if ttype == T_INT:
        bw = t.scalar(0, "i", 0)
        signed = bool(t.scalar(1, "B", 0))
        if bw not in (8, 16, 32, 64):
            raise ArrowError("field %r: bad int bitWidth %d" % (name, bw))
        out["type"] = ("int" if signed else "uint") + str(bw)
        out["_fmt"] = {8: "b", 16: "h", 32: "i", 64: "q"}[bw]
        if not signed:
            out["_fmt"] = out["_fmt"].upper()
    elif ttype == T_FLOAT:
        prec = t.scalar(0, "h", 0)
        if prec == 1:
            out["type"], out["_fmt"] = "float32", "f"
        elif prec == 2:
            out["type"], out["_fmt"] = "float64", "d"
        else:
            raise ArrowError("field %r: half-precision floats unsupported" % name)
    elif ttype == T_UTF8:
        out["type"] = "utf8"
    elif ttype == T_LARGEUTF8:
        out["type"] = "large_utf8"
    elif ttype == T_BOOL:
        out["type"] = "bool"
    elif ttype == T_FSL:
        size = t.scalar(0, "i", 0)
        if len(children) != 1:
            raise ArrowError("field %r: FixedSizeList needs exactly one child" % name)
        out["type"] = "fixed_size_list<%s>" % children[0]["type"]
        out["listSize"] = size
    else:
        raise ArrowError("field %r: unsupported Arrow type id %d" % (name, ttype))
    out["children"] = children
    return out


def parse_schema(s):
    if s.scalar(0, "h", 0) != 0:
        raise ArrowError("big-endian Arrow files unsupported")
    return {
        "fields": [parse_field(f) for f in s.vector_tables(1)],
        "metadata": parse_kv(s, 2),
    }


# ---------------------------------------------------------------- messages
def read_message(data, offset, meta_len_hint=None):
    """Read an encapsulated message at offset. Returns (Message FB, body_start)."""
    if offset + 8 > len(data):
        raise ArrowError("message offset %d beyond file" % offset)
    (first,) = struct.unpack_from("<I", data, offset)
    if first == 0xFFFFFFFF:
        (mlen,) = struct.unpack_from("<i", data, offset + 4)
        fb_start = offset + 8
    else:  # pre-0.15 format without continuation marker
        mlen = struct.unpack_from("<i", data, offset)[0]
        fb_start = offset + 4
    if mlen <= 0 or fb_start + mlen > len(data):
        raise ArrowError("bad message metadata length %d at %d" % (mlen, offset))
    fb = data[fb_start:fb_start + mlen]
    msg = FB.root(fb)
    body_start = fb_start + mlen
    if meta_len_hint is not None:
        body_start = offset + meta_len_hint  # Block.metaDataLength includes prefix+padding
    return msg, body_start


class BodyReader:
    def __init__(self, data, body_start, body_len, nodes, buffers):
        self.data = data
        self.start = body_start
        self.len = body_len
        self.nodes = list(nodes)
        self.buffers = list(buffers)
        self.ni = 0
        self.bi = 0

    def node(self):
        if self.ni >= len(self.nodes):
            raise ArrowError("ran out of field nodes")
        n = self.nodes[self.ni]
        self.ni += 1
        return n  # (length, null_count)

    def buffer(self):
        if self.bi >= len(self.buffers):
            raise ArrowError("ran out of buffers")
        off, ln = self.buffers[self.bi]
        self.bi += 1
        if off < 0 or ln < 0 or off + ln > self.len:
            raise ArrowError("buffer [%d,+%d) outside body of %d bytes" % (off, ln, self.len))
        return self.data[self.start + off:self.start + off + ln]


def validity(buf, length, null_count):
    if null_count == 0 or len(buf) == 0:
        return None
    if len(buf) * 8 < length:
        raise ArrowError("validity bitmap too short")
    return [(buf[i >> 3] >> (i & 7)) & 1 == 1 for i in range(length)]


def read_primitive(buf, fmt, start, count):
    size = struct.calcsize("<" + fmt)
    if (start + count) * size > len(buf):
        raise ArrowError("data buffer too short")
    return list(struct.unpack_from("<%d%s" % (count, fmt), buf, start * size))


def read_column(field, body):
    """Consume this field's node+buffers (pre-order). Returns list of python values."""
    length, null_count = body.node()
    valid = validity(body.buffer(), length, null_count)
    t = field["type"]
    if t in ("utf8", "large_utf8"):
        ofmt = "i" if t == "utf8" else "q"
        offs = read_primitive(body.buffer(), ofmt, 0, length + 1)
        raw = body.buffer()
        if offs[-1] > len(raw):
            raise ArrowError("utf8 offsets exceed data buffer")
        vals = [bytes(raw[offs[i]:offs[i + 1]]).decode("utf-8") for i in range(length)]
    elif t == "bool":
        raw = body.buffer()
        vals = [(raw[i >> 3] >> (i & 7)) & 1 == 1 for i in range(length)]
    elif t.startswith("fixed_size_list"):
        child = field["children"][0]
        size = field["listSize"]
        flat = read_column(child, body)
        if len(flat) < length * size:
            raise ArrowError("fixed_size_list child too short")
        vals = [flat[i * size:(i + 1) * size] for i in range(length)]
    elif "_fmt" in field:
        vals = read_primitive(body.buffer(), field["_fmt"], 0, length)
    else:
        raise ArrowError("unsupported type %s" % t)
    if valid is not None:
        vals = [v if ok else None for v, ok in zip(vals, valid)]
    return vals


def read_arrow_file(path):
    with open(path, "rb") as fh:
        data = memoryview(fh.read())
    if len(data) < 6 + 2 + 4 + 6 or bytes(data[:6]) != MAGIC or bytes(data[-6:]) != MAGIC:
        raise ArrowError("not an Arrow IPC file (bad magic): %s" % path)
    (footer_len,) = struct.unpack_from("<i", data, len(data) - 10)
    footer_start = len(data) - 10 - footer_len
    if footer_len <= 0 or footer_start < 8:
        raise ArrowError("bad footer length %d" % footer_len)
    footer = FB.root(data[footer_start:footer_start + footer_len])
    schema_tbl = footer.table(1)
    if schema_tbl is None:
        raise ArrowError("footer has no schema")
    schema = parse_schema(schema_tbl)
    if footer.vector_structs(2, "qi4xq"):
        raise ArrowError("dictionary batches unsupported")
    blocks = footer.vector_structs(3, "qi4xq")  # Block{offset:long, metaDataLength:int, pad, bodyLength:long}

    columns = {f["name"]: [] for f in schema["fields"]}
    num_rows = 0
    batch_rows = []
    for (boff, mlen, blen) in blocks:
        msg, body_start = read_message(data, boff, mlen)
        if msg.scalar(1, "B", 0) != H_RECORDBATCH:
            raise ArrowError("block at %d is not a RecordBatch message" % boff)
        body_len = msg.scalar(3, "q", 0)
        if body_len != blen:
            raise ArrowError("bodyLength mismatch between footer block and message")
        if body_start + body_len > footer_start:
            raise ArrowError("record batch body runs past footer")
        rb = msg.table(2)
        n = rb.scalar(0, "q", 0)
        if rb.has(3):
            raise ArrowError("compressed record batches unsupported")
        body = BodyReader(data, body_start, body_len, rb.vector_structs(1, "qq"), rb.vector_structs(2, "qq"))
        for f in schema["fields"]:
            col = read_column(f, body)
            if len(col) != n:
                raise ArrowError("column %r has %d rows, batch says %d" % (f["name"], len(col), n))
            columns[f["name"]].extend(col)
        if body.ni != len(body.nodes) or body.bi != len(body.buffers):
            raise ArrowError("unconsumed nodes/buffers in record batch")
        num_rows += n
        batch_rows.append(n)

    return {
        "schema": {
            "fields": [public_field(f) for f in schema["fields"]],
            "metadata": schema["metadata"],
        },
        "numRows": num_rows,
        "batchRows": batch_rows,
        "columns": columns,
    }


def public_field(f):
    out = {"name": f["name"], "type": f["type"], "nullable": f["nullable"]}
    if "listSize" in f:
        out["listSize"] = f["listSize"]
    return out


# ---------------------------------------------------------------- output
def jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    return v


def summarize(result):
    cols = {}
    for f in result["schema"]["fields"]:
        vals = result["columns"][f["name"]]
        s = {"type": f["type"], "length": len(vals), "nulls": sum(1 for v in vals if v is None)}
        if "listSize" in f:
            s["listSize"] = f["listSize"]
            s["sum"] = math.fsum(x for row in vals if row is not None for x in row if x is not None)
            first = vals[0] if vals else None
            s["firstRowSum"] = math.fsum(x for x in (first or []) if x is not None)
            s["firstRowFirst3"] = (first or [])[:3]
        else:
            s["first3"] = vals[:3]
        cols[f["name"]] = s
    return {"schema": result["schema"], "numRows": result["numRows"],
            "batchRows": result["batchRows"], "columns": cols}


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    flags = {a for a in argv[1:] if a.startswith("--")}
    if len(args) != 1 or flags - {"--summary"}:
        sys.stderr.write("usage: read_arrow.py [--summary] FILE\n")
        return 2
    try:
        result = read_arrow_file(args[0])
        out = summarize(result) if "--summary" in flags else result
    except (ArrowError, struct.error, UnicodeDecodeError, OSError) as e:
        sys.stderr.write("read_arrow: error: %s\n" % e)
        return 2
    json.dump(jsonable_tree(out), sys.stdout, ensure_ascii=False, allow_nan=False)
    sys.stdout.write("\n")
    return 0


def jsonable_tree(o):
    if isinstance(o, dict):
        return {k: jsonable_tree(v) for k, v in o.items()}
    if isinstance(o, list):
        return [jsonable_tree(x) for x in o]
    return jsonable(o)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
