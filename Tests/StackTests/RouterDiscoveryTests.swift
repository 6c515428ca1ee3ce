import Stack
import Timing
import XCTest

/// Router discovery for a host (RFC 4861 6.3) and the default router given by the operator.
final class RouterDiscoveryTests: XCTestCase {
    private let offLink = IPv6Address("fd02::7")!

    func testAdvertisementGivesADefaultRouterPrefixAndMTU() {
        let h = Harness.ipv6()
        h.receive(Frames6.routerAdvertisement(options: Frames6.linkLayerOption(1, Frames6.routerMAC)
                                                + Frames6.prefixOption(IPv6Address("fd01::")!) + Frames6.mtuOption(1400)))
        XCTAssertEqual(h.stack.defaultRouter6Table.map(\.router), [Frames6.routerLinkLocal])
        XCTAssertEqual(h.stack.defaultRouter6Table.first?.secondsLeft, 1800)
        XCTAssertEqual(h.stack.onLinkPrefix6Table.map(\.prefix.description), ["fd01::/64"])
        XCTAssertEqual(h.stack.pathMTU(toward: offLink), 1400)
        XCTAssertEqual(h.stack.neighbor6Table.first { $0.address == Frames6.routerLinkLocal }?.router, true)
        // Off-link: through the router, whose link address the advertisement gave.
        h.receive(Frames6.echoRequest(from: offLink))
        var out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.map(\.icmpType), [129])
        XCTAssertEqual(out.first?.destinationMAC, Frames6.routerMAC)
        XCTAssertEqual(out.first?.destination, offLink)
        // On-link by the advertised prefix: resolved directly.
        h.receive(Frames6.echoRequest(from: IPv6Address("fd01::9")!))
        out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.map(\.icmpType), [135])
        XCTAssertEqual(out.first?.target, IPv6Address("fd01::9")!)
        XCTAssertEqual(h.stack.counters.ip6OutNoRoutes, 0)
    }

    func testWithoutARouterOffLinkHasNoRoute() {
        let h = Harness.ipv6()
        h.receive(Frames6.echoRequest(from: offLink))
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.ip6OutNoRoutes, 1)
    }

    /// RFC 4861 6.1.2: only from a link-local source, with hop limit 255 and code 0.
    func testInvalidAdvertisementsAreIgnored() {
        let h = Harness.ipv6()
        h.receive(Frames6.routerAdvertisement(from: IPv6Address("fd00::1")!))
        h.receive(Frames6.routerAdvertisement(hopLimit: 64))
        h.receive(Frames6.routerAdvertisement(code: 1))
        h.receive(Frames6.routerAdvertisement(options: [1, 0, 0, 0, 0, 0, 0, 0]))
        XCTAssertEqual(h.stack.counters.ndp6RouterAdvertisementsInvalid, 4)
        XCTAssertTrue(h.stack.defaultRouter6Table.isEmpty)
        h.receive(Frames6.echoRequest(from: offLink))
        XCTAssertEqual(h.stack.counters.ip6OutNoRoutes, 1)
    }

    func testLifetimeZeroRemovesTheRouterAndExpiryToo() {
        let h = Harness.ipv6()
        h.receive(Frames6.routerAdvertisement())
        XCTAssertEqual(h.stack.defaultRouter6Table.count, 1)
        h.receive(Frames6.routerAdvertisement(lifetime: 0))
        XCTAssertTrue(h.stack.defaultRouter6Table.isEmpty)
        h.receive(Frames6.routerAdvertisement(lifetime: 10))
        h.advance(milliseconds: 10_000)
        XCTAssertTrue(h.stack.defaultRouter6Table.isEmpty)
        _ = h.output()
        h.receive(Frames6.echoRequest(from: offLink))
        XCTAssertEqual(h.stack.counters.ip6OutNoRoutes, 1)
    }

    /// RFC 4861 7.2.5: an advertisement with the Router flag clear from a router removes it.
    func testNeighborAdvertisementWithoutTheRouterFlagRemovesTheRouter() {
        let h = Harness.ipv6()
        h.receive(Frames6.routerAdvertisement())
        h.receive(Frames6.neighborAdvertisement(target: Frames6.routerLinkLocal, router: true, solicited: false,
                                                targetLinkLayer: Frames6.routerMAC))
        XCTAssertEqual(h.stack.defaultRouter6Table.count, 1)
        h.receive(Frames6.neighborAdvertisement(target: Frames6.routerLinkLocal, router: false, solicited: false,
                                                targetLinkLayer: Frames6.routerMAC))
        XCTAssertTrue(h.stack.defaultRouter6Table.isEmpty)
    }

    func testTheListIsBounded() {
        let h = Harness.ipv6 { $0.maxDefaultRouters = 2 }
        for i in 1...4 { h.receive(Frames6.routerAdvertisement(from: IPv6Address("fe80::\(i)")!)) }
        XCTAssertEqual(h.stack.defaultRouter6Table.map(\.router.description), ["fe80::1", "fe80::2"])
    }

    /// RFC 4861 6.3.4: the MTU option only between 1280 and the link MTU; the link-local
    /// prefix and prefixes without the on-link flag add nothing.
    func testOutOfRangeMTUAndNonOnLinkPrefixesAreIgnored() {
        let h = Harness.ipv6()
        h.receive(Frames6.routerAdvertisement(options: Frames6.mtuOption(1000) + Frames6.prefixOption(IPv6Address("fe80::")!)
                                                + Frames6.prefixOption(IPv6Address("fd03::")!, onLink: false)))
        h.receive(Frames6.routerAdvertisement(options: Frames6.mtuOption(9000)))
        XCTAssertEqual(h.stack.pathMTU(toward: offLink), 1500)
        XCTAssertTrue(h.stack.onLinkPrefix6Table.isEmpty)
        XCTAssertEqual(h.stack.defaultRouter6Table.count, 1)
    }

    /// A router given by the operator: used for off-link destinations (resolved by NDP, the
    /// packet waiting meanwhile); advertisements are not acted on.
    func testGatewayIsUsedAndAdvertisementsIgnored() {
        let h = Harness.ipv6 { $0.gateway = Frames6.routerLinkLocal }
        XCTAssertEqual(h.stack.defaultRouter6Table.map(\.router), [Frames6.routerLinkLocal])
        XCTAssertNil(h.stack.defaultRouter6Table.first?.secondsLeft)
        h.receive(Frames6.routerAdvertisement(from: IPv6Address("fe80::2")!))
        XCTAssertEqual(h.stack.counters.ndp6RouterAdvertisementsIgnored, 1)
        XCTAssertEqual(h.stack.defaultRouter6Table.count, 1)
        h.receive(Frames6.echoRequest(from: offLink, data: Array(repeating: 3, count: 2000)))
        var out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.map(\.icmpType), [135])
        XCTAssertEqual(out.first?.target, Frames6.routerLinkLocal)
        h.receive(Frames6.neighborAdvertisement(target: Frames6.routerLinkLocal, router: true, targetLinkLayer: Frames6.routerMAC))
        out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.count, 2, "the 2008-byte reply, in fragments")
        XCTAssertTrue(out.allSatisfy { $0.destinationMAC == Frames6.routerMAC && $0.destination == self.offLink })
    }

    /// RFC 4861 6.3.7: three solicitations 4 s apart once the link-local address passed DAD,
    /// to all routers with our link-layer address; an advertisement stops them.
    func testSolicitationsAfterDADUntilAnAdvertisement() {
        let h = Harness.ipv6(dad: 1)
        h.stack.start(now: h.now)
        _ = h.output()
        h.advance(milliseconds: 1000)
        var rs = h.output().map(Parsed6.init).filter { $0.icmpType == 133 }
        XCTAssertEqual(rs.count, 1)
        XCTAssertEqual(rs.first?.source, Frames6.stackLinkLocal)
        XCTAssertEqual(rs.first?.destination.description, "ff02::2")
        XCTAssertEqual(rs.first?.hopLimit, 255)
        XCTAssertEqual(rs.first.map { Array($0.payload[8...]) }, [1, 1] + Frames.mac(Frames.stackMAC))
        XCTAssertTrue(rs.first?.checksumValid ?? false)
        h.advance(milliseconds: 4000)
        rs = h.output().map(Parsed6.init).filter { $0.icmpType == 133 }
        XCTAssertEqual(rs.count, 1)
        h.receive(Frames6.routerAdvertisement())
        h.advance(milliseconds: 20_000)
        XCTAssertFalse(h.output().map(Parsed6.init).contains { $0.icmpType == 133 })
        XCTAssertEqual(h.stack.counters.icmp6OutRouterSolicits, 2)
    }

    func testNoMoreThanThreeSolicitations() {
        let h = Harness.ipv6()
        h.stack.start(now: h.now)
        h.advance(milliseconds: 60_000)
        XCTAssertEqual(h.stack.counters.icmp6OutRouterSolicits, 3)
    }
}
