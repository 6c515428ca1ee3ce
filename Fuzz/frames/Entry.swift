import FuzzSupport

/// libFuzzer's entry point in a fuzzing build (scripts/fuzz); otherwise a command that replays
/// inputs (files, or every file of a directory), which is how the seed corpus runs as a
/// regression test.
#if FUZZING
import Glibc

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    atexit {
        fputs("fuzz-frames: \(FrameFuzzer.framesDelivered) crafted frames delivered, "
              + "\(FrameFuzzer.ipv6Reassembled) IPv6 packets reassembled\n", stderr)
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FrameFuzzer().run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
#else
@main
enum Replay {
    static func main() {
        FuzzReplay.run(name: "fuzz-frames") { FrameFuzzer().run($0) }
        print("fuzz-frames: \(FrameFuzzer.framesDelivered) crafted frames delivered, "
              + "\(FrameFuzzer.ipv6Reassembled) IPv6 packets reassembled")
    }
}
#endif
