"""The IPC wire format as Python reads it: constants, enum values and struct layouts taken out
of Sources/CLinux/include/lvlip_ipc.h, the header the shim and lvlipd compile against, so that
the tests' hand-made messages cannot drift from the real ones (docs/ipc.md).

The header's structs have no padding and its integers travel little-endian (one host), which
is what the "<" struct formats below assume; test_ipc_wire.py compares every size and offset
with the C compiler's."""
import os
import re
import struct

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Sources", "CLinux", "include",
                      "lvlip_ipc.h")
_TYPES = {"uint8_t": "B", "int8_t": "b", "uint16_t": "H", "int16_t": "h", "uint32_t": "I", "int32_t": "i",
          "uint64_t": "Q", "int64_t": "q"}


def _strip_comments(text):
    return re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.S)


def _parse(text):
    text = _strip_comments(text)
    constants = {}
    for name, value in re.findall(r"#define\s+(\w+)\s+(.+)", text):
        expression = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)[uU]\b", r"\1", value.strip())
        if re.fullmatch(r"[\d\sx()*+a-fA-F]+", expression):
            constants[name] = eval(expression, {})  # digits and arithmetic only (checked above)
    for body in re.findall(r"enum\s+\w+\s*\{(.*?)\}", text, flags=re.S):
        for name, value in re.findall(r"(\w+)\s*=\s*(\w+)", body):
            constants[name] = int(value, 0)
    structs = {}
    for name, body in re.findall(r"struct\s+(\w+)\s*\{(.*?)\};", text, flags=re.S):
        fields = []
        for declaration in body.split(";"):
            words = declaration.split()
            if not words:
                continue
            if words[0] == "struct":
                inner = structs[words[1]]
                fields += [(f"{words[2]}.{field}", fmt) for field, fmt in inner]
                continue
            for field in " ".join(words[1:]).split(","):
                # A byte array (uint8_t addr[16]) is one field of N bytes.
                array = re.fullmatch(r"(\w+)\s*\[(\d+)\]", field.strip())
                if array:
                    fields.append((array.group(1), array.group(2) + "s"))
                else:
                    fields.append((field.strip(), _TYPES[words[0]]))
        structs[name] = fields
    return constants, structs


with open(HEADER) as _file:
    CONSTANTS, STRUCTS = _parse(_file.read())


def const(name):
    """A #define or enum value, e.g. const("LVLIP_MSG_SOCKET")."""
    return CONSTANTS[name]


def fmt(name):
    return "<" + "".join(f for _, f in STRUCTS[name])


def size(name):
    return struct.calcsize(fmt(name))


def fields(name):
    """The struct's fields in order, nested ones as "ref.index"."""
    return [field for field, _ in STRUCTS[name]]


def offset(name, field):
    """Byte offset of a field (or of the first field of a nested struct, "ref")."""
    position = 0
    for f, code in STRUCTS[name]:
        if f == field or f.startswith(field + "."):
            return position
        position += struct.calcsize("<" + code)
    raise KeyError(field)


def pack(struct_name, /, *values, **named):
    """The struct's bytes, from all its fields in order or by name (missing names are 0);
    values are truncated to the field's width, as a C assignment would; byte arrays take
    bytes (zero-padded)."""
    if values and named:
        raise TypeError("positional or named fields, not both")
    layout = STRUCTS[struct_name]
    if not values:
        unknown = set(named) - {f for f, _ in layout}
        if unknown:
            raise KeyError(f"{struct_name} has no field {sorted(unknown)}")
        values = [named.get(f, 0) for f, _ in layout]
    if len(values) != len(layout):
        raise TypeError(f"{struct_name} has {len(layout)} fields, got {len(values)}")
    out = b""
    for (_, code), value in zip(layout, values):
        if code.endswith("s"):
            out += struct.pack("<" + code, value if isinstance(value, bytes) else b"")
            continue
        bits = struct.calcsize(code) * 8
        value &= (1 << bits) - 1
        if code.islower() and value >= 1 << (bits - 1):
            value -= 1 << bits
        out += struct.pack("<" + code, value)
    return out


def unpack_from(name, buffer, at=0):
    """The struct's fields as a dict."""
    return dict(zip(fields(name), struct.unpack_from(fmt(name), buffer, at)))


def header(length, type_, flags=0, tag=0):
    return pack("lvlip_msg_header", length, type_, flags, tag)


def v4_mapped(address):
    """The 16 address bytes of lvlip_addr for an IPv4 address ("10.0.0.5")."""
    return b"\0" * 10 + b"\xff\xff" + bytes(int(part) for part in address.split("."))
