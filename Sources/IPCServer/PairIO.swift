import CLinux
import Glibc
import Reactor

/// I/O on the daemon's end of a socket's pair, through `Syscall` (EINTR retried, would-block a
/// value). Every call is non-blocking by itself (MSG_DONTWAIT), whatever flags the shim gave
/// the descriptor when it made the pair.
enum PairIO {
    /// What one call did: bytes moved (0 from a read: end of stream), nothing for now (the
    /// pair is empty or full), or an error.
    enum Result {
        case done(Int)
        case wouldBlock
        case failed(Int32)
    }

    /// Reads at most `count` bytes into `buffer`.
    @inline(__always)
    static func receive(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, count: Int) -> Result {
        run("recv") { Glibc.recv(fd, buffer.baseAddress, min(count, buffer.count), Int32(MSG_DONTWAIT)) }
    }

    /// Reads into `a`, then `b` once `a` is full: at most their sizes together.
    @inline(__always)
    static func receive(_ fd: Int32, into a: UnsafeMutableRawBufferPointer, _ b: UnsafeMutableRawBufferPointer) -> Result {
        guard b.count > 0 else { return receive(fd, into: a, count: a.count) }
        var vectors = (iovec(iov_base: a.baseAddress, iov_len: a.count), iovec(iov_base: b.baseAddress, iov_len: b.count))
        return withUnsafeMutableBytes(of: &vectors) { raw in
            var message = msghdr()
            message.msg_iov = raw.baseAddress!.assumingMemoryBound(to: iovec.self)
            message.msg_iovlen = 2
            return run("recvmsg") { Glibc.recvmsg(fd, &message, Int32(MSG_DONTWAIT)) }
        }
    }

    /// Writes `a` then `b` as one message (on a datagram socket's SEQPACKET pair: one datagram).
    @inline(__always)
    static func write(_ fd: Int32, _ a: UnsafeRawBufferPointer,
                      _ b: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) -> Result {
        run("sendmsg") { lvlip_writev2(fd, a.baseAddress, a.count, b.baseAddress, b.count) }
    }

    /// Sends `record` with the descriptor `attached` (SCM_RIGHTS).
    @inline(__always)
    static func send(_ fd: Int32, _ record: UnsafeRawBufferPointer, attaching attached: Int32) -> Result {
        run("sendmsg") { lvlip_send_with_fd(fd, record.baseAddress, record.count, attached) }
    }

    /// Ends what the application reads: after the bytes already in the pair it sees end of stream.
    static func shutdownWrite(_ fd: Int32) {
        _ = try? Syscall.call("shutdown") { lvlip_shutdown_write(fd) }
    }

    /// Bytes the application wrote that the daemon has not read yet (FIONREAD), or nil if the
    /// kernel does not say.
    static func unread(_ fd: Int32) -> Int? {
        var count: Int32 = 0
        guard (try? Syscall.call("ioctl(FIONREAD)", { ioctl(fd, UInt(FIONREAD), &count) })) != nil else { return nil }
        return Int(count)
    }

    @inline(__always)
    private static func run(_ name: StaticString, _ body: () -> Int) -> Result {
        do {
            guard let n = try Syscall.nonBlocking("\(name)", body) else { return .wouldBlock }
            return .done(n)
        } catch {
            return .failed((error as? SyscallError)?.errno ?? EIO)
        }
    }
}
