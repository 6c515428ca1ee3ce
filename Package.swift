// swift-tools-version:6.0
import PackageDescription

/// Release builds of lvlip's own modules run without dynamic exclusivity checks (lvlipd is
/// single-threaded by design; the checks cost about a fifth of the stack's instructions,
/// callgrind, scripts/bench/tcp-memory; 18% of lvlipd's instructions per round trip) and
/// cross-module optimization, so that generic code such as the timing wheel is specialized
/// across module boundaries instead of going through runtime metadata (21% fewer
/// instructions per received segment, callgrind over a 20 MB download; docs/benchmarks.md).
let hotPath: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"], .when(configuration: .release)),
]

let package = Package(
    name: "lvlip",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "lvlipd", targets: ["lvlipd"]),
        .executable(name: "lvlipctl", targets: ["lvlipctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // Linux interfaces Swift's Glibc module does not expose (epoll, timerfd, signalfd,
        // TUNSETIFF, SO_PEERCRED) and the IPC wire format shared with the C shim.
        .target(name: "CLinux", cSettings: [.define("_GNU_SOURCE")]),
        // Pure: time values and the timing wheel. No syscalls.
        .target(name: "Timing", swiftSettings: hotPath),
        // epoll + timerfd + signalfd event loop. Knows nothing of networking.
        .target(name: "Reactor", dependencies: ["CLinux", "Timing"], swiftSettings: hotPath),
        // Pure protocol library: Ethernet, ARP, IPv4, ICMP, UDP, TCP, the loopback; the Link
        // abstraction and the StackDriver that every owner polls. No syscalls, no clock reads.
        .target(name: "Stack", dependencies: ["Timing"], swiftSettings: hotPath),
        // The IPC protocol's messages over the C structs of lvlip_ipc.h, and a blocking
        // client: what lvlipctl and the tests need, without the server.
        .target(name: "IPCProtocol", dependencies: ["CLinux"]),
        // The daemon's AF_UNIX control/IPC endpoint, on the reactor.
        .target(name: "IPCServer", dependencies: [
            "CLinux", "IPCProtocol", "Reactor", "Stack",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: hotPath),
        // Links that wrap any link: the pcap writer and the fault injector.
        .target(name: "Links", dependencies: ["CLinux", "Reactor", "Stack"], swiftSettings: hotPath),
        .executableTarget(name: "lvlipd", dependencies: [
            "CLinux", "Reactor", "Stack", "IPCServer", "Links", "Timing",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: hotPath),
        .executableTarget(name: "lvlipctl", dependencies: [
            "CLinux", "IPCProtocol",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // In-memory two-stack TCP throughput (scripts/bench/tcp-memory).
        .executableTarget(name: "lvlip-membench", dependencies: ["Stack", "Timing"]),
        // Fuzz targets (scripts/fuzz): libFuzzer entry points in a fuzzing build, replayers of
        // saved inputs (the seed corpus in Fuzz/corpus) otherwise.
        .target(name: "FuzzSupport", path: "Fuzz/support"),
        .executableTarget(name: "fuzz-frames", dependencies: ["Stack", "Timing", "FuzzSupport"], path: "Fuzz/frames"),
        .executableTarget(name: "fuzz-ipc", dependencies: [
            "CLinux", "IPCProtocol", "IPCServer", "Reactor", "Stack", "Timing", "FuzzSupport",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Fuzz/ipc"),
        .executableTarget(name: "fuzz-pcap", dependencies: ["Links", "Stack", "FuzzSupport"], path: "Fuzz/pcap"),
        .testTarget(name: "TimingTests", dependencies: ["Timing", "Stack"]),
        .testTarget(name: "ReactorTests", dependencies: ["Reactor", "CLinux", "Timing"]),
        .testTarget(name: "StackTests", dependencies: ["Stack", "Timing"]),
        // The IPC server on a real reactor and socket, pumped on the test's thread.
        .testTarget(name: "IPCServerTests", dependencies: [
            "CLinux", "IPCProtocol", "IPCServer", "Reactor",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The socket service driven through its requests, over real socketpairs and a real
        // reactor, against two stacks on an in-memory link.
        .testTarget(name: "SocketServiceTests", dependencies: [
            "IPCServer", "CLinux", "Reactor", "Stack", "Timing",
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v5]
)
