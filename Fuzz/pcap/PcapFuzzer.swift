import FuzzSupport
import Glibc
import Links
import Stack

/// The pcap writer under frames of every size and any content, in both directions, with
/// writes of its buffer at any point: the file it leaves must read back as exactly those
/// frames — a classic pcap header (magic, version 2.4, LINKTYPE_ETHERNET) whose snapshot
/// length covers every record, and each record's captured and original lengths equal to its
/// frame's, followed by its bytes.
enum PcapFuzzer {
    /// One file per process, rewritten by every input.
    static let path: String = {
        var template = Array("/tmp/lvlip-fuzz-pcap.XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        precondition(fd >= 0, "mkstemp failed")
        close(fd)
        return String(cString: template)
    }()

    static func runOne(_ input: UnsafeRawBufferPointer) {
        var r = Reader(input)
        var frames: [[UInt8]] = []
        let link = QueueLink()
        do {
            let writer: PcapWriter
            do {
                writer = try PcapWriter(path: path, wrapping: link)
            } catch {
                fatalError("cannot open \(path): \(error)")
            }
            while !r.atEnd, frames.count < 64 {
                let control = r.u8()
                // Lengths up to 64 KB and past it: what the TAP hands over with TSO.
                let length = Int(r.u16()) + (control & 0x40 != 0 ? 65536 : 0)
                let fill = r.u8()
                var frame = r.bytes(min(length, 64))
                frame += [UInt8](repeating: fill, count: length - frame.count)
                frames.append(frame)
                if control & 1 == 0 {
                    frame.withUnsafeBytes { writer.transmit($0) }
                } else {
                    link.queued.append(frame)
                    var delivered = 0
                    _ = writer.receive(limit: 1) { received in
                        precondition(received.bytes.elementsEqual(frame), "the frame delivered is not the one received")
                        delivered += 1
                    }
                    precondition(delivered == 1, "\(delivered) frames delivered for one received")
                }
                if control & 0x80 != 0 { writer.writeBuffered() }
            }
            writer.writeBuffered()
            precondition(writer.failed == nil, "write failed: \(String(describing: writer.failed))")
        }
        verify(read(path), frames)
    }

    private static func verify(_ file: [UInt8], _ frames: [[UInt8]]) {
        func u32(_ at: Int) -> UInt32 { file[at..<at + 4].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
        func u16(_ at: Int) -> UInt16 { file[at..<at + 2].withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) } }
        precondition(file.count >= 24, "pcap file of \(file.count) bytes")
        precondition(u32(0) == 0xA1B2_C3D4 && u16(4) == 2 && u16(6) == 4 && u32(20) == 1, "bad global header")
        let snapshotLength = u32(16)
        var offset = 24
        for (i, frame) in frames.enumerated() {
            precondition(file.count >= offset + 16, "record \(i) missing")
            let captured = Int(u32(offset + 8))
            let original = Int(u32(offset + 12))
            precondition(captured == frame.count && original == frame.count,
                         "record \(i): lengths \(captured)/\(original) for a \(frame.count)-byte frame")
            precondition(captured <= snapshotLength, "record \(i): \(captured) bytes past the snapshot length \(snapshotLength)")
            offset += 16
            precondition(file.count >= offset + captured && file[offset..<offset + captured].elementsEqual(frame),
                         "record \(i): bytes differ")
            offset += captured
        }
        precondition(offset == file.count, "\(file.count - offset) bytes after the last record")
    }

    private static func read(_ path: String) -> [UInt8] {
        let fd = open(path, O_RDONLY)
        precondition(fd >= 0)
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            precondition(n >= 0)
            if n == 0 { return out }
            out += chunk[..<n]
        }
    }
}

/// A link whose received frames are queued by the harness; what it sends goes nowhere.
final class QueueLink: Link {
    var queued: [[UInt8]] = []

    func receive(limit: Int, _ deliver: (ReceivedFrame) -> Void) -> Int {
        let taken = queued.prefix(limit)
        queued.removeFirst(taken.count)
        for frame in taken { frame.withUnsafeBytes { deliver(ReceivedFrame(bytes: $0)) } }
        return taken.count
    }

    func transmit(_ frame: UnsafeRawBufferPointer) {}
    func flush() {}
}
