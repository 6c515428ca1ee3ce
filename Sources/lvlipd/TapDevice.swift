import CLinux
import Glibc
import Reactor

/// A TAP interface opened through /dev/net/tun (IFF_TAP | IFF_NO_PI): one Ethernet frame per
/// read or write, non-blocking.
final class TapDevice {
    let fd: Int32
    let name: String

    /// Opens (creating if missing) the TAP `name`; errors are explained for a person.
    init(name: String) throws(DaemonError) {
        let fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 {
            let error = errno
            switch error {
            case ENOENT, ENODEV, ENXIO:
                throw .init("no /dev/net/tun on this system: load the tun module (modprobe tun)")
            case EACCES, EPERM:
                throw .init("permission denied opening /dev/net/tun: run lvlipd as root (or with CAP_NET_ADMIN)")
            default:
                throw .init("cannot open /dev/net/tun: \(SyscallError("open", errno: error))")
            }
        }
        var kernelName = [CChar](repeating: 0, count: 16)
        if lvlip_tap_attach(fd, name, &kernelName) != 0 {
            let error = errno
            Syscall.close(fd)
            switch error {
            case EBUSY:
                throw .init("TAP \(name) is busy: another process has it open")
            case EPERM, EACCES:
                throw .init("not permitted to create or attach TAP \(name): run lvlipd as root (or with CAP_NET_ADMIN)")
            case EINVAL:
                throw .init("cannot attach \(name) as a TAP: an interface of that name exists and is not a TAP")
            case ENAMETOOLONG:
                throw .init("interface name \(name) is too long (at most 15 characters)")
            default:
                throw .init("cannot attach TAP \(name): \(SyscallError("ioctl(TUNSETIFF)", errno: error))")
            }
        }
        self.fd = fd
        self.name = String(cString: kernelName)
    }

    deinit { Syscall.close(fd) }

    /// Brings the kernel side up and gives it our MTU, so both ends agree on frame sizes.
    func configureKernelSide(mtu: Int) throws(DaemonError) {
        if lvlip_interface_set_mtu(name, Int32(mtu)) != 0 {
            throw .init("cannot set the MTU of \(name) to \(mtu): \(SyscallError("ioctl(SIOCSIFMTU)", errno: errno))")
        }
        if lvlip_interface_up(name) != 0 {
            throw .init("cannot bring \(name) up: \(SyscallError("ioctl(SIOCSIFFLAGS)", errno: errno))")
        }
    }

    /// Reads one frame; nil when none is waiting.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int? {
        try Syscall.nonBlocking("read(\(name))") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// Writes one frame. Returns false if the kernel refused it (for example EIO while the
    /// interface is down); the caller counts it.
    func write(_ frame: UnsafeRawBufferPointer) -> Int32? {
        while true {
            let n = Glibc.write(fd, frame.baseAddress, frame.count)
            if n >= 0 { return nil }
            if errno == EINTR { continue }
            return errno
        }
    }
}

/// An error the daemon reports to the user and exits on, without a stack trace.
struct DaemonError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
