import Stack

extension SocketService {
    /// The service's sockets by their stack socket's ID: one array per slab of the stack (TCP,
    /// UDP), indexed by the ID's slot and checked against its generation. A dictionary hashed the
    /// ID for each of the five or so lookups a connection makes (SipHash, ~200 instructions each).
    struct SocketTable {
        private struct Entry {
            var generation: UInt32
            var socket: Socket
        }

        private var tcp: [Entry?] = []
        private var udp: [Entry?] = []
        private(set) var count = 0

        subscript(id: SocketID) -> Socket? {
            get {
                let (udp, slot) = Self.place(id)
                let entries = udp ? self.udp : tcp
                guard slot < entries.count, let entry = entries[slot], entry.generation == id.generation else { return nil }
                return entry.socket
            }
            set {
                let (isUDP, slot) = Self.place(id)
                if isUDP { Self.store(newValue, id.generation, slot, in: &udp, count: &count) }
                else { Self.store(newValue, id.generation, slot, in: &tcp, count: &count) }
            }
        }

        private static func place(_ id: SocketID) -> (udp: Bool, slot: Int) {
            (NetworkStack.isUDP(id), Int(id.index & ~NetworkStack.udpIndexBit))
        }

        private static func store(_ socket: Socket?, _ generation: UInt32, _ slot: Int, in entries: inout [Entry?],
                                  count: inout Int) {
            if let socket {
                if slot >= entries.count { entries.append(contentsOf: repeatElement(nil, count: slot + 1 - entries.count)) }
                if entries[slot] == nil { count += 1 }
                entries[slot] = Entry(generation: generation, socket: socket)
            } else if slot < entries.count, let entry = entries[slot], entry.generation == generation {
                entries[slot] = nil
                count -= 1
            }
        }
    }
}
