import CLinux
import Glibc
import Reactor
import Stack
import Timing

extension SocketService {
    /// One stack socket as the service keeps it: a core every socket has, and the state of its
    /// kind (STYLE.md 13; SwiftNIO's channels over BaseSocketChannel).
    ///
    /// The core is what a socket keeps for its whole life: its handle (slot, generation and
    /// token, which the shim presents), the user it counts against and the process that made it,
    /// the daemon's end of its pair and what the reactor watches there, its names and binding,
    /// its option values, and what a tombstone remembers once the connection ended (error,
    /// final state, when). `kind` holds the rest:
    /// - `Stream`: a TCP socket that is not listening, from unconnected through connecting and
    ///   connected to closed (the shim's filler, shutdown and FIN state, what the application
    ///   wrote after closing);
    /// - `Listener`: a listening TCP socket (connections waiting to be handed over);
    /// - `Datagram`: a UDP or ICMP socket on a SOCK_SEQPACKET pair.
    ///
    /// A TCP socket changes kind once: listen() turns an unconnected stream into a listener.
    /// That replaces the kind's state, not the socket: everything that names it stays (the
    /// application's descriptor and the shim's handle, the reactor's registration of the
    /// daemon's end, the stack's socket, the options set before listen()), so the registry,
    /// the stack's index and the reactor never learn of the change.
    final class Socket {
        enum Kind {
            case stream(Stream)
            case listener(Listener)
            case datagram(Datagram)
        }

        final class Stream {
            enum Phase {
                case unconnected, connecting, connected, closed
            }

            var phase: Phase
            /// Filler bytes still in the pair from the shim's connect.
            var filler = 0
            /// The pair was reported readable before the connection was up (the shim's
            /// filler, which stays unread until the handshake ends): watched for the hang-up
            /// only until then. A new stream starts watched for reading too (adopt).
            var readableBeforeConnected = false
            /// A waiting connect without filler was answered -EINPROGRESS: the shim writes its
            /// filler now and says so (LVLIP_CONNECT_FILLER). Until then the pair is not read,
            /// even once connected: what it holds may be that filler.
            var fillerAwaited = false
            /// A connect() that completed in the background has been answered once with 0.
            var connectReported: Bool
            /// shutdown(SHUT_WR) asked: FIN once what the application wrote before it is sent.
            var finPending = false
            var writeShut = false
            var readShut = false
            /// The daemon's end is shut for writing: the application reads end of stream.
            var eofSent = false
            /// The application closed its last descriptor; the stream drains `overflow`.
            var appClosed = false
            /// Application bytes read after the application closed, waiting for send space.
            var overflow: [UInt8] = []

            init(phase: Phase = .unconnected, connectReported: Bool = false) {
                self.phase = phase
                self.connectReported = connectReported
            }
        }

        final class Listener {
            /// Accepted connections waiting for room in the listener's pair.
            var handoff: [(socket: Socket, appFD: Int32)] = []
        }

        final class Datagram {
            var connected = false
            /// Not reading the application's datagrams until the link's queue drains.
            var waitingForOutput = false
            var eofSent = false
            var writeShut = false
            /// After shutdown(SHUT_WR): bytes of datagrams written before it, still to send.
            var writtenBeforeShutdown = 0
        }

        // The handle.
        let slot: Int32
        let generation: UInt32
        let token: UInt64
        /// AF_INET or AF_INET6; IPV6_ADDRFORM turns an AF_INET6 socket into an AF_INET one.
        var family: Int32
        var kind: Kind

        // Whose it is: the per-user quotas count it and the bytes it buffers.
        let user: User
        let ownerPid: Int32
        var buffered = 0
        /// Not reading its application's writes because the user is over its limit.
        var paused = false

        // The stack's socket and the daemon's end of the pair.
        var stackID: SocketID?
        /// The key under which `byStack` holds the socket.
        var stackKey: SocketID?
        /// The daemon's end of the pair; -1 once closed.
        var fd: Int32
        /// lvlipd's end holds the socket's name (IDENTIFY finds the socket by it).
        var named = false
        /// The daemon's end has its send buffer raised to `pushBuffer` (a stream's, lazily:
        /// on the first push that fills the kernel's default).
        var pushBufferRaised = false
        var interest: IOEvents = []

        // Names and binding.
        /// IPV6_V6ONLY, as set in the stack (TCPSocketOptions.v6Only, udpSetV6Only).
        var v6only = false
        /// The address bind() chose (its family's any when unbound): what a listener's name shows.
        var boundAddress: IPAddress
        var reuseAddress = false
        /// Names in the stack's form (IPv4 as v4-mapped); an unbound socket's is its family's any.
        var localName: (address: IPAddress, port: UInt16)
        var peerName: (address: IPAddress, port: UInt16)
        /// Option values kept for reading back (SocketOptions.swift).
        var options = OptionStore()

        // What a tombstone remembers after the daemon's end closed.
        /// The error to report (K.SO_ERROR, reads).
        var pendingError: Int32 = 0
        var finalState = TCPState.closed
        var closedAt: Instant?

        init(slot: Int32, generation: UInt32, token: UInt64, family: Int32, kind: Kind, user: User, ownerPid: Int32,
             fd: Int32) {
            self.slot = slot
            self.generation = generation
            self.token = token
            self.family = family
            self.kind = kind
            self.user = user
            self.ownerPid = ownerPid
            self.fd = fd
            let any = family == AF_INET6 ? IPAddress.anyIPv6 : IPAddress.anyIPv4
            boundAddress = any
            localName = (any, 0)
            peerName = (any, 0)
        }

        var ref: lvlip_ref { lvlip_ref(index: UInt32(slot), generation: generation, token: token) }

        var isDatagram: Bool {
            if case .datagram = kind { return true }
            return false
        }

        var isListening: Bool {
            if case .listener = kind { return true }
            return false
        }

        /// The kernel's TCP_CLOSE before a connection: neither connecting, connected nor
        /// listening (a datagram socket: no peer).
        var isUnconnected: Bool {
            switch kind {
            case .stream(let stream): stream.phase == .unconnected
            case .datagram(let datagram): !datagram.connected
            case .listener: false
            }
        }

        /// Has a peer, or had one until the connection ended.
        var isConnected: Bool {
            switch kind {
            case .stream(let stream): stream.phase == .connected || (stream.phase == .closed && peerName.port != 0)
            case .datagram(let datagram): datagram.connected
            case .listener: false
            }
        }

        /// The state the shim is told (SOCKET and IDENTIFY replies).
        var state: UInt32 {
            switch kind {
            case .stream(let stream):
                switch stream.phase {
                case .unconnected: LVLIP_STATE_UNCONNECTED.rawValue
                case .connecting: LVLIP_STATE_CONNECTING.rawValue
                case .connected: LVLIP_STATE_CONNECTED.rawValue
                case .closed: LVLIP_STATE_CLOSED.rawValue
                }
            case .listener: LVLIP_STATE_LISTENING.rawValue
            case .datagram(let datagram): datagram.connected ? LVLIP_STATE_CONNECTED.rawValue : LVLIP_STATE_UNCONNECTED.rawValue
            }
        }
    }

    /// A user's sockets and buffered bytes, for the per-user limits (docs/ipc.md, "Limits").
    final class User {
        let uid: UInt32
        var sockets = 0
        var buffered = 0
        /// Sockets not reading their application's writes because the user is over its limit.
        var paused: [Socket] = []
        init(uid: UInt32) { self.uid = uid }
    }
}
