"""The IPC fuzzer of test_compat_robustness.py: one client process that sends lvlipd random
and mutated messages over many connections at once, and prints what it did as JSON.

    ipc_fuzzer.py SOCKET SEED MESSAGES CONCURRENCY IDLE_CLIENTS SECONDS

Needs ../ipc_wire.py on PYTHONPATH (the message layouts, read out of lvlip_ipc.h);
FUZZ_ECHO_PORT names a kernel echo port its connects may reach."""
import array, json, os, random, select, socket, struct, sys, time
import ipc_wire as W  # the message layouts, read out of lvlip_ipc.h

path, seed, budget, concurrency, idle_count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
rng = random.Random(seed)
deadline = time.monotonic() + seconds
MAGIC = W.const("LVLIP_IPC_MAGIC")
VERSION = W.const("LVLIP_IPC_VERSION")
M = {name: W.const("LVLIP_MSG_" + name) for name in ("HELLO", "HELLO_REPLY", "ERROR", "STATS", "SOCKETS", "SOCKET",
                                                     "IDENTIFY", "BIND", "LISTEN", "CONNECT", "SHUTDOWN", "NAME",
                                                     "SETOPT", "GETOPT", "STATUS")}
TYPES = [M["STATS"], M["SOCKETS"]] + list(range(M["SOCKET"], M["STATUS"] + 1, 2))
HEADER = W.size("lvlip_msg_header")
HELLO = W.size("lvlip_hello")
FLAG_FD = W.const("LVLIP_FLAG_FD")
KERNEL = 0x0A000005
stats = {"messages": 0, "sessions": 0, "closed_by_daemon": 0, "replies": 0, "fds_received": 0,
         "fds_sent": 0, "refs": 0, "foreign_refs": 0, "connect_retries": 0, "timeouts": 0, "idle": 0}
# References any session of this fuzzer received: used on other sessions, they are requests
# on handles of another client.
shared_refs = []
echo_port = int(os.environ.get("FUZZ_ECHO_PORT", "7"))

header = W.header

def hello_body(magic=MAGIC, version=VERSION, zero=0, pid=None):
    return W.pack("lvlip_hello", magic, version, zero, os.getpid() if pid is None else pid)

def rand_u32():
    return rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, rng.getrandbits(32), rng.randrange(64)])

def rand_i32():
    v = rand_u32()
    return v - (1 << 32) if v >= 1 << 31 else v

def connect():
    """A connection to lvlipd. EAGAIN (its listen backlog is full for a moment) is retried
    until the deadline; any other failure ends the fuzzer with an error."""
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
            return s
        except (BlockingIOError, InterruptedError):
            s.close()
            stats["connect_retries"] += 1
            if time.monotonic() > deadline:
                raise SystemExit(f"lvlipd's backlog stayed full: {json.dumps(stats)}")
            time.sleep(0.01)

def send_all(sock, data, fds=()):
    """Sends everything (descriptors with the first byte); socket.timeout after 2 s stuck."""
    view = memoryview(data)
    limit = time.monotonic() + 2
    while view:
        try:
            n = socket.send_fds(sock, [view], list(fds)) if fds else sock.send(view)
        except (BlockingIOError, InterruptedError):
            if time.monotonic() > limit:
                raise socket.timeout("send stuck")
            select.select([], [sock], [], 0.05)
            continue
        fds = ()
        view = view[n:]

class Session:
    def __init__(self):
        self.sock = connect()
        self.greeted = False
        self.refs = []     # (index, generation, token) from SOCKET / IDENTIFY replies
        self.fds = []      # application ends received with replies
        self.input = b""
        self.tag = 0
        # Hostile sessions break the protocol often; gentle ones mostly speak it, so that they
        # live long enough to use real socket references and descriptors.
        self.hostility = rng.choice([1.0, 0.1, 0.1])
        stats["sessions"] += 1

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def drain(self):
        """Reads what the daemon sent; False once it closed the connection."""
        while True:
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(4 * 16), socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                    for fd in fds:
                        stats["fds_received"] += 1
                        if len(self.fds) < 8:
                            os.set_blocking(fd, False)
                            self.fds.append(fd)
                        else:
                            os.close(fd)
            if not data:
                return False
            self.input += data
            while len(self.input) >= HEADER:
                h = W.unpack_from("lvlip_msg_header", self.input)
                length, type_ = h["length"], h["type"]
                if len(self.input) < HEADER + length:
                    break
                body = self.input[HEADER:HEADER + length]
                self.input = self.input[HEADER + length:]
                stats["replies"] += 1
                if type_ in (M["SOCKET"] + 1, M["IDENTIFY"] + 1) and length >= W.size("lvlip_socket_rep"):
                    reply = W.unpack_from("lvlip_socket_rep", body)
                    if reply["result"] == 0:
                        self.refs.append((reply["ref.index"], reply["ref.generation"], reply["ref.token"]))
                        self.refs = self.refs[-8:]
                        shared_refs.append(self.refs[-1])
                        del shared_refs[:-64]
                        stats["refs"] += 1

    def send(self, data, fds=()):
        stats["messages"] += 1
        try:
            send_all(self.sock, data, fds)
            stats["fds_sent"] += len(fds)
            return True
        except socket.timeout:
            stats["timeouts"] += 1
            return False
        except OSError:
            return False

def ref_bytes(s):
    r = rng.random()
    foreign = [ref for ref in shared_refs if ref not in s.refs]
    if foreign and r < 0.1:
        stats["foreign_refs"] += 1
        return W.pack("lvlip_ref", *rng.choice(foreign))
    if s.refs and r < 0.7:
        index, generation, token = rng.choice(s.refs)
        m = rng.random()
        if m < 0.1:
            token ^= 1 << rng.randrange(64)
        elif m < 0.15:
            generation = (generation + 1) & 0xFFFFFFFF
        elif m < 0.2:
            index = rng.randrange(256)
        return W.pack("lvlip_ref", index, generation, token)
    if r < 0.85:
        return W.pack("lvlip_ref", rng.randrange(128), rng.randrange(4), rng.getrandbits(64))
    return os.urandom(W.size("lvlip_ref"))

def wire_addr(address, port, family=2, scope=0):
    """lvlip_addr: an IPv4 address (an int) v4-mapped, or 16 bytes of an IPv6 one."""
    raw = address if isinstance(address, bytes) else b"\0" * 10 + b"\xff\xff" + struct.pack("!I", address & 0xFFFFFFFF)
    return W.pack("lvlip_addr", addr=raw, port=port, family=family, scope_id=scope)

def addr_bytes(connecting):
    # Mostly what the shim sends (AF_INET, v4-mapped), then AF_INET6 spellings (an IPv6
    # address, link-local with or without a scope), AF_UNSPEC and nonsense.
    family = rng.choice([2, 2, 2, 2, 10, 10, 0, rng.getrandbits(16)])
    if family == 10 and rng.random() < 0.5:
        address = rng.choice([bytes(16), bytes.fromhex("fd000000000000000000000000000005"),
                              bytes.fromhex("fe800000000000000000000000000005"), os.urandom(16)])
        return wire_addr(address, rng.choice([echo_port, 0, rng.getrandbits(16)]), family, rng.choice([0, 0, 1, 2, 99]))
    if connecting:
        address = rng.choice([KERNEL, KERNEL, KERNEL, 0x0A000063, 0x7F000001, 0, 0xC0000201, 0xFFFFFFFF, rng.getrandbits(32)])
        port = rng.choice([echo_port, echo_port, rng.getrandbits(16), 0, 9])
    else:
        address = rng.choice([0, 0x0A000004, 0x0A000005, rng.getrandbits(32)])
        port = rng.choice([0, 0, rng.randrange(1, 1024), rng.getrandbits(16), 7])
    return wire_addr(address, port, family)

def body_for(type_, s):
    if type_ in (M["STATS"], M["SOCKETS"]):
        return b"" if rng.random() < 0.9 else os.urandom(rng.randrange(1, 64))
    if type_ == M["SOCKET"]:
        if rng.random() < 0.6:
            return W.pack("lvlip_socket_req", rng.choice([2, 2, 10]), 1, rng.choice([0, 6]), 0)
        if rng.random() < 0.5:
            # Datagram sockets (UDP), where the daemon serves them.
            return W.pack("lvlip_socket_req", rng.choice([2, 2, 10]), 2, rng.choice([0, 17]), 0)
        return W.pack("lvlip_socket_req", rng.choice([2, 10, 1, rand_i32()]), rng.choice([1, 2, 5, rand_i32()]),
                      rng.choice([0, 6, 17, rand_i32()]), rng.choice([0, rand_u32()]))
    if type_ == M["IDENTIFY"]:
        return b"" if rng.random() < 0.9 else os.urandom(rng.randrange(1, 40))
    # The requests below start with a reference (possibly random bytes) and continue with
    # their struct's other fields.
    if type_ in (M["BIND"], M["CONNECT"]):
        filler = rng.choice([0, 0, rng.randrange(1, 16384), rand_u32()])
        flags = rng.choice([0, 0, W.const("LVLIP_CONNECT_WAITS"), W.const("LVLIP_CONNECT_FILLER"), rand_u32()])
        rest = W.pack("lvlip_addr_req", filler=filler, flags=flags)
        return ref_bytes(s) + addr_bytes(type_ == M["CONNECT"]) + rest[W.offset("lvlip_addr_req", "filler"):]
    if type_ in (M["LISTEN"], M["SHUTDOWN"], M["NAME"], M["STATUS"]):
        value = rng.choice([0, 1, 2, 3, -1, 128, rand_i32()])
        rest = W.pack("lvlip_int_req", value=value, reserved=rng.choice([0, 0, rand_u32()]))
        return ref_bytes(s) + rest[W.offset("lvlip_int_req", "value"):]
    if type_ in (M["SETOPT"], M["GETOPT"]):
        level = rng.choice([1, 1, 6, 6, 0, 41, rand_i32()])
        name = rng.choice([rng.randrange(0, 60), rng.randrange(0, 60), rand_i32()])
        opt = W.offset("lvlip_opt_req", "level")
        if type_ == M["SETOPT"]:
            value = rng.choice([struct.pack("<i", rand_i32()), struct.pack("<ii", rng.randrange(2), rng.randrange(3)),
                                b"cubic\0", b"reno", b"", os.urandom(rng.randrange(0, 1100))])
            length = len(value) if rng.random() < 0.9 else rand_u32()
            return ref_bytes(s) + W.pack("lvlip_opt_req", level=level, name=name, length=length)[opt:] + value
        room = rng.choice([4, 8, 16, 104, 232, 0, rand_u32()])
        return ref_bytes(s) + W.pack("lvlip_opt_req", level=level, name=name, length=room)[opt:]
    return os.urandom(rng.randrange(0, 64))

def mutate(body):
    m = rng.random()
    if m < 0.3 and body:
        return body[:rng.randrange(len(body))]
    if m < 0.5:
        return body + os.urandom(rng.randrange(1, 32))
    if m < 0.8 and body:
        b = bytearray(body)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.getrandbits(8)
        return bytes(b)
    return os.urandom(rng.randrange(0, 300))

def spare_fd(s):
    """A descriptor to attach: a received stack socket end, or something unrelated."""
    r = rng.random()
    if s.fds and r < 0.5:
        return os.dup(rng.choice(s.fds))
    if r < 0.7:
        return os.open("/dev/null", os.O_RDONLY)
    if r < 0.85:
        a, b = os.pipe()
        os.close(b)
        return a
    a, b = socket.socketpair()
    fd = a.detach()
    b.close()
    return fd

def send_with_fds(s, data, count):
    fds = [spare_fd(s) for _ in range(count)]
    try:
        return s.send(data, fds)
    finally:
        for fd in fds:
            os.close(fd)

def greet(s):
    s.tag += 1
    r = rng.random()
    if r < 0.9:
        ok = s.send(header(HELLO, M["HELLO"], 0, s.tag) + hello_body())
        s.greeted = ok
        return ok
    if r < 0.94:
        body = hello_body(magic=rng.getrandbits(32), version=rng.choice([2, 1, 3]))
    elif r < 0.97:
        body = hello_body(version=rng.choice([0, 1, 2, 4, 0xFFFF]))
    else:
        body = hello_body(zero=rng.randrange(1, 65536))
    type_ = rng.choice([M["HELLO"], M["HELLO"], M["HELLO_REPLY"], M["ERROR"], M["STATS"]])
    return s.send(header(len(body) if rng.random() < 0.8 else rand_u32() % 64, type_, 0, s.tag) + body)

QUIET = "quiet"

def step(s):
    """One fuzz action on session s: False when it should be replaced, QUIET when no answer
    is expected, True otherwise."""
    h = s.hostility
    r = rng.random() / h
    if r < 0.03:
        # Garbage.
        return s.send(os.urandom(rng.randrange(1, 2048)))
    if r < 0.05:
        # A truncated message, then gone.
        type_ = rng.choice(TYPES + [M["HELLO"]])
        body = body_for(type_, s)
        whole = header(len(body) + rng.randrange(0, 4096), type_, 0, 1) + body
        s.send(whole[:rng.randrange(1, max(2, len(whole)))])
        return False
    if r < 0.07:
        # Gone with replies unread.
        return False
    if not s.greeted:
        return greet(s)
    if rng.random() < 0.03 and s.fds:
        # Bytes into a held stack socket (the data path).
        payload = os.urandom(rng.randrange(1, 4096))
        if rng.random() < 0.5:
            # What a datagram socket's pair carries: lvlip_dgram_header (address, port,
            # flags, error, magic or not) and the payload; on a stream socket, just more bytes.
            dgram = W.pack("lvlip_dgram_header", flags=rng.choice([0, 0, 1, 2, rng.getrandbits(16)]),
                           magic=rng.choice([0, W.const("LVLIP_DGRAM_MAGIC")]))
            address = wire_addr(rng.choice([KERNEL, 0, rng.getrandbits(32)]), rng.choice([echo_port, 0, rng.getrandbits(16)]))
            payload = address + dgram[len(address):] + payload
        try:
            os.write(s.fds[rng.randrange(len(s.fds))], payload)
        except OSError:
            pass
        return QUIET
    s.tag += 1
    if rng.random() < 1 - 0.03 * h:
        type_ = rng.choice(TYPES)
    else:
        # Types a client must not send: replies, unknown numbers, odd ones past the last.
        type_ = rng.choice([0, M["HELLO"], M["HELLO_REPLY"], M["ERROR"], M["STATS"] + 1, M["SOCKETS"] + 1,
                            M["SOCKET"] + 1, M["STATUS"] + 1, M["STATUS"] + 2, 0xFFFF, rng.getrandbits(16)])
    if not s.refs and type_ != M["SOCKET"] and rng.random() < 0.5:
        type_ = M["SOCKET"]
    body = body_for(type_, s)
    if rng.random() < 0.25 * h:
        body = mutate(body)
    length = len(body)
    if rng.random() < 0.03 * h:
        length = rng.choice([length + 1, max(0, length - 1), rand_u32() % (300 * 1024), 0xFFFFFFFF])
    wants_fd = type_ in (M["SOCKET"], M["IDENTIFY"]) or (type_ == M["CONNECT"] and rng.random() < 0.5)
    flags = FLAG_FD if (wants_fd and rng.random() < 1 - 0.1 * h) or rng.random() < 0.05 * h else 0
    if rng.random() < 0.03 * h:
        flags = rng.getrandbits(16)
    data = header(length, type_, flags, s.tag) + body
    if length != len(body):
        # The daemon waits for the rest of the body, or takes the next messages as part of it.
        s.hostility = 1.0
        return s.send(data) and QUIET
    if flags & FLAG_FD:
        attach = 1 if rng.random() < 1 - 0.15 * h else rng.choice([0, 0, 2, 5, 6])
    else:
        attach = 0 if rng.random() < 1 - 0.03 * h else rng.choice([1, 2, 5])
    if attach == 1 and type_ == M["SOCKET"] and rng.random() < 0.85:
        # What the shim does: a new pair, lvlipd's end sent, the other kept as the
        # program's end (the data path above writes into it).
        datagram = len(body) >= W.size("lvlip_socket_req") and W.unpack_from("lvlip_socket_req", body)["type"] == 2
        kind = socket.SOCK_SEQPACKET if datagram else socket.SOCK_STREAM
        if rng.random() < 0.1:
            kind = rng.choice([socket.SOCK_STREAM, socket.SOCK_SEQPACKET, socket.SOCK_DGRAM])
        mine, theirs = socket.socketpair(socket.AF_UNIX, kind)
        ok = s.send(data, [theirs.fileno()])
        theirs.close()
        if ok and len(s.fds) < 8:
            mine.setblocking(False)
            s.fds.append(mine.detach())
        else:
            mine.close()
        return ok
    if attach:
        return send_with_fds(s, data, attach)
    return s.send(data)

idle = []
retries = 0
while len(idle) < idle_count and retries < 500:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(2)
    try:
        c.connect(path)
    except (BlockingIOError, InterruptedError):
        # The daemon's listen backlog is full for a moment: it accepts, we try again.
        c.close()
        retries += 1
        time.sleep(0.01)
        continue
    i = len(idle)
    if i % 3 == 0:
        c.sendall(header(HELLO, M["HELLO"], 0, i) + hello_body())
    elif i % 3 == 1:
        c.sendall(header(HELLO, M["HELLO"], 0, i)[:7])   # a partial header, left hanging
    idle.append(c)
stats["idle"] = len(idle)

sessions = []
try:
    while stats["messages"] < budget and time.monotonic() < deadline:
        while len(sessions) < concurrency:
            try:
                sessions.append(Session())
            except OSError as error:
                raise SystemExit(f"cannot connect to lvlipd: {error}: {json.dumps(stats)}")
        i = rng.randrange(len(sessions))
        s = sessions[i]
        alive = step(s)
        if alive is True and s.hostility < 1:
            # Gentle sessions wait for the answer, as the shim does; hostile ones flood. One
            # that gets none is out of step with the daemon (a length it did not fill): from
            # then on it floods too.
            if not select.select([s.sock], [], [], 0.05)[0]:
                s.hostility = 1.0
        alive = bool(alive) and s.drain()
        if not alive:
            if s.drain() is False:
                stats["closed_by_daemon"] += 1
            s.close()
            sessions.pop(i)
finally:
    for s in sessions:
        s.drain()
        s.close()
    for c in idle:
        c.close()
    print(json.dumps(stats), flush=True)
