/// TCP control bits (RFC 9293 section 3.1, RFC 3168 for ECE/CWR).
public struct TCPFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let fin = TCPFlags(rawValue: 0x01)
    public static let syn = TCPFlags(rawValue: 0x02)
    public static let rst = TCPFlags(rawValue: 0x04)
    public static let psh = TCPFlags(rawValue: 0x08)
    public static let ack = TCPFlags(rawValue: 0x10)
    public static let urg = TCPFlags(rawValue: 0x20)
    public static let ece = TCPFlags(rawValue: 0x40)
    public static let cwr = TCPFlags(rawValue: 0x80)

    public var description: String {
        let names: [(TCPFlags, String)] = [(.syn, "S"), (.fin, "F"), (.rst, "R"), (.psh, "P"), (.ack, "."), (.urg, "U"), (.ece, "E"), (.cwr, "W")]
        let s = names.filter { contains($0.0) }.map(\.1).joined()
        return s.isEmpty ? "none" : s
    }
}

/// Up to four SACK blocks, stored inline (no allocation per segment).
public struct SACKBlocks: Sendable, Equatable {
    public private(set) var count = 0
    private var storage: (SeqNum, SeqNum, SeqNum, SeqNum, SeqNum, SeqNum, SeqNum, SeqNum) =
        (SeqNum(0), SeqNum(0), SeqNum(0), SeqNum(0), SeqNum(0), SeqNum(0), SeqNum(0), SeqNum(0))

    public init() {}

    public static let capacity = 4

    public mutating func append(start: SeqNum, end: SeqNum) {
        guard count < Self.capacity else { return }
        withUnsafeMutableBytes(of: &storage) { raw in
            let p = raw.bindMemory(to: SeqNum.self)
            p[count * 2] = start
            p[count * 2 + 1] = end
        }
        count += 1
    }

    public subscript(i: Int) -> (start: SeqNum, end: SeqNum) {
        precondition(i < count)
        return withUnsafeBytes(of: storage) { raw in
            let p = raw.bindMemory(to: SeqNum.self)
            return (p[i * 2], p[i * 2 + 1])
        }
    }

    public var isEmpty: Bool { count == 0 }

    public static func == (a: SACKBlocks, b: SACKBlocks) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where a[i].start != b[i].start || a[i].end != b[i].end { return false }
        return true
    }
}

/// The TCP options lvlip understands (RFC 9293 3.2, RFC 7323, RFC 2018).
public struct TCPOptions: Sendable, Equatable {
    public var mss: UInt16?
    public var windowScale: UInt8?
    public var sackPermitted = false
    public var timestamp: (value: UInt32, echo: UInt32)?
    public var sack = SACKBlocks()

    public init() {}

    public static func == (a: TCPOptions, b: TCPOptions) -> Bool {
        a.mss == b.mss && a.windowScale == b.windowScale && a.sackPermitted == b.sackPermitted
            && a.timestamp?.value == b.timestamp?.value && a.timestamp?.echo == b.timestamp?.echo && a.sack == b.sack
    }

    enum Kind {
        static let end: UInt8 = 0
        static let noop: UInt8 = 1
        static let mss: UInt8 = 2
        static let windowScale: UInt8 = 3
        static let sackPermitted: UInt8 = 4
        static let sack: UInt8 = 5
        static let timestamp: UInt8 = 8
    }

    /// Parses the options area. RFC 9293 3.1 asks that malformed options not break the
    /// connection: an option with a bad length ends parsing, keeping what came before; an
    /// option of a known kind with the wrong length is ignored; unknown kinds are skipped.
    public init(parsing bytes: UnsafeRawBufferPointer) {
        var i = 0
        while i < bytes.count {
            let kind = bytes[i]
            if kind == Kind.end { break }
            if kind == Kind.noop {
                i += 1
                continue
            }
            guard i + 1 < bytes.count else { break }
            let length = Int(bytes[i + 1])
            guard length >= 2, i + length <= bytes.count else { break }
            switch (kind, length) {
            case (Kind.mss, 4):
                mss = bytes.be16(i + 2)
            case (Kind.windowScale, 3):
                windowScale = bytes[i + 2]
            case (Kind.sackPermitted, 2):
                sackPermitted = true
            case (Kind.timestamp, 10):
                timestamp = (bytes.be32(i + 2), bytes.be32(i + 6))
            case (Kind.sack, _) where (length - 2) % 8 == 0 && length > 2:
                var j = i + 2
                while j + 8 <= i + length {
                    sack.append(start: SeqNum(bytes.be32(j)), end: SeqNum(bytes.be32(j + 4)))
                    j += 8
                }
            default:
                break
            }
            i += length
        }
    }

    /// Bytes `write` produces: each option padded with NOPs to a 4-byte boundary.
    public var encodedLength: Int {
        var n = 0
        if mss != nil { n += 4 }
        if windowScale != nil { n += 4 }
        // SACK-permitted shares the timestamp's word when both are present.
        if timestamp != nil { n += 12 } else if sackPermitted { n += 4 }
        if sack.count > 0 { n += 4 + 8 * sack.count }
        return n
    }

    /// Writes the options in the layout Linux uses (NOP padding, SACK-permitted sharing
    /// a word with the timestamp); returns the length, a multiple of 4.
    @discardableResult
    public func write(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var i = 0
        if let mss {
            buffer[i] = Kind.mss; buffer[i + 1] = 4
            buffer.setBE16(mss, i + 2)
            i += 4
        }
        if let ts = timestamp {
            if sackPermitted {
                buffer[i] = Kind.sackPermitted; buffer[i + 1] = 2
            } else {
                buffer[i] = Kind.noop; buffer[i + 1] = Kind.noop
            }
            buffer[i + 2] = Kind.timestamp; buffer[i + 3] = 10
            buffer.setBE32(ts.value, i + 4)
            buffer.setBE32(ts.echo, i + 8)
            i += 12
        } else if sackPermitted {
            buffer[i] = Kind.noop; buffer[i + 1] = Kind.noop
            buffer[i + 2] = Kind.sackPermitted; buffer[i + 3] = 2
            i += 4
        }
        if let ws = windowScale {
            buffer[i] = Kind.noop
            buffer[i + 1] = Kind.windowScale; buffer[i + 2] = 3; buffer[i + 3] = ws
            i += 4
        }
        if sack.count > 0 {
            buffer[i] = Kind.noop; buffer[i + 1] = Kind.noop
            buffer[i + 2] = Kind.sack; buffer[i + 3] = UInt8(2 + 8 * sack.count)
            i += 4
            for b in 0..<sack.count {
                buffer.setBE32(sack[b].start.rawValue, i)
                buffer.setBE32(sack[b].end.rawValue, i + 4)
                i += 8
            }
        }
        return i
    }
}

/// A validated view of a TCP segment (RFC 9293 section 3.1): length, data offset and the
/// checksum over the pseudo-header are checked once, in the initializer.
public struct TCPSegment {
    public enum Field {
        static let sourcePort = 0
        static let destinationPort = 2
        static let seq = 4
        static let ack = 8
        static let dataOffset = 12
        static let flags = 13
        static let window = 14
        static let checksum = 16
        static let urgent = 18
    }

    public static let minimumHeaderLength = 20
    /// A data offset of 15 words: the longest header, options included.
    public static let maximumHeaderLength = 60

    public enum ParseError: Error {
        case truncated
        case badDataOffset
        case badChecksum
    }

    public let bytes: UnsafeRawBufferPointer
    public let headerLength: Int

    /// `checksumVerified`: the link already vouched for the checksum (a TAP with checksum
    /// offload hands over locally built segments whose checksum is not yet filled in).
    public init(_ bytes: UnsafeRawBufferPointer, source: IPAddress, destination: IPAddress,
                checksumVerified: Bool = false) throws(ParseError) {
        guard bytes.count >= Self.minimumHeaderLength else { throw .truncated }
        let offset = Int(bytes[Field.dataOffset] >> 4) * 4
        guard offset >= Self.minimumHeaderLength, offset <= bytes.count else { throw .badDataOffset }
        if !checksumVerified {
            let pseudo = IPAddress.pseudoHeaderSum(source: source, destination: destination, proto: .tcp,
                                                   length: bytes.count)
            let sum = InternetChecksum.partialSum(bytes, pseudo)
            guard InternetChecksum.finish(sum) == 0 else { throw .badChecksum }
        }
        self.bytes = bytes
        headerLength = offset
    }

    public var sourcePort: UInt16 { bytes.be16(Field.sourcePort) }
    public var destinationPort: UInt16 { bytes.be16(Field.destinationPort) }
    public var seq: SeqNum { SeqNum(bytes.be32(Field.seq)) }
    public var ack: SeqNum { SeqNum(bytes.be32(Field.ack)) }
    public var flags: TCPFlags { TCPFlags(rawValue: bytes[Field.flags]) }
    public var window: UInt16 { bytes.be16(Field.window) }
    public var urgentPointer: UInt16 { bytes.be16(Field.urgent) }
    public var options: TCPOptions { TCPOptions(parsing: bytes.slice(Self.minimumHeaderLength..<headerLength)) }
    public var payload: UnsafeRawBufferPointer { bytes.suffix(from: headerLength) }
    /// Sequence space the segment occupies: its data plus one each for SYN and FIN.
    public var sequenceLength: Int {
        payload.count + (flags.contains(.syn) ? 1 : 0) + (flags.contains(.fin) ? 1 : 0)
    }

    /// Writes a header with options (checksum left zero); returns the header length.
    @discardableResult
    public static func writeHeader(
        into buffer: UnsafeMutableRawBufferPointer, sourcePort: UInt16, destinationPort: UInt16,
        seq: SeqNum, ack: SeqNum, flags: TCPFlags, window: UInt16, options: TCPOptions?
    ) -> Int {
        let optionLength = options?.write(into: buffer.suffix(from: minimumHeaderLength)) ?? 0
        let length = minimumHeaderLength + optionLength
        buffer.setBE16(sourcePort, Field.sourcePort)
        buffer.setBE16(destinationPort, Field.destinationPort)
        buffer.setBE32(seq.rawValue, Field.seq)
        buffer.setBE32(ack.rawValue, Field.ack)
        buffer[Field.dataOffset] = UInt8(length / 4) << 4
        buffer[Field.flags] = flags.rawValue
        buffer.setBE16(window, Field.window)
        buffer.setBE16(0, Field.checksum)
        buffer.setBE16(0, Field.urgent)
        return length
    }

    /// Stores in the checksum field what a link with checksum offload expects there
    /// (`FrameOffload`): the folded sum of the pseudo-header, not complemented.
    public static func writePseudoHeaderSum(_ segment: UnsafeMutableRawBufferPointer, source: IPAddress,
                                            destination: IPAddress) {
        let pseudo = IPAddress.pseudoHeaderSum(source: source, destination: destination, proto: .tcp,
                                               length: segment.count)
        segment.setBE16(~InternetChecksum.finish(pseudo), Field.checksum)
    }

    /// Fills in the checksum of a complete segment in `buffer`.
    public static func finishChecksum(_ segment: UnsafeMutableRawBufferPointer, source: IPAddress, destination: IPAddress) {
        let pseudo = IPAddress.pseudoHeaderSum(source: source, destination: destination, proto: .tcp,
                                               length: segment.count)
        let sum = InternetChecksum.partialSum(UnsafeRawBufferPointer(segment), pseudo)
        segment.setBE16(InternetChecksum.finish(sum), Field.checksum)
    }
}
