// The Gloo communicator's reduce-scatter (comm/gloo_reduce_scatter.hpp) against a sum in double
// of every rank's input: fp32 and fp64 to their summation error, 16-bit to one rounding of the sum
// (a ring forwarding rounded partial sums would be off by up to world - 1 roundings); bitwise the
// same on repeated runs with other collectives in flight around it; one rank a plain copy; a rank
// that never joins is an error naming the operation, without a backtrace.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "comm/comm.hpp"

using namespace xy;

namespace {

// Rank r's gradient-like input: mixed signs and magnitudes (seeded per rank and round).
at::Tensor input(int rank, int64_t numel, at::ScalarType t, int round = 0) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + 17 * rank + 131 * round);
  at::Tensor x = at::randn({numel}, gen, at::TensorOptions().dtype(at::kDouble));
  x.mul_(at::exp(at::randn({numel}, gen, at::TensorOptions().dtype(at::kDouble))));
  return x.to(t);
}

// Issues one reduce-scatter on every rank (all from this thread: the operations are asynchronous),
// then waits for them; returns each rank's shard.
std::vector<at::Tensor> reduce_scatter(const std::vector<std::shared_ptr<Comm>>& comms,
                                       const std::vector<at::Tensor>& fulls, at::ScalarType shard_type) {
  const int world = static_cast<int>(comms.size());
  const int64_t n = fulls[0].numel() / world;
  std::vector<at::Tensor> shards;
  std::vector<std::unique_ptr<CommOp>> ops;
  for (int r = 0; r < world; ++r) {
    shards.push_back(at::empty({n}, at::TensorOptions().dtype(shard_type)));
    ops.push_back(comms[r]->reduce_scatter(fulls[r].clone(), shards[r]));
  }
  for (auto& op : ops) op->wait();
  return shards;
}

double ulp_bits(at::ScalarType t) {
  return t == at::kBFloat16 ? 8 : t == at::kHalf ? 11 : t == at::kFloat ? 24 : 53;
}

TEST(GlooReduceScatter, EqualsTheSumToItsPrecision) {
  const int64_t n = 1001;  // per rank: odd, not a multiple of anything
  for (int world : {1, 2, 3, 4}) {
    auto comms = make_local_gloo_comms(world, "127.0.0.1", 30);
    for (at::ScalarType t : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf}) {
      std::vector<at::Tensor> fulls;
      for (int r = 0; r < world; ++r) fulls.push_back(input(r, n * world, t));
      const auto shards = reduce_scatter(comms, fulls, t);
      double worst = 0;  // the error over its allowance, at most 1
      for (int r = 0; r < world; ++r) {
        at::Tensor exact = at::zeros({n}, at::kDouble), mass = at::zeros({n}, at::kDouble);
        for (int q = 0; q < world; ++q) {
          const at::Tensor x = fulls[q].narrow(0, r * n, n).to(at::kDouble);
          exact += x;
          mass += x.abs();
        }
        // Summation in the accumulator (fp32, or fp64 for fp64): (world - 1) adds, each within
        // half an ulp of its partial sum; a 16-bit result adds one rounding to nearest.
        const double acc_eps = std::ldexp(1.0, t == at::kDouble ? -53 : -24);
        at::Tensor allowed = mass * (world - 1) * acc_eps * 1.0001 + 1e-300;
        if (t == at::kBFloat16 || t == at::kHalf)
          allowed += exact.abs() * std::ldexp(1.0, -static_cast<int>(ulp_bits(t))) * 1.0001 +
                     (t == at::kHalf ? std::ldexp(1.0, -25) : 0);  // fp16's subnormal spacing
        const at::Tensor err = (shards[r].to(at::kDouble) - exact).abs();
        worst = std::max(worst, (err / allowed).max().item<double>());
        if (world == 1) EXPECT_TRUE(shards[r].equal(fulls[r])) << "one rank: a copy";
      }
      std::printf("world %d, %s: largest error %.3f of its allowance\n", world,
                  c10::toString(t), worst);
      EXPECT_LE(worst, 1.0) << "world " << world << ", " << c10::toString(t);
    }
  }
}

// A 16-bit gradient reduced into an fp32 shard is not rounded at all (the fp32 sum).
TEST(GlooReduceScatter, Bf16IntoFp32ShardKeepsTheFp32Sum) {
  const int world = 3;
  const int64_t n = 257;
  auto comms = make_local_gloo_comms(world, "127.0.0.1", 30);
  std::vector<at::Tensor> fulls;
  for (int r = 0; r < world; ++r) fulls.push_back(input(r, n * world, at::kBFloat16));
  const auto shards = reduce_scatter(comms, fulls, at::kFloat);
  double worst = 0;
  for (int r = 0; r < world; ++r) {
    at::Tensor exact = at::zeros({n}, at::kDouble), mass = at::zeros({n}, at::kDouble);
    for (int q = 0; q < world; ++q) {
      exact += fulls[q].narrow(0, r * n, n).to(at::kDouble);
      mass += fulls[q].narrow(0, r * n, n).to(at::kDouble).abs();
    }
    worst = std::max(worst, ((shards[r].to(at::kDouble) - exact).abs() /
                             (mass * (world - 1) * std::ldexp(1.0, -24) + 1e-300))
                                .max()
                                .item<double>());
  }
  std::printf("bf16 into fp32, world 3: largest error %.3f of fp32 summation's\n", worst);
  EXPECT_LE(worst, 1.0001);
}

// The same inputs give the same bits every time, whatever else is in flight: several
// reduce-scatters and all-gathers issued back to back before any is waited for.
TEST(GlooReduceScatter, DeterministicWithOtherCollectivesInFlight) {
  const int world = 3;
  const int64_t n = 4099;
  auto comms = make_local_gloo_comms(world, "127.0.0.1", 30);
  std::vector<std::vector<at::Tensor>> first;  // per round, per rank
  for (int run = 0; run < 3; ++run) {
    std::vector<std::vector<at::Tensor>> shards(4), gathered(4);
    std::vector<std::unique_ptr<CommOp>> ops;
    for (int round = 0; round < 4; ++round) {
      for (int r = 0; r < world; ++r) {
        shards[round].push_back(at::empty({n}, at::kBFloat16));
        ops.push_back(comms[r]->reduce_scatter(input(r, n * world, at::kBFloat16, round),
                                               shards[round][r]));
      }
      for (int r = 0; r < world; ++r) {  // an all-gather between them, of another size each run
        const int64_t m = 1000 + 777 * run;
        gathered[round].push_back(at::empty({m * world}, at::kBFloat16));
        ops.push_back(comms[r]->all_gather(at::full({m}, r + 0.5, at::kBFloat16), gathered[round][r]));
      }
    }
    for (auto& op : ops) op->wait();
    for (int round = 0; round < 4; ++round)
      for (int r = 0; r < world; ++r)
        EXPECT_TRUE(gathered[round][r].narrow(0, r * (1000 + 777 * run), 1).item<float>() == r + 0.5f);
    if (run == 0) {
      first = shards;
      continue;
    }
    int64_t differ = 0;
    for (int round = 0; round < 4; ++round)
      for (int r = 0; r < world; ++r) differ += (first[round][r] != shards[round][r]).sum().item<int64_t>();
    std::printf("run %d: %lld elements differ from the first run's\n", run, static_cast<long long>(differ));
    EXPECT_EQ(differ, 0);
  }
}

// A rank that never joins: the others' wait() fails at the timeout, naming the operation, with no
// c10 backtrace in the message.
TEST(GlooReduceScatter, ARankThatNeverJoinsIsAnErrorNamingTheOperation) {
  auto comms = make_local_gloo_comms(2, "127.0.0.1", 1);
  at::Tensor shard = at::empty({8}, at::kFloat);
  auto op = comms[0]->reduce_scatter(at::ones({16}, at::kFloat), shard);
  std::string msg;
  try {
    op->wait();
  } catch (const std::runtime_error& e) {
    msg = e.what();
  }
  std::printf("the error: %s\n", msg.c_str());
  EXPECT_EQ(msg.rfind("gloo reduce-scatter #1 failed: ", 0), 0u) << msg;
  EXPECT_EQ(msg.find("frame #"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_THROW(comms[1]->reduce_scatter(at::ones({15}, at::kFloat), shard), std::invalid_argument);
}

}  // namespace
