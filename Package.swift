// swift-tools-version:6.0
import PackageDescription

/// The per-packet code runs without dynamic exclusivity checks: the stack is single-threaded
/// by design and they cost about a fifth of its instructions (callgrind, scripts/bench/tcp-memory).
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

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
        .target(name: "Reactor", dependencies: ["CLinux", "Timing"]),
        // Pure protocol library: Ethernet, ARP, IPv4, ICMP. No syscalls, no clock reads.
        .target(name: "Stack", dependencies: ["Timing"], swiftSettings: hotPath),
        // The daemon's AF_UNIX control/IPC endpoint, on the reactor.
        .target(name: "IPCServer", dependencies: [
            "CLinux", "Reactor", "Stack",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "lvlipd", dependencies: [
            "CLinux", "Reactor", "Stack", "IPCServer", "Timing",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "lvlipctl", dependencies: [
            "CLinux", "IPCServer",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // In-memory two-stack TCP throughput (scripts/bench/tcp-memory).
        .executableTarget(name: "lvlip-membench", dependencies: ["Stack", "Timing"]),
        .testTarget(name: "TimingTests", dependencies: ["Timing", "Stack"]),
        .testTarget(name: "ReactorTests", dependencies: ["Reactor", "CLinux", "Timing"]),
        .testTarget(name: "StackTests", dependencies: ["Stack", "Timing"]),
    ],
    swiftLanguageModes: [.v5]
)
