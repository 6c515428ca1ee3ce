// Big-endian field access on raw buffers. Callers check lengths once (in a view's failable
// initializer) so these accessors do not check again.

extension UnsafeRawBufferPointer {
    @inline(__always) public func u8(_ offset: Int) -> UInt8 { self[offset] }

    @inline(__always) public func be16(_ offset: Int) -> UInt16 {
        UInt16(bigEndian: baseAddress!.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always) public func be32(_ offset: Int) -> UInt32 {
        UInt32(bigEndian: baseAddress!.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// The bytes from `offset` to the end (empty if `offset` is past it).
    @inline(__always) public func suffix(from offset: Int) -> UnsafeRawBufferPointer {
        offset >= count ? UnsafeRawBufferPointer(rebasing: self[count..<count]) : UnsafeRawBufferPointer(rebasing: self[offset...])
    }

    @inline(__always) public func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self[range])
    }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always) public func setU8(_ value: UInt8, _ offset: Int) { self[offset] = value }

    @inline(__always) public func setBE16(_ value: UInt16, _ offset: Int) {
        baseAddress!.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inline(__always) public func setBE32(_ value: UInt32, _ offset: Int) {
        baseAddress!.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    @inline(__always) public func slice(_ range: Range<Int>) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: self[range])
    }

    @inline(__always) public func suffix(from offset: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: self[offset...])
    }

    /// Copies `source` to `offset`; the caller guarantees it fits.
    @inline(__always) public func copy(_ source: UnsafeRawBufferPointer, to offset: Int) {
        guard source.count > 0 else { return }
        (baseAddress! + offset).copyMemory(from: source.baseAddress!, byteCount: source.count)
    }
}
