import FuzzSupport

/// libFuzzer's entry point in a fuzzing build (scripts/fuzz); otherwise a command that replays
/// inputs (files, or every file of a directory), which is how the seed corpus runs as a
/// regression test.
#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    PcapFuzzer.runOne(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
#else
@main
enum Replay {
    static func main() {
        FuzzReplay.run(name: "fuzz-pcap") { PcapFuzzer.runOne($0) }
    }
}
#endif
