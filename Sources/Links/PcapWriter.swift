import CLinux
import Glibc
import Reactor
import Stack

/// A link that records every frame received and sent through the link it wraps, in the
/// classic pcap format (LINKTYPE_ETHERNET), readable by tcpdump, tshark and Wireshark.
/// Output is buffered and written out once per reactor wake-up (`writeBuffered()`).
///
/// The snapshot length is 262144, tcpdump's default: every frame fits whole (a TSO segment
/// from the TAP is up to 64 KB of IP plus the Ethernet header, more than the classic 65535),
/// so each record's captured length is its frame's length.
public final class PcapWriter: Link {
    public static let snapshotLength: UInt32 = 262_144
    private let inner: any Link
    private let fd: Int32
    private var buffer: [UInt8] = []
    private static let flushThreshold = 256 * 1024
    public private(set) var failed: SyscallError?

    /// Creates (or truncates) the file at `path`.
    public init(path: String, wrapping inner: any Link) throws(SyscallError) {
        self.inner = inner
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SyscallError("open \(path)", errno: errno) }
        self.fd = fd
        buffer.reserveCapacity(Self.flushThreshold * 2)
        // Global header: magic, version 2.4, GMT offset 0, sigfigs 0, snaplen, linktype 1.
        append32(0xA1B2_C3D4)
        append16(2)
        append16(4)
        append32(0)
        append32(0)
        append32(Self.snapshotLength)
        append32(1)
        writeBuffered()
    }

    deinit {
        writeBuffered()
        Syscall.close(fd)
    }

    public func receive(limit: Int, _ deliver: (ReceivedFrame) -> Void) -> Int {
        inner.receive(limit: limit) { frame in
            record(frame.bytes)
            deliver(frame)
        }
    }

    public func transmit(_ frame: UnsafeRawBufferPointer) {
        record(frame)
        inner.transmit(frame)
    }

    /// A frame that asks the link for offloads is recorded as the link is given it (a TSO
    /// super-segment stays one record, as tcpdump shows it on a sender with TSO), but with
    /// its checksum completed so that readers do not flag it.
    public func transmit(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) {
        let start = buffer.count + Self.recordHeaderLength
        record(frame, flushing: false)
        buffer.withUnsafeMutableBytes { bytes in
            offload.finishChecksum(UnsafeMutableRawBufferPointer(rebasing: bytes[start..<start + frame.count]))
        }
        if buffer.count >= Self.flushThreshold { writeBuffered() }
        inner.transmit(frame, offload: offload)
    }

    public func flush() { inner.flush() }

    public var mayHaveAnswered: Bool { inner.mayHaveAnswered }

    private static let recordHeaderLength = 16

    private func record(_ frame: UnsafeRawBufferPointer, flushing: Bool = true) {
        var seconds: UInt32 = 0
        var microseconds: UInt32 = 0
        lvlip_realtime(&seconds, &microseconds)
        append32(seconds)
        append32(microseconds)
        append32(UInt32(frame.count))
        append32(UInt32(frame.count))
        buffer.append(contentsOf: frame)
        if flushing && buffer.count >= Self.flushThreshold { writeBuffered() }
    }

    /// Writes what is buffered to the file.
    public func writeBuffered() {
        guard !buffer.isEmpty, failed == nil else {
            buffer.removeAll(keepingCapacity: true)
            return
        }
        var offset = 0
        do {
            while offset < buffer.count {
                offset += try buffer.withUnsafeBytes { bytes in
                    try Syscall.call("write(pcap)") { Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
                }
            }
        } catch {
            failed = error as? SyscallError
        }
        buffer.removeAll(keepingCapacity: true)
    }

    private func append32(_ v: UInt32) { withUnsafeBytes(of: v) { buffer.append(contentsOf: $0) } }
    private func append16(_ v: UInt16) { withUnsafeBytes(of: v) { buffer.append(contentsOf: $0) } }
}
