// Tests the shards `xy-node preprocess` writes as the shard loader (io/shards) and training read
// them: corrupt shards refused, training's verification of CRCs, ids and sizes, the loader's
// order, partition across ranks and resume, training data from data.shards, and the atomic
// publication of each shard file.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "io/atomic_file.hpp"
#include "io/dataset.hpp"
#include "io/shard_format.hpp"
#include "io/shards.hpp"
#include "tests/preprocess_test.hpp"

using namespace xy;
using namespace xy::test;

namespace {

TEST_F(PreprocessTest, CorruptShardsAreRefused) {
  auto o = opts("out", {kSampleCorpus});
  o.shard_tokens = 100000;
  run_quiet(o);
  EXPECT_NO_THROW(ShardSamples::open(o.output, 64, true));
  const std::string f = o.output + "/shard-00001.bin";
  std::string bytes = read_all(f);
  bytes[1000] = static_cast<char>(bytes[1000] ^ 1);
  write_text(f, bytes);
  EXPECT_NO_THROW(ShardSamples::open(o.output, 64, false));  // sizes and headers still agree
  EXPECT_THROW(ShardSamples::open(o.output, 64, true), ShardError);
  write_text(f, bytes.substr(0, bytes.size() - 8));
  try {
    ShardSamples::open(o.output, 64);
    ADD_FAILURE() << "a truncated shard was accepted";
  } catch (const ShardError& e) {
    EXPECT_NE(std::string(e.what()).find("shard-00001.bin"), std::string::npos) << e.what();
  }
}

// Training (prepare_data with data.shards) verifies every shard before the first step: a flipped
// bit within the vocabulary (which would train silently), an id at or above the vocabulary with a
// matching CRC (which ended the first step in "index out of range in self"), and a header whose
// sizes overflow (2^62 tokens passed the size check and ended in bad_alloc) are each refused with
// the shard file and what is wrong.
TEST_F(PreprocessTest, TrainingVerifiesShardsCrcIdsAndSizes) {
  auto o = opts("out", {kSampleCorpus});
  o.shard_tokens = 100000;
  run_quiet(o);
  Config cfg = shards_config(o.output);
  std::ostringstream log;
  ASSERT_NO_THROW(prepare_data(cfg, log));
  const std::string f = o.output + "/shard-00001.bin";
  const std::string good = read_all(f);
  auto expect_refused = [&](const std::string& what, const std::vector<std::string>& parts) {
    try {
      prepare_data(cfg, log);
      ADD_FAILURE() << what << " was accepted for training";
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << what << ": " << msg;
    }
  };
  auto header_of = [](const std::string& b) {
    shard::ShardHeader h;
    std::memcpy(&h, b.data(), sizeof(h));
    return h;
  };
  auto with_header = [](std::string b, const shard::ShardHeader& h) {
    std::memcpy(b.data(), &h, sizeof(h));
    return b;
  };
  auto crc_of = [](const std::string& b) {
    return static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(b.data()) + shard::kHeaderBytes,
                                       static_cast<uInt>(b.size() - shard::kHeaderBytes)));
  };
  const shard::ShardHeader h0 = header_of(good);
  ASSERT_EQ(h0.token_bytes, 2u);
  // 1. Corruption that stays inside the vocabulary: token 100's low bit flipped.
  std::string bytes = good;
  const size_t at = shard::kHeaderBytes + 100 * 2;
  bytes[at] = static_cast<char>(bytes[at] ^ 1);
  uint16_t id = 0;
  std::memcpy(&id, bytes.data() + at, 2);
  ASSERT_LT(id, tok_->vocab_size());
  write_text(f, bytes);
  char want_crc[16];
  std::snprintf(want_crc, sizeof(want_crc), "%08x", static_cast<unsigned>(h0.crc32));
  expect_refused("a flipped bit", {"shard-00001.bin", "CRC-32", want_crc, "test.toml"});
  // 2. An id beyond the vocabulary, its CRC recomputed (as a writer with another tokenizer would).
  bytes = good;
  const uint16_t big = 65535;
  std::memcpy(bytes.data() + at, &big, 2);
  shard::ShardHeader h = h0;
  h.crc32 = crc_of(bytes);
  write_text(f, with_header(bytes, h));
  expect_refused("an id beyond the vocabulary",
                 {"shard-00001.bin", "token id 65535", "byte offset " + std::to_string(at), "vocabulary"});
  write_text(f, good);
  ASSERT_NO_THROW(prepare_data(cfg, log));
  // 3. Shard 0's header and the manifest claim 2^62 uint32 tokens: 2^62 * 4 wraps to 0 in int64,
  // so with documents = (size - 64) / 8 the unchecked size equalled the file's.
  const std::string f0 = o.output + "/shard-00000.bin";
  const std::string good0 = read_all(f0), good_manifest = read_all(o.output + "/manifest.json");
  nlohmann::json m = nlohmann::json::parse(good_manifest);
  const int64_t huge = int64_t{1} << 62;
  m["token_bytes"] = 4;
  m["shard_tokens"] = huge;
  m["shards"] = nlohmann::json::array({m["shards"][0]});
  m["shards"][0]["tokens"] = huge;
  m["counts"]["tokens"] = huge;
  write_text(o.output + "/manifest.json", m.dump(2));
  h = header_of(good0);
  h.token_bytes = 4;
  h.tokens = huge;
  h.documents = static_cast<int64_t>(good0.size() - shard::kHeaderBytes) / 8;
  write_text(f0, with_header(good0, h));
  expect_refused("a header of 2^62 tokens", {"shard-00000.bin", "4611686018427387904", "impossible sizes"});
  // The manifest alone (the header intact): its own checks name it.
  write_text(f0, good0);
  m = nlohmann::json::parse(good_manifest);
  m["shards"][0]["tokens"] = -5;
  write_text(o.output + "/manifest.json", m.dump(2));
  expect_refused("a negative shard size", {"manifest.json", "is corrupt"});
  write_text(o.output + "/manifest.json", good_manifest);
  ASSERT_NO_THROW(prepare_data(cfg, log));
  EXPECT_NE(log.str().find("verified in"), std::string::npos) << log.str();
}

TEST_F(PreprocessTest, LoaderOrderIsDeterministicPartitionedAndResumable) {
  auto o = opts("out", {kSampleCorpus});
  o.shard_tokens = 60000;
  run_quiet(o);
  auto s = ShardSamples::open(o.output, 96);
  const int64_t n = s->size();
  ASSERT_GT(n, 1000);
  std::vector<int64_t> buf(97);
  auto sample_key = [&](int64_t i) {  // the sample's content, so that the test sees the data
    s->copy_sample(i, buf.data());
    return std::vector<int64_t>(buf.begin(), buf.end());
  };
  for (int world : {1, 2, 3, 4}) {
    SampleOrder a(n, world, 7), b(n, world, 7);
    std::set<int64_t> epoch;
    const int64_t per_rank = a.per_rank_per_epoch();
    EXPECT_EQ(per_rank, n / world);  // no rank starved: all get the same count
    for (int r = 0; r < world; ++r)
      for (int64_t p = 0; p < per_rank; ++p) {
        ASSERT_EQ(a.at(r, p), b.at(r, p));
        EXPECT_TRUE(epoch.insert(a.at(r, p)).second) << "sample used twice in one epoch";
      }
    EXPECT_EQ(static_cast<int64_t>(epoch.size()), per_rank * world);
    // Resume: a loader restarted at a saved position reads exactly the rest of the sequence.
    const int64_t saved = per_rank / 3 + 5, horizon = per_rank + 50;  // into the second epoch
    for (int r = 0; r < world; ++r) {
      SampleOrder fresh(n, world, 7);
      std::vector<std::vector<int64_t>> rest, resumed;
      for (int64_t p = saved; p < horizon; ++p) rest.push_back(sample_key(a.at(r, p)));
      for (int64_t p = saved; p < horizon; ++p) resumed.push_back(sample_key(fresh.at(r, p)));
      EXPECT_TRUE(rest == resumed) << "world " << world << " rank " << r;
    }
  }
}

TEST_F(PreprocessTest, TrainingDataComesFromDataShards) {
  auto o = opts("out", {kSampleCorpus});
  o.packing = "llm-code";
  o.seq_len = 64;
  run_quiet(o);
  Config cfg = shards_config(o.output);
  std::ostringstream log;
  const PreparedData d = prepare_data(cfg, log);
  auto s = ShardSamples::open(o.output, 64);
  EXPECT_EQ(d.vocab, tok_->vocab_size());
  EXPECT_EQ(d.tokenizer_path, *tok_path_);
  EXPECT_EQ(d.samples->size(), s->size());
  EXPECT_EQ(d.samples->masked_label(), tok_->eos_id());
  std::vector<int64_t> a(65), b(65);
  d.samples->copy_sample(3, a.data());
  s->copy_sample(3, b.data());
  EXPECT_EQ(a, b);
  // The same tokenizer by content is accepted; another one is refused with both hashes.
  cfg.data.tokenizer = *tok_path_;
  EXPECT_NO_THROW(prepare_data(cfg, log));
  write_text(dir_ + "/other.model", "not the same tokenizer");
  cfg.data.tokenizer = dir_ + "/other.model";
  try {
    prepare_data(cfg, log);
    ADD_FAILURE() << "a different tokenizer was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("is not the tokenizer the shards"), std::string::npos) << e.what();
  }
  // llm-code: a seq_len that cuts across groups is refused.
  cfg.data.tokenizer.clear();
  cfg.data.seq_len = 100;
  EXPECT_THROW(prepare_data(cfg, log), std::runtime_error);
}

// Shards are written piece by piece and published with io/atomic_file.hpp's publish_file_atomic,
// the sequence write_file_atomic (checkpoints, state, manifest) uses too: the whole file appears
// under its name and the temporary is gone; a failed publication names the file and removes
// the temporary instead of leaving it behind.
TEST_F(PreprocessTest, PublishFileAtomicPublishesWholeFilesAndCleansUpOnFailure) {
  const std::string tmp = dir_ + "/piece.bin.tmp", path = dir_ + "/piece.bin";
  int fd = open_exclusive(tmp);
  write_all_fd(fd, "head", 4, tmp);
  write_all_fd(fd, "tail", 4, tmp);
  publish_file_atomic(fd, tmp, path);
  EXPECT_EQ(read_all(path), "headtail");
  EXPECT_FALSE(fs::exists(tmp));

  // The name is taken by a non-empty directory: the rename fails.
  fs::create_directories(dir_ + "/busy/inside");
  const std::string busy_tmp = dir_ + "/busy.tmp";
  fd = open_exclusive(busy_tmp);
  write_all_fd(fd, "x", 1, busy_tmp);
  try {
    publish_file_atomic(fd, busy_tmp, dir_ + "/busy");
    ADD_FAILURE() << "publishing over a non-empty directory succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("busy.tmp"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(busy_tmp));
  EXPECT_TRUE(fs::is_directory(dir_ + "/busy/inside"));
}

}  // namespace
