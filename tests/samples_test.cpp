// The sample order: deterministic, a permutation per epoch, partitioned across ranks.
#include <gtest/gtest.h>

#include <set>

#include "io/samples.hpp"

using namespace xy;

TEST(SampleOrder, DeterministicAndPartitioned) {
  for (int world : {1, 2, 3, 4}) {
    SampleOrder a(103, world, 5), b(103, world, 5);
    std::multiset<int64_t> seen;
    const int64_t per_rank = a.per_rank_per_epoch();
    EXPECT_EQ(per_rank, 103 / world);
    for (int r = 0; r < world; ++r)
      for (int64_t i = 0; i < per_rank; ++i) {
        EXPECT_EQ(a.at(r, i), b.at(r, i));
        seen.insert(a.at(r, i));
      }
    // One epoch: every sample at most once, and all but the remainder used.
    EXPECT_EQ(seen.size(), static_cast<size_t>(per_rank * world));
    EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), seen.size());
  }
}

TEST(SampleOrder, EpochsDifferAndSeedsDiffer) {
  SampleOrder a(50, 1, 1), c(50, 1, 2);
  int same_epoch = 0, same_seed = 0;
  for (int64_t i = 0; i < 50; ++i) {
    same_epoch += a.at(0, i) == a.at(0, i + 50);
    same_seed += a.at(0, i) == c.at(0, i);
  }
  EXPECT_LT(same_epoch, 10);
  EXPECT_LT(same_seed, 10);
}

TEST(SampleOrder, TooFewSamplesIsAClearError) {
  try {
    SampleOrder o(2, 4, 1);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than the 4 data-parallel ranks"), std::string::npos);
  }
}

TEST(SampleSource, OverlappingWindows) {
  TokenSamples s({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 3, 10);
  EXPECT_EQ(s.size(), 3);
  int64_t out[4];
  s.copy_sample(2, out);
  EXPECT_EQ(out[0], 6);
  EXPECT_EQ(out[3], 9);
}
