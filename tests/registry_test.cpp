// The stall report's culprit (health/registry.cpp) from synthetic registries: the cases that timing
// makes flaky in the end-to-end fault tests, pinned down here.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "health/registry.hpp"

using namespace xy;

namespace {
std::string report(const OpRegistry& reg, Clock::time_point now) {
  auto overdue = reg.first_overdue(now);
  EXPECT_TRUE(overdue.has_value());
  if (!overdue) return "";
  nlohmann::json op = OpRegistry::op_json(*overdue, now);
  op["node"] = 0;
  const std::string r = stall_report_json(op, {reg.to_json(now, 0, "n0")}, {"n0"});
  std::printf("%s", r.c_str());
  return r;
}
}  // namespace

// A gather prefetched just before rank 1's forward got stuck is registered first and so expires
// first; the culprit is still the stuck forward, not the collective rank 1 has not reached.
TEST(StallReport, StuckComputeBeatsTheGatherPrefetchedJustBeforeIt) {
  OpRegistry reg;
  for (uint64_t seq = 1; seq <= 42; ++seq) {
    reg.end(reg.begin("all-gather", 0, 2, seq, 4, 3.0));
    if (seq < 42) reg.end(reg.begin("all-gather", 1, 2, seq, 4, 3.0));
  }
  reg.begin("all-gather", 1, 2, 42, 4, 3.0);  // prefetched, not waited for yet
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const auto stuck = Clock::now();
  reg.begin("forward", 1, 1, 0, 4, 3.0);      // stuck
  reg.begin("all-gather", 0, 3, 43, 4, 3.0);  // rank 0 went on and waits in #43
  reg.set_status({0, 4, "forward", 2});
  reg.set_status({1, 4, "forward", 1});
  // The watchdog looks when the gather is overdue and the forward not quite yet.
  const std::string r = report(reg, stuck + std::chrono::milliseconds(2998));
  EXPECT_NE(r.find("STALL: rank 1 (node 0, n0): all-gather #42"), std::string::npos);
  EXPECT_NE(r.find("CULPRIT: rank 1 (node 0, n0): forward of unit 1 (step 4)"), std::string::npos);
}

// A rank that never issued a collective is the culprit; its first missing one is named even when
// the others ran several collectives ahead (NCCL: the host enqueues and goes on).
TEST(StallReport, FirstMissingCollectiveOfTheLaggard) {
  OpRegistry reg;
  for (uint64_t seq = 1; seq <= 39; ++seq) {
    const uint64_t id = reg.begin("all-gather", 0, static_cast<int>(seq % 4), seq, 3, 3.0);
    if (seq < 37) reg.end(id);
    if (seq < 30) reg.end(reg.begin("all-gather", 1, static_cast<int>(seq % 4), seq, 3, 3.0));
  }
  reg.set_status({0, 3, "optimizer", -1});
  reg.set_status({1, 3, "forward", 1});
  const std::string r = report(reg, Clock::now() + std::chrono::seconds(4));
  EXPECT_NE(r.find("CULPRIT: rank 1 (node 0, n0) has not issued collective #30"), std::string::npos);
  EXPECT_NE(r.find("collective #30: issued by ranks [0]; not issued by ranks [1]"), std::string::npos);
}

// The nodes' registries reach the report's writer through the store: a malformed one (or a
// malformed overdue operation) is left out and said so, never a crash of the node writing it.
TEST(StallReport, MalformedRegistriesFromOtherNodesAreLeftOut) {
  OpRegistry reg;
  reg.begin("forward", 0, 1, 0, 4, 3.0);
  reg.set_status({0, 4, "forward", 1});
  const auto now = Clock::now() + std::chrono::seconds(4);
  nlohmann::json op = OpRegistry::op_json(*reg.first_overdue(now), now);
  op["node"] = 0;
  const nlohmann::json good = reg.to_json(now, 0, "n0");
  const std::vector<nlohmann::json> bad = {
      42,
      nlohmann::json::parse(R"({"ranks": "x"})"),
      nlohmann::json::parse(R"({"ranks": [{"rank": "zero"}], "ops": [], "last_seq": {}, "recent": {}})"),
      nlohmann::json::parse(R"({"ranks": [], "ops": [{"kind": 5}], "last_seq": {}, "recent": {}})"),
      nlohmann::json::parse(R"({"ranks": [], "ops": [], "last_seq": {"abc": 1}, "recent": {}})"),
      nlohmann::json::parse(R"({"ranks": [], "ops": [], "last_seq": {}, "recent": {"1": [[1]]}})"),
  };
  for (const auto& b : bad) {
    std::string r;
    ASSERT_NO_THROW(r = stall_report_json(op, {good, b}, {"n0", "n1"})) << b.dump();
    EXPECT_NE(r.find("CULPRIT: rank 0 (node 0, n0): forward of unit 1"), std::string::npos) << r;
    EXPECT_NE(r.find("node 1's registry was malformed"), std::string::npos) << b.dump() << "\n" << r;
  }
  // A malformed overdue operation, and fewer node names than nodes.
  std::string r;
  ASSERT_NO_THROW(r = stall_report_json(nlohmann::json::parse(R"({"kind": 7, "rank": "x"})"), {good, good}, {"n0"}));
  std::printf("%s", r.c_str());
  EXPECT_NE(r.find("STALL: "), std::string::npos);
}
