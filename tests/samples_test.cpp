// The sample order: deterministic, a permutation per epoch, partitioned across ranks.
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <set>

#include "io/batch_split.hpp"
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

// Per-rank counts (mixed GPUs). The reference is the one-rank order, whose stream position e is
// the global stream's: with 120 samples every epoch below is the whole permutation.
TEST(SampleOrder, EqualCountsAreTheOneRankStreamDealtByRank) {
  const SampleOrder one(120, 1, 9);
  for (int world : {1, 2, 3, 4})
    for (int64_t c : {1, 3}) {
      const SampleOrder o(120, std::vector<int64_t>(world, c), 9);
      EXPECT_EQ(o.per_rank_per_epoch(), 120 / world);
      for (int r = 0; r < world; ++r)
        for (int64_t pos = 0; pos < 300; ++pos)  // two and a half epochs
          ASSERT_EQ(o.at(r, pos), one.at(0, pos * world + r)) << "world " << world << " rank " << r << " pos " << pos;
    }
}

TEST(SampleOrder, UnequalCountsPartitionEachStepsBlock) {
  // Micro-batches 3 and 1: step s of the two ranks is step s of one rank with 4, dealt
  // round-robin (rank 0 takes block offsets 0, 2, 3; rank 1 takes 1).
  const SampleOrder one(120, std::vector<int64_t>{4}, 9), two(120, std::vector<int64_t>{3, 1}, 9);
  EXPECT_EQ(two.per_rank_per_epoch(0), 90);
  EXPECT_EQ(two.per_rank_per_epoch(1), 30);
  for (int64_t s = 0; s < 75; ++s) {  // two and a half epochs
    EXPECT_EQ(two.at(0, 3 * s), one.at(0, 4 * s)) << "step " << s;
    EXPECT_EQ(two.at(1, s), one.at(0, 4 * s + 1)) << "step " << s;
    EXPECT_EQ(two.at(0, 3 * s + 1), one.at(0, 4 * s + 2)) << "step " << s;
    EXPECT_EQ(two.at(0, 3 * s + 2), one.at(0, 4 * s + 3)) << "step " << s;
  }
  // Three ranks with 3, 1, 2 (T = 6) over 103 samples: an epoch is 102, each sample at most once.
  const SampleOrder three(103, std::vector<int64_t>{3, 1, 2}, 4);
  const std::vector<int64_t> counts = {3, 1, 2};
  std::multiset<int64_t> seen;
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(three.per_rank_per_epoch(r), 17 * counts[r]);
    for (int64_t i = 0; i < three.per_rank_per_epoch(r); ++i) seen.insert(three.at(r, i));
  }
  EXPECT_EQ(seen.size(), 102u);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 102u);
  // The next epoch starts at each rank's 17th step: a fresh permutation, not the remainder.
  std::set<int64_t> second;
  for (int r = 0; r < 3; ++r)
    for (int64_t i = 0; i < three.per_rank_per_epoch(r); ++i)
      second.insert(three.at(r, three.per_rank_per_epoch(r) + i));
  EXPECT_EQ(second.size(), 102u);
}

TEST(SampleOrder, UnequalCountsNeedOneStepOfSamples) {
  try {
    SampleOrder o(5, std::vector<int64_t>{3, 3, 1}, 1);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than the 7 of one step"), std::string::npos) << e.what();
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

// eval.holdout: documents (tokens 3 + d, each ending with EOS = 2, lengths 1..40) split so that no
// document has tokens in both a training and a held-out sample; straddlers are dropped; about the
// asked fraction of documents is held out; the split is the same every time.
TEST(DocumentSplit, NoDocumentIsInBothSides) {
  std::vector<int32_t> tokens;
  std::vector<int64_t> doc_of;  // per position; the EOS belongs to its document
  const int64_t docs = 2000;
  for (int64_t d = 0; d < docs; ++d) {
    const int64_t n = 1 + (d * 7919) % 40;
    for (int64_t k = 0; k < n; ++k) tokens.push_back(static_cast<int32_t>(3 + d)), doc_of.push_back(d);
    tokens.push_back(2), doc_of.push_back(d);
  }
  const int64_t len = 8;
  auto all = std::make_shared<TokenSamples>(tokens, len, 3 + docs);
  const DocumentSplit s = split_by_document(all, 2, 0.1, 42);
  // The documents the samples cover (the stream's tail after the last whole sample is not one).
  EXPECT_GT(s.documents, docs - 10);
  EXPECT_LE(s.documents, docs + 1);
  EXPECT_EQ(s.train->size() + s.heldout->size() + s.dropped_samples, all->size());
  std::vector<int> side(docs + 1, 0);  // 1 train, 2 held out
  std::vector<int64_t> buf(len + 1);
  auto mark = [&](const SampleSource& src, int which) {
    for (int64_t i = 0; i < src.size(); ++i) {
      src.copy_sample(i, buf.data());
      for (int64_t k = 0; k <= len; ++k) {
        if (buf[k] == 2) continue;  // an EOS: its document is named by its neighbours
        const int64_t d = buf[k] - 3;
        EXPECT_NE(side[d], 3 - which) << "document " << d << " is on both sides";
        side[d] = which;
      }
    }
  };
  mark(*s.train, 1);
  mark(*s.heldout, 2);
  const double frac = static_cast<double>(s.held_documents) / static_cast<double>(s.documents);
  std::printf("held out %lld of %lld documents (%.3f), %lld/%lld samples train/held out, %lld dropped\n",
              static_cast<long long>(s.held_documents), static_cast<long long>(s.documents), frac,
              static_cast<long long>(s.train->size()), static_cast<long long>(s.heldout->size()),
              static_cast<long long>(s.dropped_samples));
  EXPECT_GT(frac, 0.07);
  EXPECT_LT(frac, 0.13);
  EXPECT_GT(s.heldout->size(), 0);
  const DocumentSplit again = split_by_document(all, 2, 0.1, 42);
  EXPECT_EQ(again.heldout->size(), s.heldout->size());
  EXPECT_EQ(again.held_documents, s.held_documents);
  const DocumentSplit other = split_by_document(all, 2, 0.1, 43);
  EXPECT_NE(other.held_documents, s.held_documents) << "the seed chooses the documents";
}

// Mixed GPUs: the proposed per-node micro-batches keep the samples per step and balance compute.
TEST(BatchSplit, EqualSpeedsEvenOut) {
  const std::vector<NodeSplit> nodes = {{1, 3, 1, 0.01}, {1, 1, 1, 0.01}};
  EXPECT_EQ(balanced_micro_batches(nodes), (std::vector<int64_t>{2, 2}));
  const std::string line = split_proposal(nodes);
  EXPECT_NE(line.find("topology.nodes[0].micro_batch = 2, topology.nodes[1].micro_batch = 2 (same 4 "
                      "samples per step; predicted step compute 0.02 s instead of 0.03 s)"),
            std::string::npos) << line;
  // Already balanced, one node, or no measurement: nothing to propose.
  EXPECT_EQ(split_proposal({{1, 2, 1, 0.01}, {1, 2, 1, 0.01}}), "");
  EXPECT_EQ(split_proposal({{1, 3, 1, 0.01}}), "");
  EXPECT_EQ(split_proposal({{1, 3, 1, 0.01}, {1, 1, 1, 0.0}}), "");
}

// Against every split (brute force): the same samples per step, and the smallest slowest-node
// compute among all splits of micro-batches >= 1.
TEST(BatchSplit, MatchesTheBestOfEverySplit) {
  std::mt19937 rng(3);
  int compared = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const int count = 2 + static_cast<int>(rng() % 2);
    std::vector<NodeSplit> nodes(count);
    int64_t samples = 0;
    for (NodeSplit& n : nodes) {
      n.devices = 1 + static_cast<int>(rng() % 3);
      n.grad_accum = 1 + static_cast<int64_t>(rng() % 2);
      n.micro_batch = 1 + static_cast<int64_t>(rng() % 6);
      n.seconds_per_sample = 0.01 * (1 + rng() % 50);
      samples += n.devices * n.micro_batch * n.grad_accum;
    }
    double best = -1;
    std::vector<int64_t> mb(count, 1);
    std::function<void(int, int64_t)> visit = [&](int i, int64_t left) {
      if (i == count) {
        if (left == 0 && (best < 0 || step_compute(nodes, mb) < best)) best = step_compute(nodes, mb);
        return;
      }
      const int64_t unit = nodes[i].devices * nodes[i].grad_accum;
      for (mb[i] = 1; mb[i] * unit <= left; ++mb[i]) visit(i + 1, left - mb[i] * unit);
    };
    visit(0, samples);
    const std::vector<int64_t> got = balanced_micro_batches(nodes);
    ASSERT_FALSE(got.empty()) << "trial " << trial << ": the current split is one";
    int64_t total = 0;
    for (int i = 0; i < count; ++i) total += nodes[i].devices * got[i] * nodes[i].grad_accum;
    EXPECT_EQ(total, samples) << "trial " << trial;
    EXPECT_NEAR(step_compute(nodes, got), best, 1e-12) << "trial " << trial;
    ++compared;
  }
  EXPECT_EQ(compared, 400);
}
