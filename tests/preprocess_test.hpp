// Shared helpers of the preprocessing tests: a cached tokenizer, temporary directories, file
// writers and whole-directory comparison. Runs from the repository root (reads data/sample/).
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "io/config.hpp"
#include "io/corpus.hpp"
#include "io/shards.hpp"
#include "preprocess/preprocess.hpp"
#include "io/tokenizer.hpp"

namespace xy::test {

namespace fs = std::filesystem;

inline const char* kSampleCorpus = "data/sample/fincorpus_sample.jsonl.gz";

inline std::string make_temp_dir(const char* name) {
  std::string tmpl = (fs::temp_directory_path() / (std::string(name) + ".XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + tmpl);
  return tmpl;
}

// An 8000-piece BPE tokenizer trained on the sample corpus (the sample has ~6,000 distinct
// characters, so the vocabulary cannot be much smaller). Trained once (~3 s) and cached in /tmp
// under a name keyed by the sample's size and time stamp; published with one rename.
inline std::string sample_tokenizer() {
  struct stat st {};
  if (::stat(kSampleCorpus, &st) != 0) throw std::runtime_error("run the tests from the repository root");
  const fs::path cache = fs::temp_directory_path() /
                         ("xy_preprocess_test_tok." + std::to_string(st.st_size) + "." +
                          std::to_string(st.st_mtim.tv_sec));
  const std::string model = (cache / "tok.model").string();
  if (fs::exists(model)) return model;
  const std::string work = make_temp_dir("xy_preprocess_test_train");
  {
    std::ofstream out(work + "/train.txt");
    xy::for_each_document({kSampleCorpus}, "text", [&](const std::string& doc) {
      size_t b = 0;
      while (b < doc.size()) {
        size_t e = doc.find('\n', b);
        if (e == std::string::npos) e = doc.size();
        if (e > b) out.write(doc.data() + b, static_cast<std::streamsize>(e - b)).put('\n');
        b = e + 1;
      }
    }, nullptr);
  }
  xy::Tokenizer::train(work + "/train.txt", work + "/tok", 8000, 2);
  fs::remove(work + "/train.txt");
  std::error_code ec;
  fs::rename(work, cache, ec);
  if (ec) {
    if (fs::exists(model)) {  // another process won
      fs::remove_all(work, ec);
      return model;
    }
    return work + "/tok.model";
  }
  return model;
}

inline std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_text(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

inline void write_gzip(const std::string& path, const std::string& content) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  if (!content.empty())
    ASSERT_EQ(gzwrite(f, content.data(), static_cast<unsigned>(content.size())), static_cast<int>(content.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

inline std::string zstd_bytes(const std::string& content) {
  std::string out(ZSTD_compressBound(content.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), content.data(), content.size(), 3);
  out.resize(n);
  return out;
}

// Every file of a directory (name -> bytes).
inline std::vector<std::pair<std::string, std::string>> dir_contents(const std::string& dir) {
  std::vector<std::pair<std::string, std::string>> v;
  for (const auto& e : fs::directory_iterator(dir))
    v.emplace_back(e.path().filename().string(), read_all(e.path().string()));
  std::sort(v.begin(), v.end());
  return v;
}

// Asserts two output directories hold the same files, byte for byte.
inline void expect_same_dirs(const std::string& a, const std::string& b) {
  const auto x = dir_contents(a), y = dir_contents(b);
  ASSERT_EQ(x.size(), y.size()) << a << " vs " << b;
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(x[i].first, y[i].first);
    EXPECT_TRUE(x[i].second == y[i].second) << x[i].first << " differs between " << a << " and " << b;
  }
}

inline xy::PreprocessOptions base_options(const std::string& tokenizer, const std::string& out,
                                          std::vector<std::string> inputs) {
  xy::PreprocessOptions o;
  o.tokenizer = tokenizer;
  o.output = out;
  o.inputs = std::move(inputs);
  o.progress = "none";
  o.memory_mb = 64;
  return o;
}

inline xy::PreprocessResult run_quiet(const xy::PreprocessOptions& o) {
  std::ostringstream log;
  return xy::preprocess(o, log);
}

// The fixture of preprocess_test.cpp and preprocess_shards_test.cpp: the sample's tokenizer
// (loaded once per suite), a temporary directory per test, and the options, config and token
// stream those tests share.
class PreprocessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tok_path_ = new std::string(sample_tokenizer());
    tok_ = Tokenizer::load(*tok_path_).release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete tok_path_;
    tok_ = nullptr;
    tok_path_ = nullptr;
  }
  void SetUp() override { dir_ = make_temp_dir("xy_preprocess_test"); }
  void TearDown() override { fs::remove_all(dir_); }

  PreprocessOptions opts(const std::string& out, std::vector<std::string> inputs) {
    return base_options(*tok_path_, dir_ + "/" + out, std::move(inputs));
  }

  // A training configuration that reads the shards in `shards` (sequences of 64 tokens).
  Config shards_config(const std::string& shards) const {
    Config cfg;
    cfg.source = "test.toml";
    cfg.data.shards = shards;
    cfg.data.seq_len = 64;
    cfg.data.work_dir = dir_ + "/work";
    return cfg;
  }

  // The whole token stream of a shard directory.
  static std::vector<int32_t> stream(const std::string& dir) {
    auto s = ShardSamples::open(dir, 1, /*verify=*/true);
    std::vector<int32_t> v(static_cast<size_t>(s->manifest().tokens));
    for (int64_t t = 0; t < s->manifest().tokens; ++t) v[static_cast<size_t>(t)] = s->token(t);
    return v;
  }

  inline static std::string* tok_path_ = nullptr;
  inline static Tokenizer* tok_ = nullptr;
  std::string dir_;
};

}  // namespace xy::test
