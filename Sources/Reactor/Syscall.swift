import CLinux
import Glibc
import Timing

/// A failed system call: which call, and the errno it left.
public struct SyscallError: Error, CustomStringConvertible, Equatable {
    public let call: String
    public let errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// Every system call goes through these helpers: EINTR is retried, would-block is a value
/// (nil), and any other failure throws an error that names the call.
public enum Syscall {
    /// Runs `body` until it does not fail with EINTR; throws on a negative result.
    @inline(__always) @discardableResult
    public static func call<T: BinaryInteger>(_ name: @autoclosure () -> String, _ body: () -> T) throws -> T {
        while true {
            let result = body()
            if result >= 0 { return result }
            let error = Glibc.errno
            if error == EINTR { continue }
            throw SyscallError(name(), errno: error)
        }
    }

    /// Like `call`, but EAGAIN/EWOULDBLOCK returns nil instead of throwing.
    @inline(__always)
    public static func nonBlocking<T: BinaryInteger>(_ name: @autoclosure () -> String, _ body: () -> T) throws -> T? {
        while true {
            let result = body()
            if result >= 0 { return result }
            let error = Glibc.errno
            if error == EINTR { continue }
            if error == EAGAIN || error == EWOULDBLOCK { return nil }
            throw SyscallError(name(), errno: error)
        }
    }

    public static func close(_ fd: Int32) {
        // close(2) must not be retried on EINTR on Linux: the fd is released either way.
        _ = Glibc.close(fd)
    }

    public static func monotonicNow() -> Instant { Instant(nanoseconds: lvlip_monotonic_ns()) }
}

