#include "agent/port_mapper.h"

#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/conntrack.h"
#include "agent/exec.h"
#include "agent/iptables_mapper.h"
#include "agent/nft_mapper.h"
#include "agent/nft_netlink.h"
#include "tests/agent/loopback.h"
#include "tests/support/eventually.h"

namespace tern {
namespace {

using ::testing::HasSubstr;
using Backend = PortRoute::Backend;

PortRoute route(std::string service, std::string protocol, uint16_t public_port, std::vector<Backend> backends) {
  return PortRoute{std::move(service), std::move(protocol), public_port, std::move(backends)};
}

// ---------------------------------------------------------------------------
// validate()

TEST(ValidateTest, AcceptsGoodMappings) {
  DesiredMapping m{{route("web", "tcp", 8080, {{9001, 70}, {9002, 30}}), route("web", "udp", 8080, {{9001, 100}}),
                    route("0-api", "tcp", 80, {{9003, 0}, {9004, 100}}), route("idle", "tcp", 81, {})}};
  EXPECT_TRUE(validate(m).ok()) << validate(m);
  EXPECT_TRUE(validate(DesiredMapping{}).ok());
}

struct BadMapping {
  std::string name;
  DesiredMapping mapping;
  std::string reason;  // a part of the message
};

TEST(ValidateTest, RefusesBadMappingsNamingRouteAndReason) {
  std::vector<BadMapping> cases = {
      {"service name", {{route("Web", "tcp", 8080, {{9001, 100}})}}, "service name"},
      {"empty service", {{route("", "tcp", 8080, {{9001, 100}})}}, "service name"},
      {"leading dash", {{route("-web", "tcp", 8080, {{9001, 100}})}}, "service name"},
      {"long service", {{route(std::string(33, 'a'), "tcp", 8080, {{9001, 100}})}}, "service name"},
      {"protocol", {{route("web", "sctp", 8080, {{9001, 100}})}}, "protocol"},
      {"public port 0", {{route("web", "tcp", 0, {{9001, 100}})}}, "public port"},
      {"duplicate public port",
       {{route("web", "tcp", 8080, {{9001, 100}}), route("api", "tcp", 8080, {{9002, 100}})}},
       "already mapped by service \"web\""},
      {"three backends", {{route("web", "tcp", 8080, {{9001, 50}, {9002, 25}, {9003, 25}})}}, "at most 2"},
      {"weights sum", {{route("web", "tcp", 8080, {{9001, 50}, {9002, 40}})}}, "sum to 90"},
      {"weight overflow", {{route("web", "tcp", 8080, {{9001, 4294967295u}, {9002, 101}})}}, "weights are 0-100"},
      {"backend port 0", {{route("web", "tcp", 8080, {{0, 100}})}}, "backend port"},
      {"backend is public", {{route("web", "tcp", 8080, {{8080, 100}})}}, "is the public port"},
      {"backend twice", {{route("web", "tcp", 8080, {{9001, 50}, {9001, 50}})}}, "listed twice"},
  };
  for (const auto& c : cases) {
    auto st = validate(c.mapping);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.reason)) << c.name;
    const PortRoute& bad = c.mapping.routes.back();
    EXPECT_THAT(std::string(st.message()),
                HasSubstr(absl::StrCat("\"", bad.service, "\" ", bad.protocol, "/", bad.public_port)))
        << c.name;
  }
}

// ---------------------------------------------------------------------------
// Construction

TEST(MakePortMapperTest, RefusesUnknownBackend) {
  PortMapperOptions options;
  options.backend = "pf";
  auto m = make_port_mapper(options);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("\"pf\""));
}

TEST(MakePortMapperTest, ReportsMissingBinaries) {
  PortMapperOptions nft;
  nft.nft_bin = "/nonexistent/nft";
  auto m = make_port_mapper(nft);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("/nonexistent/nft"));

  PortMapperOptions ipt;
  ipt.backend = "iptables";
  ipt.iptables_restore_bin = "no-such-iptables-restore";
  m = make_port_mapper(ipt);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("no-such-iptables-restore"));
}

TEST(MakePortMapperTest, RefusesBadTableName) {
  for (const char* backend : {"nftables", "iptables"}) {
    PortMapperOptions options;
    options.backend = backend;
    options.table = "tern;flush ruleset";
    auto m = make_port_mapper(options);
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << backend;
  }
}

// ---------------------------------------------------------------------------
// Pure parts of the backends

TEST(WeightSlotsTest, BackendsTakeConsecutiveKeysByWeight) {
  auto slots = weight_slots(route("web", "tcp", 80, {{9001, 30}, {9002, 70}}));
  for (size_t i = 0; i < 30; ++i) EXPECT_EQ(slots[i], 9001) << i;
  for (size_t i = 30; i < 100; ++i) EXPECT_EQ(slots[i], 9002) << i;

  for (uint16_t p : weight_slots(route("web", "tcp", 80, {{9001, 100}, {9002, 0}}))) EXPECT_EQ(p, 9001);
  for (uint16_t p : weight_slots(route("web", "tcp", 80, {{9001, 0}, {9002, 100}}))) EXPECT_EQ(p, 9002);
  for (uint16_t p : weight_slots(route("web", "tcp", 80, {{9003, 100}}))) EXPECT_EQ(p, 9003);
}

TEST(NftRulesetTest, OneMapAndRulePerMappedRoute) {
  DesiredMapping m{{route("web", "tcp", 8080, {{9001, 50}, {9002, 50}}), route("dns", "udp", 53, {{9053, 100}}),
                    route("idle", "tcp", 81, {})}};
  std::string s = nft_ruleset("tern", m);
  EXPECT_THAT(s, HasSubstr("table inet tern {}\ndelete table inet tern\ntable inet tern {\n"));
  EXPECT_THAT(s, HasSubstr("map tcp_8080_web {\n    typeof numgen random mod 100 : tcp dport\n"));
  EXPECT_THAT(s, HasSubstr("map udp_53_dns {\n    typeof numgen random mod 100 : udp dport\n"));
  EXPECT_THAT(s, HasSubstr("{ 0 : 9001, 1 : 9001,"));
  EXPECT_THAT(s, HasSubstr("49 : 9001, 50 : 9002,"));
  EXPECT_THAT(s, HasSubstr("tcp dport 8080 fib daddr type local redirect to :numgen random mod 100 map @tcp_8080_web"));
  EXPECT_THAT(s, HasSubstr("udp dport 53 fib daddr type local redirect to :numgen random mod 100 map @udp_53_dns"));
  EXPECT_THAT(s, ::testing::Not(HasSubstr("idle")));
  EXPECT_EQ(nft_map_name(route("2fa", "tcp", 443, {})), "tcp_443_2fa");
  // A counter per backend, bumped after the nat chains by the redirected
  // connection's new destination.
  EXPECT_THAT(s, HasSubstr("counter c_tcp_8080_web_9001 {}\n"));
  EXPECT_THAT(s, HasSubstr("counter c_udp_53_dns_9053 {}\n"));
  EXPECT_THAT(s, HasSubstr("type filter hook input priority filter;"));
  EXPECT_THAT(s, HasSubstr("meta l4proto tcp ct state new ct original proto-dst 8080 tcp dport 9002 counter name "
                           "\"c_tcp_8080_web_9002\""));
}

TEST(NftRulesetTest, ClientSplitHashesTheSourceAddressOfEitherFamilyIntoTheSameMap) {
  PortRoute web = route("web", "tcp", 8080, {{9002, 30}, {9001, 70}});
  web.split = TrafficSplit::kClient;
  DesiredMapping m{{web, route("dns", "udp", 53, {{9053, 50}, {9054, 50}})}};
  std::string s = nft_ruleset("tern", m);
  // One map, laid out as for a random split: the buckets are the same.
  EXPECT_THAT(s, HasSubstr("map tcp_8080_web {\n    typeof numgen random mod 100 : tcp dport\n"));
  EXPECT_THAT(s, HasSubstr("{ 0 : 9002, 1 : 9002,"));
  EXPECT_THAT(s, HasSubstr("29 : 9002, 30 : 9001,"));
  const std::string v4 = "meta nfproto ipv4 tcp dport 8080 fib daddr type local redirect to :jhash ip saddr mod 100 "
                         "seed 0x7465726e map @tcp_8080_web\n";
  const std::string v6 = "meta nfproto ipv6 tcp dport 8080 fib daddr type local redirect to :jhash ip6 saddr mod 100 "
                         "seed 0x7465726e map @tcp_8080_web\n";
  // In both nat chains: remote clients (prerouting) and local ones (output).
  const size_t output = s.find("chain output {");
  ASSERT_NE(output, std::string::npos);
  for (const auto& rule : {v4, v6}) {
    EXPECT_LT(s.find(rule), output) << rule;
    EXPECT_NE(s.find(rule, output), std::string::npos) << rule;
  }
  EXPECT_THAT(s, ::testing::Not(HasSubstr("redirect to :numgen random mod 100 map @tcp_8080_web")));
  EXPECT_THAT(s, HasSubstr("udp dport 53 fib daddr type local redirect to :numgen random mod 100 map @udp_53_dns"))
      << "the split is per route";
  EXPECT_EQ(std::string(kNftClientHashSeed), "0x7465726e") << "changing the seed moves every client of every host";
}

// The promise of a client split: weight_slots() gives the first backend (the
// canary, listed first) the lowest buckets, so a bucket it holds at one
// weight it holds at every higher one.
TEST(WeightSlotsTest, AGrowingFirstBackendOnlyGainsBuckets) {
  for (uint32_t w = 0; w <= 100; ++w) {
    auto now = weight_slots(route("web", "tcp", 80, {{9002, w}, {9001, 100 - w}}));
    EXPECT_EQ(static_cast<uint32_t>(std::count(now.begin(), now.end(), 9002)), w);
    for (uint32_t more = w; more <= 100; ++more) {
      auto later = weight_slots(route("web", "tcp", 80, {{9002, more}, {9001, 100 - more}}));
      for (size_t b = 0; b < now.size(); ++b) {
        if (now[b] == 9002) {
          ASSERT_EQ(later[b], 9002) << "bucket " << b << " at " << w << " then " << more;
        }
      }
    }
  }
}

TEST(IptablesRulesTest, ChainNamesFitAndAreStable) {
  EXPECT_EQ(iptables_chain_prefix("tern"), "TERN");
  EXPECT_EQ(iptables_route_chain("TERN", route("web", "tcp", 8080, {})), "TERN-web-tcp-8080");
  PortRoute long_route = route("a-rather-long-service-name-xyz", "udp", 65535, {});
  std::string chain = iptables_route_chain("TERN", long_route);
  EXPECT_LE(chain.size(), 28u);
  EXPECT_TRUE(absl::StartsWith(chain, "TERN-a-rather")) << chain;
  EXPECT_EQ(chain, iptables_route_chain("TERN", long_route));
  long_route.protocol = "tcp";
  EXPECT_NE(chain, iptables_route_chain("TERN", long_route));
  EXPECT_LE(iptables_route_chain("ABCDEFGHIJKLMNOP", long_route).size(), 28u);
}

TEST(IptablesRulesTest, ExpectedRulesInCanonicalForm) {
  DesiredMapping m{{route("web", "tcp", 8080, {{9001, 70}, {9002, 30}}), route("dns", "udp", 53, {{9053, 100}})}};
  IptablesNatState s = expected_iptables_nat("TERN", m);
  EXPECT_THAT(s.chains["TERN-PREROUTING"],
              ::testing::ElementsAre(
                  "-A TERN-PREROUTING -p tcp -m tcp --dport 8080 -m addrtype --dst-type LOCAL -j TERN-web-tcp-8080",
                  "-A TERN-PREROUTING -p udp -m udp --dport 53 -m addrtype --dst-type LOCAL -j TERN-dns-udp-53"));
  EXPECT_THAT(s.chains["TERN-web-tcp-8080"],
              ::testing::ElementsAre("-A TERN-web-tcp-8080 -p tcp -m statistic --mode random --probability "
                                     "0.29999999981 -j REDIRECT --to-ports 9002",
                                     "-A TERN-web-tcp-8080 -p tcp -j REDIRECT --to-ports 9001"));
  EXPECT_THAT(s.chains["TERN-dns-udp-53"],
              ::testing::ElementsAre("-A TERN-dns-udp-53 -p udp -j REDIRECT --to-ports 9053"));
  EXPECT_THAT(s.jumps, ::testing::ElementsAre("-A OUTPUT -m comment --comment tern-agent -j TERN-OUTPUT",
                                              "-A PREROUTING -m comment --comment tern-agent -j TERN-PREROUTING"));
}

TEST(IptablesRulesTest, ClientSplitMatchesTheFirstBackendsClientsByClusterHash) {
  PortRoute web = route("web", "tcp", 8080, {{9002, 30}, {9001, 70}});
  web.split = TrafficSplit::kClient;
  IptablesNatState s = expected_iptables_nat("TERN", DesiredMapping{{web}});
  // 30 points: 7 coarse buckets of 4, one rule each, and half of the 8th.
  const auto& rules = s.chains["TERN-web-tcp-8080"];
  ASSERT_EQ(rules.size(), 9u);
  EXPECT_EQ(rules[0], "-A TERN-web-tcp-8080 -p tcp -m cluster --cluster-local-nodemask 0x00000001 --cluster-total-nodes 25 "
                      "--cluster-hash-seed 0x7465726e -j REDIRECT --to-ports 9002");
  EXPECT_EQ(rules[6], "-A TERN-web-tcp-8080 -p tcp -m cluster --cluster-local-nodemask 0x00000040 --cluster-total-nodes 25 "
                      "--cluster-hash-seed 0x7465726e -j REDIRECT --to-ports 9002");
  EXPECT_EQ(rules[7], "-A TERN-web-tcp-8080 -p tcp -m cluster --cluster-local-nodemask 0x00000080 --cluster-total-nodes 25 "
                      "--cluster-hash-seed 0x7465726e -m cluster --cluster-local-nodemask 0x00000003 "
                      "--cluster-total-nodes 4 --cluster-hash-seed 0x6e726574 -j REDIRECT --to-ports 9002");
  EXPECT_EQ(rules[8], "-A TERN-web-tcp-8080 -p tcp -j REDIRECT --to-ports 9001");
  // iptables-restore is given the buckets above 32 by number (see iptables_restorable()).
  EXPECT_EQ(iptables_restorable(rules[7]),
            "-A TERN-web-tcp-8080 -p tcp -m cluster --cluster-local-node 8 --cluster-total-nodes 25 "
            "--cluster-hash-seed 0x7465726e -m cluster --cluster-local-nodemask 0x00000003 "
            "--cluster-total-nodes 4 --cluster-hash-seed 0x6e726574 -j REDIRECT --to-ports 9002");
  EXPECT_EQ(iptables_restorable(rules[0]), rules[0]) << "a mask up to 32 is taken as it is";
  EXPECT_EQ(iptables_restorable(rules[8]), rules[8]);
  EXPECT_EQ(iptables_restorable("-A X -m cluster --cluster-local-nodemask 0x01000000 --cluster-total-nodes 25"),
            "-A X -m cluster --cluster-local-node 25 --cluster-total-nodes 25");
  // One live backend needs no hash at all.
  web.backends = {{9002, 100}, {9001, 0}};
  s = expected_iptables_nat("TERN", DesiredMapping{{web}});
  EXPECT_THAT(s.chains["TERN-web-tcp-8080"],
              ::testing::ElementsAre("-A TERN-web-tcp-8080 -p tcp -j REDIRECT --to-ports 9002"));
}

// Which of the 25 x 4 (coarse, fine) hash cells the matches of
// iptables_client_matches(percent) take.
std::set<std::pair<int, int>> cluster_cells(uint32_t percent) {
  std::set<std::pair<int, int>> cells;
  for (const auto& matches : iptables_client_matches(percent)) {
    std::vector<std::pair<uint32_t, uint32_t>> masks;  // (mask, nodes), per -m cluster
    std::vector<std::string> w = absl::StrSplit(matches, ' ');
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      if (w[i] == "--cluster-local-nodemask") masks.emplace_back(std::stoul(w[i + 1], nullptr, 16), 0);
      if (w[i] == "--cluster-total-nodes" && !masks.empty()) masks.back().second = std::stoul(w[i + 1]);
    }
    EXPECT_FALSE(masks.empty()) << matches;
    EXPECT_EQ(masks[0].second, 25u) << matches;
    for (int c = 0; c < 25; ++c) {
      for (int f = 0; f < 4; ++f) {
        bool in = masks[0].first & (1u << c);
        if (masks.size() > 1) in = in && masks[1].second == 4 && (masks[1].first & (1u << f));
        if (in) cells.emplace(c, f);
      }
    }
  }
  return cells;
}

TEST(IptablesRulesTest, ClientSplitIsExactToThePointAndOnlyGrows) {
  std::set<std::pair<int, int>> before;
  for (uint32_t percent = 0; percent <= 100; ++percent) {
    auto cells = cluster_cells(percent);
    EXPECT_EQ(cells.size(), percent) << "each cell is a hundredth of the clients";
    EXPECT_TRUE(std::includes(cells.begin(), cells.end(), before.begin(), before.end())) << percent;
    before = std::move(cells);
  }
}

TEST(IptablesRulesTest, ParsesOurPartAndPlansTheRestore) {
  const std::string listing =
      "-P PREROUTING ACCEPT\n"
      "-P OUTPUT ACCEPT\n"
      "-N FOREIGN\n"
      "-N TERN-OUTPUT\n"
      "-N TERN-PREROUTING\n"
      "-N TERN-old-tcp-81\n"
      "-N TERNX\n"
      "-A PREROUTING -m comment --comment \"someone \\\"else\\\"\" -j FOREIGN\n"
      "-A PREROUTING -m comment --comment tern-agent -j TERN-PREROUTING\n"
      "-A PREROUTING -m comment --comment tern-agent -j TERN-PREROUTING\n"
      "-A FOREIGN -p tcp -m tcp --dport 1 -j RETURN\n"
      "-A TERN-PREROUTING -p tcp -m tcp --dport 81 -m addrtype --dst-type LOCAL -j TERN-old-tcp-81\n"
      "-A TERN-old-tcp-81 -p tcp -j REDIRECT --to-ports 9009\n"
      "-A TERNX -j RETURN\n";
  IptablesNatState actual = parse_iptables_nat("TERN", listing);
  EXPECT_EQ(actual.chains.size(), 3u);
  EXPECT_FALSE(actual.chains.contains("TERNX"));
  EXPECT_FALSE(actual.chains.contains("FOREIGN"));
  EXPECT_EQ(actual.chains["TERN-old-tcp-81"].size(), 1u);
  EXPECT_EQ(actual.jumps.size(), 2u);

  IptablesNatState wanted = expected_iptables_nat("TERN", DesiredMapping{{route("web", "tcp", 80, {{9001, 100}})}});
  std::string script = iptables_restore_script(actual, wanted);
  std::vector<std::string> lines = absl::StrSplit(script, '\n', absl::SkipEmpty());
  EXPECT_THAT(lines, ::testing::ElementsAre(
                         "*nat", ":TERN-OUTPUT - [0:0]", ":TERN-PREROUTING - [0:0]", ":TERN-web-tcp-80 - [0:0]",
                         ":TERN-old-tcp-81 - [0:0]",
                         "-A TERN-OUTPUT -p tcp -m tcp --dport 80 -m addrtype --dst-type LOCAL -j TERN-web-tcp-80",
                         "-A TERN-PREROUTING -p tcp -m tcp --dport 80 -m addrtype --dst-type LOCAL -j TERN-web-tcp-80",
                         "-A TERN-web-tcp-80 -p tcp -j REDIRECT --to-ports 9001",
                         "-D PREROUTING -m comment --comment tern-agent -j TERN-PREROUTING",
                         "-I OUTPUT 1 -m comment --comment tern-agent -j TERN-OUTPUT", "-X TERN-old-tcp-81", "COMMIT"));

  // Removing everything: flush and delete every chain of ours, drop the jumps.
  lines = absl::StrSplit(iptables_restore_script(actual, IptablesNatState{}), '\n', absl::SkipEmpty());
  EXPECT_THAT(lines, ::testing::Contains("-X TERN-PREROUTING"));
  EXPECT_EQ(std::count(lines.begin(), lines.end(), "-D PREROUTING -m comment --comment tern-agent -j TERN-PREROUTING"),
            2);
}

TEST(IptablesRulesTest, StripsCountersAndReadsEachRedirectsPackets) {
  const std::string listing =
      "-P PREROUTING ACCEPT -c 7 420\n"
      "-N TERN-web-tcp-80\n"
      "-A PREROUTING -m comment --comment \"a -c 1 2 in a comment\" -c 3 180 -j FOREIGN\n"
      "-A TERN-web-tcp-80 -p tcp -m statistic --mode random --probability 0.09999999986 -c 12 720 -j REDIRECT "
      "--to-ports 9002\n"
      "-A TERN-web-tcp-80 -p tcp -c 101 6060 -j REDIRECT --to-ports 9001\n"
      "-A FOREIGN -p tcp -c 5 300 -j REDIRECT --to-ports 9003\n";
  std::map<std::string, uint64_t> redirects;
  const std::string stripped = strip_iptables_counters("TERN", listing, redirects);
  EXPECT_EQ(stripped,
            "-P PREROUTING ACCEPT\n"
            "-N TERN-web-tcp-80\n"
            "-A PREROUTING -m comment --comment \"a -c 1 2 in a comment\" -j FOREIGN\n"
            "-A TERN-web-tcp-80 -p tcp -m statistic --mode random --probability 0.09999999986 -j REDIRECT "
            "--to-ports 9002\n"
            "-A TERN-web-tcp-80 -p tcp -j REDIRECT --to-ports 9001\n"
            "-A FOREIGN -p tcp -j REDIRECT --to-ports 9003\n");
  EXPECT_EQ(redirects, (std::map<std::string, uint64_t>{{"TERN-web-tcp-80:9001", 101}, {"TERN-web-tcp-80:9002", 12}}))
      << "only our chains' redirects";
}

TEST(CounterCarryTest, CountsOnlyGrowAcrossRewritesAndResets) {
  CounterCarry c;
  EXPECT_EQ(c.observe("a", 5), 5u);
  EXPECT_EQ(c.observe("a", 9), 9u);
  // Our own rewrite: the final reading is carried, the new counter starts at 0.
  c.rewriting({{"a", 11}, {"b", 4}});
  EXPECT_EQ(c.observe("a", 0), 11u);
  EXPECT_EQ(c.observe("a", 3), 14u);
  EXPECT_EQ(c.observe("b", 1), 5u);
  // Someone flushed the rules: a reading below the last one starts over.
  EXPECT_EQ(c.observe("a", 1), 15u);
  // A rewrite whose final reading failed carries what was last seen.
  c.rewriting({});
  EXPECT_EQ(c.observe("a", 0), 15u);
  EXPECT_EQ(c.observe("b", 2), 7u);
}

TEST(ConntrackTest, TcpBackendsThatStopGettingNewConnections) {
  DesiredMapping canary{{route("web", "tcp", 80, {{9001, 90}, {9002, 10}}), route("dns", "udp", 53, {{9053, 100}}),
                         route("api", "tcp", 81, {{9101, 100}})}};
  DesiredMapping switched{{route("web", "tcp", 80, {{9001, 0}, {9002, 100}}), route("dns", "udp", 53, {})}};
  EXPECT_THAT(tcp_backends_left(canary, switched),
              ::testing::ElementsAre(std::make_pair(80, 9001), std::make_pair(81, 9101)))
      << "blue at weight 0 and the removed route; UDP is not TCP";
  EXPECT_TRUE(tcp_backends_left(switched, canary).empty()) << "nothing left: backends gained weight";
  DesiredMapping more{{route("web", "tcp", 80, {{9001, 50}, {9002, 50}}), route("api", "tcp", 81, {{9101, 100}})}};
  EXPECT_TRUE(tcp_backends_left(canary, more).empty()) << "a smaller weight still gets new connections";
}

TEST(ConntrackTest, UdpPortsWhoseSplitChanged) {
  DesiredMapping before{{route("dns", "udp", 53, {{9001, 100}}), route("web", "tcp", 80, {{9001, 100}}),
                         route("q", "udp", 54, {{9001, 50}, {9002, 50}}), route("gone", "udp", 55, {{9001, 100}})}};
  DesiredMapping after{{route("dns", "udp", 53, {{9001, 100}, {9002, 0}}), route("web", "tcp", 80, {{9002, 100}}),
                        route("q", "udp", 54, {{9002, 50}, {9001, 50}}), route("new", "udp", 56, {{9001, 100}}),
                        route("swapped", "udp", 57, {})}};
  EXPECT_THAT(udp_ports_to_reset(before, after), ::testing::ElementsAre(55, 56));
  EXPECT_THAT(udp_ports_to_reset(DesiredMapping{}, before), ::testing::ElementsAre(53, 54, 55));
}

TEST(ConntrackTest, UdpPortsWhoseFlowsAreAssignedAnotherWay) {
  auto by_client = [](PortRoute r) {
    r.split = TrafficSplit::kClient;
    return r;
  };
  DesiredMapping before{{route("q", "udp", 54, {{9001, 50}, {9002, 50}}), route("one", "udp", 55, {{9001, 100}}),
                         by_client(route("c", "udp", 56, {{9001, 30}, {9002, 70}}))}};
  DesiredMapping after{{by_client(route("q", "udp", 54, {{9001, 50}, {9002, 50}})),
                        by_client(route("one", "udp", 55, {{9001, 100}, {9002, 0}})),
                        by_client(route("c", "udp", 56, {{9002, 70}, {9001, 30}}))}};
  // 54: random draw to client hash; 55: one live backend either way; 56: the
  // same weights, but the buckets change hands.
  EXPECT_THAT(udp_ports_to_reset(before, after), ::testing::ElementsAre(54, 56));
  EXPECT_THAT(udp_ports_to_reset(after, after), ::testing::IsEmpty());
}

// ---------------------------------------------------------------------------
// Both backends against the real kernel, in a private network namespace.

// A backend and the iptables flavour the test drives (the iptables backend
// runs against both; for nftables, iptables only adds foreign rules).
struct Flavor {
  std::string name;
  std::string backend;
  std::string iptables;
  std::string iptables_restore;
  friend void PrintTo(const Flavor& f, std::ostream* os) { *os << f.name; }
};

class PortMapperTest : public ::testing::TestWithParam<Flavor> {
 protected:
  void SetUp() override {
    if (std::string why = testing::enter_fresh_network_namespace(); !why.empty()) GTEST_SKIP() << why;
    PortMapperOptions options;
    options.backend = GetParam().backend;
    options.iptables_bin = GetParam().iptables;
    options.iptables_restore_bin = GetParam().iptables_restore;
    auto mapper = make_port_mapper(options);
    if (!mapper.ok() && mapper.status().code() == absl::StatusCode::kFailedPrecondition) {
      GTEST_SKIP() << GetParam().name << " cannot run here: " << mapper.status();
    }
    ASSERT_TRUE(mapper.ok()) << mapper.status();
    mapper_ = std::move(*mapper);
    blue_ = std::make_unique<testing::NameServer>("blue", SOCK_STREAM);
    green_ = std::make_unique<testing::NameServer>("green", SOCK_STREAM);
    public_port_ = testing::unused_port(SOCK_STREAM);
    if (auto nl = NftNetlink::open(); nl.ok()) netlink_ = std::move(*nl);
  }

  bool nft() const { return GetParam().backend == "nftables"; }
  const std::string& iptables() const { return GetParam().iptables; }

  DesiredMapping web(uint32_t blue_weight) const {
    return DesiredMapping{{route("web", "tcp", public_port_,
                                 {{blue_->port(), blue_weight}, {green_->port(), 100 - blue_weight}})}};
  }

  // A canary of green at `green_weight`, listed first as routes_for() lists
  // the active slot.
  DesiredMapping canary(uint32_t green_weight, TrafficSplit split = TrafficSplit::kClient) const {
    PortRoute r = route("web", "tcp", public_port_, {{green_->port(), green_weight}, {blue_->port(), 100 - green_weight}});
    r.split = split;
    return DesiredMapping{{r}};
  }

  // Another mapper of the same kind, as a restarted agent makes it.
  std::unique_ptr<PortMapper> another_mapper() const {
    PortMapperOptions options;
    options.backend = GetParam().backend;
    options.iptables_bin = GetParam().iptables;
    options.iptables_restore_bin = GetParam().iptables_restore;
    auto mapper = make_port_mapper(options);
    EXPECT_TRUE(mapper.ok()) << mapper.status();
    return mapper.ok() ? std::move(*mapper) : nullptr;
  }

  // Who answers `n` connections to the public port.
  std::map<std::string, int> tally(int n) const {
    std::map<std::string, int> seen;
    for (int i = 0; i < n; ++i) ++seen[testing::ask_tcp(public_port_)];
    return seen;
  }

  static ExecResult run(const std::vector<std::string>& argv) {
    auto r = run_command(argv);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ExecResult{};
  }

  // Everything of ours the kernel holds, as text ("" when there is none).
  std::string ours() const {
    if (nft()) {
      // Stateless: without the counters' values.
      auto r = run({"nft", "-s", "list", "table", "inet", "tern"});
      return r.success() ? r.out : "";
    }
    std::string found;
    for (absl::string_view line : absl::StrSplit(run({iptables(), "-w", "-t", "nat", "-S"}).out, '\n')) {
      if (absl::StrContains(line, "TERN")) absl::StrAppend(&found, line, "\n");
    }
    return found;
  }

  // What a careless admin or another tool does to our rules.
  void break_rules() const {
    if (nft()) {
      ASSERT_TRUE(run({"nft", "flush", "ruleset"}).success());
    } else {
      ASSERT_TRUE(run({iptables(), "-w", "-t", "nat", "-F", iptables_route_chain("TERN", web(100).routes[0])})
                      .success());
    }
  }

  std::optional<uint32_t> generation() const {
    if (!netlink_) return std::nullopt;
    auto g = netlink_->get_generation();
    EXPECT_TRUE(g.ok()) << g.status();
    return g.ok() ? std::optional<uint32_t>(*g) : std::nullopt;
  }

  std::unique_ptr<PortMapper> mapper_;
  std::unique_ptr<testing::NameServer> blue_, green_;
  uint16_t public_port_ = 0;
  std::unique_ptr<NftNetlink> netlink_;
};

TEST_P(PortMapperTest, RoutesNewConnectionsByWeight) {
  EXPECT_EQ(testing::ask_tcp(public_port_), "") << "nothing listens on the public port before apply";
  ASSERT_TRUE(mapper_->apply(web(100)).ok());
  EXPECT_EQ(tally(20), (std::map<std::string, int>{{"blue", 20}}));
  EXPECT_EQ(mapper_->current(), web(100));

  // The swap and back, a few times.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(mapper_->apply(web(0)).ok());
    EXPECT_EQ(tally(20), (std::map<std::string, int>{{"green", 20}}));
    ASSERT_TRUE(mapper_->apply(web(100)).ok());
    EXPECT_EQ(tally(20), (std::map<std::string, int>{{"blue", 20}}));
  }

  // 50/50 over 400 connections: each side's count is Binomial(400, 0.5),
  // mean 200, standard deviation 10; the band is +-10 sigma.
  ASSERT_TRUE(mapper_->apply(web(50)).ok());
  auto seen = tally(400);
  EXPECT_EQ(seen["blue"] + seen["green"], 400) << "every connection is answered";
  EXPECT_GE(seen["blue"], 100);
  EXPECT_GE(seen["green"], 100);

  // 90/10: green gets some, blue most.
  ASSERT_TRUE(mapper_->apply(web(90)).ok());
  seen = tally(400);
  EXPECT_EQ(seen["blue"] + seen["green"], 400);
  EXPECT_GE(seen["green"], 10);
  EXPECT_GE(seen["blue"], 300);
}

// How many of the clients in `sides` (client -> the side it reached) are on `side`.
long on_side(const std::map<std::string, std::string>& sides, const std::string& side) {
  return std::count_if(sides.begin(), sides.end(), [&](const auto& e) { return e.second == side; });
}

// Asserts that a call returning absl::Status succeeded, and says why it did not.
#define ASSERT_OK(expr)                \
  do {                                 \
    const absl::Status st_ = (expr);   \
    ASSERT_TRUE(st_.ok()) << st_;      \
  } while (0)

// `n` client addresses in `net` (the first two octets of a /16): a local
// route makes the whole /16 a namespace's own, so a socket can be bound to
// any of them.
std::vector<std::string> many_clients(const std::string& net, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(absl::StrCat(net, ".", i / 250, ".", 1 + i % 250));
  return out;
}

TEST_P(PortMapperTest, ClientSplitKeepsEachClientOnItsSideAsTheCanaryGrows) {
  ASSERT_TRUE(run({"ip", "route", "add", "local", "10.77.0.0/16", "dev", "lo"}).success());
  const auto clients = many_clients("10.77", 1000);
  // Each client's side over three connections; "" when they disagreed.
  auto sides = [&](size_t n) {
    std::map<std::string, std::string> out;
    for (size_t i = 0; i < n; ++i) {
      std::set<std::string> seen;
      for (int k = 0; k < 3; ++k) seen.insert(testing::ask_tcp_from(clients[i], public_port_));
      out[clients[i]] = seen.size() == 1 ? *seen.begin() : "";
    }
    return out;
  };

  ASSERT_OK(mapper_->apply(canary(30)));
  auto reconciled = mapper_->reconcile();
  ASSERT_TRUE(reconciled.ok()) << reconciled.status();
  EXPECT_FALSE(*reconciled) << "the rules read back as they were written, so nothing is rewritten";
  const auto at30 = sides(clients.size());
  EXPECT_EQ(on_side(at30, ""), 0) << "every client always reaches the same side";
  // The hash and the addresses are fixed, so this share is too; the band
  // allows for a hash's unevenness over 1,000 addresses (as if random: a
  // standard deviation of 1.4 points).
  EXPECT_NEAR(on_side(at30, "green"), 300, 50);
  EXPECT_EQ(on_side(at30, "green") + on_side(at30, "blue"), 1000);
  RecordProperty("local_clients_on_green_at_30", static_cast<int>(on_side(at30, "green")));

  // The canary grows (in place for nftables): clients only move onto it.
  ASSERT_OK(mapper_->apply(canary(50)));
  const auto at50 = sides(clients.size());
  EXPECT_EQ(on_side(at50, ""), 0);
  EXPECT_NEAR(on_side(at50, "green"), 500, 50);
  RecordProperty("local_clients_on_green_at_50", static_cast<int>(on_side(at50, "green")));
  int handed_back = 0;
  for (const auto& [client, side] : at30) handed_back += side == "green" && at50.at(client) != "green";
  EXPECT_EQ(handed_back, 0) << "a client on the canary stays on it as its weight grows";

  // A restarted agent writes the table anew; the seed is fixed, so every
  // client keeps its side.
  auto restarted = another_mapper();
  ASSERT_NE(restarted, nullptr);
  ASSERT_OK(restarted->apply(canary(50)));
  EXPECT_EQ(sides(clients.size()), at50);

  ASSERT_OK(restarted->apply(canary(100)));
  EXPECT_EQ(on_side(sides(200), "green"), 200);

  // Back to a random draw per connection at 50: the rules change, and a
  // client now sees both sides (each of 100 clients, asked three times,
  // sees one side only with probability 1/4).
  ASSERT_OK(restarted->apply(canary(50, TrafficSplit::kConnection)));
  EXPECT_GT(on_side(sides(100), ""), 20);
  ASSERT_OK(restarted->apply(canary(50)));
  auto again = sides(200);
  for (const auto& [client, side] : again) EXPECT_EQ(side, at50.at(client)) << client;
}

// Remote clients: connections that come in over a link, so through the
// prerouting chain, and are redirected to the address they arrived at.
TEST_P(PortMapperTest, ClientSplitHoldsForRemoteClients) {
  testing::PeerNamespace peer;
  testing::NameServer blue("blue", SOCK_STREAM, /*any_address=*/true);
  testing::NameServer green("green", SOCK_STREAM, /*any_address=*/true);
  // host 10.99.0.1 <-veth-> 10.99.0.2 peer, whose 10.88.0.0/16 are the clients.
  for (std::vector<std::string> cmd :
       {std::vector<std::string>{"ip", "link", "add", "tern-host", "type", "veth", "peer", "name", "tern-peer", "netns",
                                 std::to_string(peer.tid())},
        {"ip", "addr", "add", "10.99.0.1/24", "dev", "tern-host"},
        {"ip", "link", "set", "tern-host", "up"},
        {"ip", "route", "add", "10.88.0.0/16", "via", "10.99.0.2"}}) {
    ASSERT_TRUE(run(cmd).success()) << absl::StrJoin(cmd, " ");
  }
  peer.run([&] {
    for (std::vector<std::string> cmd : {std::vector<std::string>{"ip", "addr", "add", "10.99.0.2/24", "dev", "tern-peer"},
                                         {"ip", "link", "set", "tern-peer", "up"},
                                         {"ip", "route", "add", "local", "10.88.0.0/16", "dev", "lo"}}) {
      EXPECT_TRUE(run(cmd).success()) << absl::StrJoin(cmd, " ");
    }
  });
  const auto clients = many_clients("10.88", 1000);
  // The link carries traffic once both ends are up and the neighbours known.
  bool link_up = false;
  peer.run([&] {
    link_up = testing::eventually([&] { return testing::ask_tcp_from(clients[0], blue.port(), "10.99.0.1") == "blue"; });
  });
  ASSERT_TRUE(link_up) << "the peer cannot reach the host over the veth link";

  auto canary = [&](uint32_t green_weight) {
    PortRoute r = route("web", "tcp", public_port_, {{green.port(), green_weight}, {blue.port(), 100 - green_weight}});
    r.split = TrafficSplit::kClient;
    return DesiredMapping{{r}};
  };
  auto sides = [&] {
    std::map<std::string, std::string> out;
    peer.run([&] {
      for (const auto& client : clients) {
        std::set<std::string> seen;
        for (int k = 0; k < 3; ++k) seen.insert(testing::ask_tcp_from(client, public_port_, "10.99.0.1"));
        out[client] = seen.size() == 1 ? *seen.begin() : "";
      }
    });
    return out;
  };

  ASSERT_OK(mapper_->apply(canary(30)));
  const auto at30 = sides();
  EXPECT_EQ(on_side(at30, ""), 0) << "every client always reaches the same side";
  EXPECT_NEAR(on_side(at30, "green"), 300, 50);
  RecordProperty("remote_clients_on_green_at_30", static_cast<int>(on_side(at30, "green")));
  ASSERT_OK(mapper_->apply(canary(50)));
  const auto at50 = sides();
  EXPECT_EQ(on_side(at50, ""), 0);
  EXPECT_NEAR(on_side(at50, "green"), 500, 50);
  RecordProperty("remote_clients_on_green_at_50", static_cast<int>(on_side(at50, "green")));
  int handed_back = 0;
  for (const auto& [client, side] : at30) handed_back += side == "green" && at50.at(client) != "green";
  EXPECT_EQ(handed_back, 0);
}

TEST_P(PortMapperTest, CountsEachBackendsNewConnections) {
  auto counts = [&] {
    std::map<uint16_t, uint64_t> out;
    auto c = mapper_->connection_counts();
    EXPECT_TRUE(c.ok()) << c.status();
    if (c.ok()) {
      for (const auto& b : *c) out[b.backend_port] += b.connections;
    }
    return out;
  };
  EXPECT_TRUE(counts().empty()) << "nothing mapped, nothing counted";
  ASSERT_TRUE(mapper_->apply(web(100)).ok());
  EXPECT_EQ(tally(20)["blue"], 20);
  // A connection straight to a slot's own port is not the split's.
  EXPECT_EQ(testing::ask_tcp(blue_->port()), "blue");
  EXPECT_EQ(counts(), (std::map<uint16_t, uint64_t>{{blue_->port(), 20}, {green_->port(), 0}}))
      << "the idle backend, at weight 0, is counted too";

  // A canary split: the counts are the connections each side answered.
  ASSERT_TRUE(mapper_->apply(web(70)).ok());
  auto seen = tally(200);
  ASSERT_GT(seen["green"], 0);
  EXPECT_EQ(counts(), (std::map<uint16_t, uint64_t>{{blue_->port(), 20 + seen["blue"]}, {green_->port(), seen["green"]}}));

  // Counts carry across a rewrite of the rules (here: a route is added) and
  // across someone else flushing them (reconcile restores the rules).
  auto total = [&] {
    uint64_t n = 0;
    for (const auto& [port, c] : counts()) n += c;
    return n;
  };
  const uint64_t before = total();
  DesiredMapping more = web(70);
  more.routes.push_back(route("other", "tcp", testing::unused_port(SOCK_STREAM), {{blue_->port(), 100}}));
  ASSERT_TRUE(mapper_->apply(more).ok());
  EXPECT_EQ(total(), before) << "nothing lost by the rewrite";
  auto again = tally(30);
  EXPECT_EQ(again["blue"] + again["green"], 30);
  EXPECT_EQ(total(), before + 30);
  break_rules();
  auto healed = mapper_->reconcile();
  ASSERT_TRUE(healed.ok()) << healed.status();
  EXPECT_TRUE(*healed);
  EXPECT_EQ(total(), before + 30) << "a flush does not take counts back";
  again = tally(10);
  EXPECT_EQ(again["blue"] + again["green"], 10);
  EXPECT_EQ(total(), before + 40);
}

TEST_P(PortMapperTest, ApplyingTheSameMappingChangesNothing) {
  ASSERT_TRUE(mapper_->apply(web(30)).ok());
  std::string rules = ours();
  ASSERT_NE(rules, "");
  auto gen = generation();
  ASSERT_TRUE(mapper_->apply(web(30)).ok());
  EXPECT_EQ(generation(), gen) << "a second apply must not commit anything";
  EXPECT_EQ(ours(), rules);
  auto reconciled = mapper_->reconcile();
  ASSERT_TRUE(reconciled.ok()) << reconciled.status();
  EXPECT_FALSE(*reconciled) << "nothing changed, so nothing to restore (the rules read back as written)";
  EXPECT_EQ(generation(), gen);

  // Our own changes (the swap: in place for nftables) do not count as foreign.
  ASSERT_TRUE(mapper_->apply(web(0)).ok());
  ASSERT_TRUE(mapper_->apply(web(70)).ok());
  reconciled = mapper_->reconcile();
  ASSERT_TRUE(reconciled.ok()) << reconciled.status();
  EXPECT_FALSE(*reconciled);
}

TEST_P(PortMapperTest, RouteSetChanges) {
  testing::NameServer api("api", SOCK_STREAM);
  const uint16_t api_port = testing::unused_port(SOCK_STREAM);
  DesiredMapping both = web(100);
  both.routes.push_back(route("api", "tcp", api_port, {{api.port(), 100}}));
  ASSERT_TRUE(mapper_->apply(both).ok());
  EXPECT_EQ(testing::ask_tcp(public_port_), "blue");
  EXPECT_EQ(testing::ask_tcp(api_port), "api");

  // A route without backends is not mapped at all.
  both.routes[0].backends.clear();
  ASSERT_TRUE(mapper_->apply(both).ok());
  EXPECT_EQ(testing::ask_tcp(public_port_), "");
  EXPECT_EQ(testing::ask_tcp(api_port), "api");

  ASSERT_TRUE(mapper_->apply(web(0)).ok());
  EXPECT_EQ(testing::ask_tcp(public_port_), "green");
  EXPECT_EQ(testing::ask_tcp(api_port), "");
  EXPECT_THAT(ours(), ::testing::Not(HasSubstr("api")));
}

TEST_P(PortMapperTest, ReconcileRestoresForeignChanges) {
  ASSERT_TRUE(mapper_->apply(web(100)).ok());
  auto reconciled = mapper_->reconcile();
  ASSERT_TRUE(reconciled.ok()) << reconciled.status();
  EXPECT_FALSE(*reconciled);

  std::string rules = ours();
  break_rules();
  EXPECT_EQ(testing::ask_tcp(public_port_), "") << "the foreign change took our mapping away";
  reconciled = mapper_->reconcile();
  ASSERT_TRUE(reconciled.ok()) << reconciled.status();
  EXPECT_TRUE(*reconciled);
  EXPECT_EQ(testing::ask_tcp(public_port_), "blue");
  EXPECT_EQ(ours(), rules);

  reconciled = mapper_->reconcile();
  ASSERT_TRUE(reconciled.ok()) << reconciled.status();
  EXPECT_FALSE(*reconciled) << "restored, so nothing left to do";
}

TEST_P(PortMapperTest, ApplyHealsForeignChanges) {
  ASSERT_TRUE(mapper_->apply(web(100)).ok());
  break_rules();
  // A swap, which nftables would make in place, must notice the foreign
  // change and write the whole table instead.
  ASSERT_TRUE(mapper_->apply(web(0)).ok());
  EXPECT_EQ(tally(10), (std::map<std::string, int>{{"green", 10}}));
  auto reconciled = mapper_->reconcile();
  ASSERT_TRUE(reconciled.ok()) << reconciled.status();
  EXPECT_FALSE(*reconciled);
}

TEST_P(PortMapperTest, LeavesForeignRulesAlone) {
  // A foreign nftables table and a foreign iptables chain with a jump to it.
  auto nft_foreign = run_command({"nft", "-f", "-"}, "table inet foreign {\n  chain input {\n"
                                                     "    type filter hook input priority 0; policy accept;\n"
                                                     "    tcp dport 1 counter accept\n  }\n}\n");
  ASSERT_TRUE(nft_foreign.ok()) << nft_foreign.status();
  ASSERT_TRUE(nft_foreign->success()) << nft_foreign->err;
  for (std::vector<std::string> cmd : {std::vector<std::string>{"-N", "FOREIGN"},
                                       {"-A", "FOREIGN", "-p", "tcp", "--dport", "1", "-j", "RETURN"},
                                       {"-A", "PREROUTING", "-j", "FOREIGN"},
                                       {"-A", "OUTPUT", "-p", "tcp", "--dport", "2", "-j", "RETURN"}}) {
    cmd.insert(cmd.begin(), {iptables(), "-w", "-t", "nat"});
    ASSERT_TRUE(run(cmd).success()) << absl::StrJoin(cmd, " ");
  }
  auto foreign = [&] {
    std::string nat = run({iptables(), "-w", "-t", "nat", "-S"}).out;
    std::string out;
    for (absl::string_view line : absl::StrSplit(nat, '\n')) {
      if (!absl::StrContains(line, "TERN") && !absl::StrContains(line, "tern")) absl::StrAppend(&out, line, "\n");
    }
    return absl::StrCat(run({"nft", "list", "table", "inet", "foreign"}).out, out);
  };
  const std::string before = foreign();
  ASSERT_THAT(before, HasSubstr("tcp dport 1 counter"));
  ASSERT_THAT(before, HasSubstr("-A PREROUTING -j FOREIGN"));

  ASSERT_TRUE(mapper_->apply(web(100)).ok());
  ASSERT_TRUE(mapper_->apply(web(40)).ok());
  EXPECT_EQ(foreign(), before);
  ASSERT_TRUE(mapper_->reconcile().ok());
  EXPECT_EQ(foreign(), before);
  ASSERT_TRUE(mapper_->remove_all().ok());
  EXPECT_EQ(foreign(), before);
}

TEST_P(PortMapperTest, RemoveAllLeavesNothingOfOurs) {
  ASSERT_TRUE(mapper_->remove_all().ok()) << "removing when nothing is there is fine";
  ASSERT_TRUE(mapper_->apply(web(50)).ok());
  ASSERT_NE(ours(), "");
  ASSERT_TRUE(mapper_->remove_all().ok());
  EXPECT_EQ(ours(), "");
  EXPECT_EQ(mapper_->current(), DesiredMapping{});
  EXPECT_EQ(testing::ask_tcp(public_port_), "");
  auto reconciled = mapper_->reconcile();
  ASSERT_TRUE(reconciled.ok()) << reconciled.status();
  EXPECT_FALSE(*reconciled) << "nothing applied, nothing to restore";
  EXPECT_EQ(ours(), "");
  ASSERT_TRUE(mapper_->remove_all().ok());
}

TEST_P(PortMapperTest, RefusesInvalidMappings) {
  ASSERT_TRUE(mapper_->apply(web(100)).ok());
  std::string rules = ours();
  DesiredMapping bad = web(100);
  bad.routes[0].backends[1].weight = 5;
  auto st = mapper_->apply(bad);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr(absl::StrCat("\"web\" tcp/", public_port_)));
  EXPECT_THAT(std::string(st.message()), HasSubstr("sum to 105"));
  EXPECT_EQ(mapper_->current(), web(100));
  EXPECT_EQ(ours(), rules);
  EXPECT_EQ(testing::ask_tcp(public_port_), "blue");
}

TEST_P(PortMapperTest, SwitchMovesExistingUdpFlows) {
  if (!find_executable("conntrack")) GTEST_SKIP() << "conntrack is not installed";
  testing::NameServer blue("blue", SOCK_DGRAM);
  testing::NameServer green("green", SOCK_DGRAM);
  const uint16_t port = testing::unused_port(SOCK_DGRAM);
  auto dns = [&](uint32_t blue_weight) {
    return DesiredMapping{{route("dns", "udp", port, {{blue.port(), blue_weight}, {green.port(), 100 - blue_weight}})}};
  };
  ASSERT_TRUE(mapper_->apply(dns(100)).ok());
  testing::UdpClient client(port);  // one flow: the same local port throughout
  EXPECT_EQ(client.ask(), "blue");
  EXPECT_EQ(client.ask(), "blue");
  ASSERT_TRUE(mapper_->apply(dns(0)).ok());
  EXPECT_EQ(client.ask(), "green") << "the flow's conntrack entry was deleted, so it takes the new mapping";
  ASSERT_TRUE(mapper_->apply(dns(100)).ok());
  EXPECT_EQ(client.ask(), "blue");
}

// A connection attempt whose SYN went unanswered before a switch (dropped,
// as by a full SYN queue) retries after the switch: the retry takes the new
// mapping, not the old slot's conntrack entry (that slot is about to stop).
TEST_P(PortMapperTest, AnUnansweredConnectionAttemptFollowsTheSwitch) {
  if (!find_executable("conntrack")) GTEST_SKIP() << "conntrack is not installed";
  ASSERT_TRUE(mapper_->apply(web(100)).ok());
  const std::string drop_syns = absl::StrCat(
      "table inet synhole {\n  chain input {\n    type filter hook input priority -300; policy accept;\n"
      "    tcp dport ", blue_->port(), " tcp flags & (syn | ack) == syn drop\n  }\n}\n");
  auto r = run_command({"nft", "-f", "-"}, drop_syns);
  ASSERT_TRUE(r.ok() && r->success()) << (r.ok() ? r->err : r.status().ToString());
  std::string got = "unanswered";
  std::thread client([&] { got = testing::ask_tcp(public_port_); });
  // The attempt's entry, redirected to blue, waits for an answer. (Seen
  // within milliseconds; the deadline stays below the SYN's first
  // retransmit, at 1 s, which must come after the switch.)
  EXPECT_TRUE(testing::eventually(
      [&] {
        auto l = run_command({"conntrack", "-L", "-p", "tcp", "--state", "SYN_SENT", "--reply-port-src",
                              std::to_string(blue_->port())});
        return l.ok() && absl::StrContains(l->out, absl::StrCat("dport=", public_port_));
      },
      std::chrono::milliseconds(800)))
      << "the SYN to blue was not seen";
  ASSERT_TRUE(mapper_->apply(web(0)).ok());
  ASSERT_TRUE(run({"nft", "delete", "table", "inet", "synhole"}).success());
  client.join();
  EXPECT_EQ(got, "green") << "the retransmitted SYN went where its old entry pointed";
}

TEST_P(PortMapperTest, NftablesMapsHoldAllHundredKeys) {
  if (!nft()) GTEST_SKIP() << "nftables only";
  ASSERT_TRUE(mapper_->apply(web(100)).ok());
  ASSERT_TRUE(mapper_->apply(web(30)).ok());  // written in place over netlink
  auto listing = run({"nft", "list", "map", "inet", "tern", nft_map_name(web(30).routes[0])});
  ASSERT_TRUE(listing.success()) << listing.err;
  EXPECT_THAT(listing.out, HasSubstr(absl::StrCat("0 : ", blue_->port())));
  EXPECT_THAT(listing.out, HasSubstr(absl::StrCat("29 : ", blue_->port())));
  EXPECT_THAT(listing.out, HasSubstr(absl::StrCat("30 : ", green_->port())));
  EXPECT_THAT(listing.out, HasSubstr(absl::StrCat("99 : ", green_->port())));
  // The kernel content equals what a full write produces.
  std::string in_place = ours();
  auto fresh = make_port_mapper(PortMapperOptions{});
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE((*fresh)->apply(web(30)).ok());
  EXPECT_EQ(ours(), in_place);
}

INSTANTIATE_TEST_SUITE_P(
    Backends, PortMapperTest,
    ::testing::Values(Flavor{"nftables", "nftables", "iptables", "iptables-restore"},
                      Flavor{"iptables", "iptables", "iptables", "iptables-restore"},
                      Flavor{"iptables_legacy", "iptables", "iptables-legacy", "iptables-legacy-restore"}),
    [](const ::testing::TestParamInfo<Flavor>& p) { return p.param.name; });

}  // namespace
}  // namespace tern
