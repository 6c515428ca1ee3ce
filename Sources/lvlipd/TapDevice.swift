import CLinux
import Glibc
import Logging
import Reactor
import Stack

/// A TAP interface opened through /dev/net/tun (IFF_TAP | IFF_NO_PI): one Ethernet frame per
/// read or write, non-blocking.
///
/// With `offload` (the default) the TAP also carries a virtio-net header (IFF_VNET_HDR) and
/// announces checksum and TCP segmentation offload: the kernel then hands over its TCP
/// segments as built, up to 64 KB with the checksum left undone, instead of cutting them to
/// the MTU — one read instead of up to 45. The stack learns of the offload per frame
/// (`ReceivedFrame.checksumVerified`). The same header carries the stack's requests the other
/// way (`FrameOffload`, when the stack is configured for them): TCP checksums left to the
/// kernel and super-segments of up to 64 KB written at once, which the kernel delivers to a
/// local socket whole, or cuts to the MTU when it forwards them.
///
/// As a `Link` it reads after the reactor has said the descriptor is readable (`readable`),
/// until the kernel has nothing more or the batch is full; and once per frame written that
/// the kernel may have answered inside the write (`answersDue`), the answer being taken in
/// the same wake-up. What more the kernel queued, the reactor reports.
final class TapDevice: Link {
    /// Counters of the TAP's own I/O, beside the stack's.
    struct Counters {
        var reads: UInt64 = 0
        var readErrors: UInt64 = 0
        var writes: UInt64 = 0
        var writeErrors: UInt64 = 0
    }

    let fd: Int32
    let name: String
    let offload: Bool
    /// The reactor saw the descriptor readable; cleared when a read finds nothing.
    var readable = false
    /// Frames written since the last read that finds nothing which a peer on this host may
    /// have answered at once (`FrameAnswers`): each allows one read before the reactor says
    /// the descriptor is readable. A pure ACK allows none, which saves the read that would
    /// find nothing after each (the ACK of a SYN-ACK, of a response).
    private var answersDue = 0
    private(set) var counters = Counters()
    private let logger: Logger
    private let header: UnsafeMutableRawBufferPointer
    private let emptyHeader: UnsafeMutableRawBufferPointer
    private let frameBuffer: UnsafeMutableRawBufferPointer

    /// Opens (creating if missing) the TAP `name`; errors are explained for a person.
    init(name: String, offload: Bool = true, logger: Logger) throws(DaemonError) {
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
        if lvlip_tap_attach(fd, name, &kernelName, offload ? 1 : 0) != 0 {
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
        if offload && lvlip_tap_enable_offload(fd) != 0 {
            let error = errno
            Syscall.close(fd)
            throw .init("cannot enable offloads on TAP \(name): \(SyscallError("ioctl(TUNSETOFFLOAD)", errno: error)) (try --no-offload)")
        }
        self.fd = fd
        self.name = String(cString: kernelName)
        self.offload = offload
        self.logger = logger
        frameBuffer = .allocate(byteCount: Self.maximumRead + 64, alignment: 16)
        header = .allocate(byteCount: Int(LVLIP_VNET_HEADER_SIZE), alignment: 8)
        header.initializeMemory(as: UInt8.self, repeating: 0)
        emptyHeader = .allocate(byteCount: Int(LVLIP_VNET_HEADER_SIZE), alignment: 8)
        emptyHeader.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit {
        Syscall.close(fd)
        frameBuffer.deallocate()
        header.deallocate()
        emptyHeader.deallocate()
    }

    /// Brings the kernel side up and gives it our MTU, so both ends agree on frame sizes.
    func configureKernelSide(mtu: Int) throws(DaemonError) {
        if lvlip_interface_set_mtu(name, Int32(mtu)) != 0 {
            throw .init("cannot set the MTU of \(name) to \(mtu): \(SyscallError("ioctl(SIOCSIFMTU)", errno: errno))")
        }
        if lvlip_interface_up(name) != 0 {
            throw .init("cannot bring \(name) up: \(SyscallError("ioctl(SIOCSIFFLAGS)", errno: errno))")
        }
    }

    /// The largest read: a 64 KB TSO segment with its Ethernet and virtio-net headers (an
    /// IPv6 one's 65535-byte payload comes after a 40-byte header).
    static let maximumRead = 40 + 65535 + 14 + Int(LVLIP_VNET_HEADER_SIZE)

    func receive(limit: Int, _ deliver: (ReceivedFrame) -> Void) -> Int {
        var count = 0
        while count < limit {
            if !readable {
                guard answersDue > 0 else { break }
                answersDue -= 1
            }
            let read: (frame: Range<Int>, checksumVerified: Bool)?
            do {
                read = try self.read(into: frameBuffer)
            } catch {
                counters.readErrors &+= 1
                logger.warning("\(error)")
                nothingWaiting()
                break
            }
            guard let read else {
                nothingWaiting()
                break
            }
            counters.reads &+= 1
            count += 1
            // The clock is read per frame (a vDSO call, tens of ns), not once per wake-up: a
            // reply to what we wrote can arrive within the same wake-up (the kernel handles
            // our TAP write synchronously), and RTT samples of zero would make RACK's
            // reordering window vanish.
            deliver(ReceivedFrame(bytes: UnsafeRawBufferPointer(frameBuffer.slice(read.frame)),
                                  checksumVerified: read.checksumVerified, timestamp: Syscall.monotonicNow()))
        }
        return count
    }

    /// A read found nothing (or failed): no more reads until the reactor reports the TAP.
    private func nothingWaiting() {
        readable = false
        answersDue = 0
    }

    func transmit(_ frame: UnsafeRawBufferPointer) {
        transmit(frame, header: emptyHeader)
    }

    /// With a vnet header the kernel finishes what the frame asks (`FrameOffload`); without
    /// one (`--no-offload`) the stack never asks, but a request is still honoured in software.
    func transmit(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) {
        guard self.offload else {
            offload.complete(frame) { transmit($0) }
            return
        }
        offload.writeVirtioHeader(into: header, frame: frame)
        transmit(frame, header: header)
    }

    private func transmit(_ frame: UnsafeRawBufferPointer, header: UnsafeMutableRawBufferPointer) {
        if let error = write(frame, header: header) {
            counters.writeErrors &+= 1
            if counters.writeErrors == 1 || counters.writeErrors % 1000 == 0 {
                logger.warning("TAP write failed (\(counters.writeErrors) so far): \(SyscallError("write(\(name))", errno: error))")
            }
        } else {
            counters.writes &+= 1
            // The kernel handled the frame inside the write: a peer on this host (its TCP, its
            // ARP) may have answered already, without an epoll wake-up for us yet.
            if FrameAnswers.mayBeAnsweredAtOnce(frame) { answersDue += 1 }
        }
    }

    /// Every frame is written as it is transmitted.
    func flush() {}

    var mayHaveAnswered: Bool { readable || answersDue > 0 }

    /// Reads one frame into `buffer`; nil when none is waiting. Returns where the frame lies
    /// in the buffer and whether the kernel vouched for its transport checksum.
    private func read(into buffer: UnsafeMutableRawBufferPointer) throws -> (frame: Range<Int>, checksumVerified: Bool)? {
        guard let n = try Syscall.nonBlocking("read(\(name))", { Glibc.read(fd, buffer.baseAddress, buffer.count) }) else {
            return nil
        }
        guard offload else { return (0..<n, false) }
        let h = Int(LVLIP_VNET_HEADER_SIZE)
        guard n >= h else { return (0..<0, false) }
        // virtio_net_hdr.flags: NEEDS_CSUM (1), the checksum is for us to finish; DATA_VALID
        // (2), it was checked. Either way the kernel built or verified it.
        let flags = buffer[0]
        return (h..<n, flags & 0x3 != 0)
    }

    /// Writes one frame. Returns the errno if the kernel refused it (for example EIO while
    /// the interface is down).
    private func write(_ frame: UnsafeRawBufferPointer, header: UnsafeMutableRawBufferPointer) -> Int32? {
        while true {
            let n: Int
            if offload {
                n = lvlip_writev_plain(fd, header.baseAddress, header.count, frame.baseAddress, frame.count)
            } else {
                n = Glibc.write(fd, frame.baseAddress, frame.count)
            }
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
