// Tests xy::Tokenizer: training on the sample corpus, exact round trips, special ids, concurrent
// encoding and load errors. Runs from the repository root (it reads data/sample/).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "io/corpus.hpp"
#include "io/tokenizer.hpp"

namespace fs = std::filesystem;

namespace {

const char* kSampleCorpus = "data/sample/fincorpus_sample.jsonl.gz";

// The sample is Chinese with ~6,200 distinct characters: SentencePiece needs a vocabulary at least
// as large as the characters covering 99.95% of the text plus the byte and special pieces (5,936
// here), so a "small" vocabulary of ~500 is refused (see TrainRefusesTooSmallVocab). 8000 trains
// in ~3 s.
constexpr int64_t kVocab = 8000;
constexpr const char* kCachePrefix = "xy_tokenizer_test_model.";

std::string make_temp_dir(const char* name) {
  std::string tmpl = (fs::temp_directory_path() / (std::string(name) + ".XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + tmpl);
  return tmpl;
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(make_temp_dir("xy_tokenizer_test"));
    // One sentence per line for SentencePiece: every non-blank line of every document.
    text_file_ = new std::string(*dir_ + "/train.txt");
    std::ofstream out(*text_file_);
    xy::CorpusStats stats;
    xy::for_each_document({kSampleCorpus}, "text", [&](const std::string& doc) {
      size_t begin = 0;
      while (begin < doc.size()) {
        size_t end = doc.find('\n', begin);
        if (end == std::string::npos) end = doc.size();
        if (end > begin) out.write(doc.data() + begin, end - begin).put('\n');
        begin = end + 1;
      }
    }, &stats);
    out.close();
    ASSERT_GT(stats.documents, 1000) << "is the working directory the repository root?";

    // ctest runs each test in a process of its own: train once per build of this binary (~3 s)
    // and share the model through a directory keyed by the binary's size and time stamp.
    const std::string cache = cached_model_dir();
    model_ = new std::string(cache + "/tok.model");
    if (!fs::exists(*model_)) {
      xy::Tokenizer::train(*text_file_, *dir_ + "/tok", kVocab, /*threads=*/2);
      // Publish with one rename: a concurrent process either wins or loses, never sees half a model.
      const std::string staging = make_temp_dir("xy_tokenizer_test_staging");
      fs::copy_file(*dir_ + "/tok.model", staging + "/tok.model");
      fs::copy_file(*dir_ + "/tok.vocab", staging + "/tok.vocab");
      std::error_code ec;
      fs::rename(staging, cache, ec);
      if (ec) fs::remove_all(staging, ec);
      if (!fs::exists(*model_)) *model_ = *dir_ + "/tok.model";
      remove_stale_caches(cache);
    }
    tok_ = xy::Tokenizer::load(*model_).release();
  }

  static std::string cached_model_dir() {
    struct stat st {};
    if (::stat("/proc/self/exe", &st) != 0) return *dir_ + "/no-cache";
    return (fs::temp_directory_path() / (std::string(kCachePrefix) + std::to_string(st.st_size) + "." +
                                         std::to_string(st.st_mtim.tv_sec) + "." +
                                         std::to_string(st.st_mtim.tv_nsec)))
        .string();
  }

  // Models cached by earlier builds of this test.
  static void remove_stale_caches(const std::string& keep) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(fs::temp_directory_path(), ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind(kCachePrefix, 0) == 0 && e.path().string() != keep) fs::remove_all(e.path(), ec);
    }
  }

  void SetUp() override { ASSERT_NE(tok_, nullptr) << "training or loading failed in SetUpTestSuite"; }

  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
    if (dir_) fs::remove_all(*dir_);
    delete dir_;
    delete text_file_;
    delete model_;
    dir_ = text_file_ = model_ = nullptr;
  }

  static void expect_round_trip(const std::string& text) {
    const std::vector<int32_t> ids = tok_->encode(text);
    for (int32_t id : ids) {
      ASSERT_GE(id, 0) << text;
      ASSERT_LT(id, tok_->vocab_size()) << text;
    }
    EXPECT_EQ(tok_->decode(ids), text) << "ids: " << ids.size();
  }

  static std::string* dir_;
  static std::string* text_file_;
  static std::string* model_;
  static xy::Tokenizer* tok_;
};

std::string* TokenizerTest::dir_ = nullptr;
std::string* TokenizerTest::text_file_ = nullptr;
std::string* TokenizerTest::model_ = nullptr;
xy::Tokenizer* TokenizerTest::tok_ = nullptr;

TEST_F(TokenizerTest, VocabAndSpecialIdsAreLlamaLike) {
  EXPECT_EQ(tok_->vocab_size(), kVocab);
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_EQ(tok_->path(), *model_);
  EXPECT_TRUE(fs::exists(model_->substr(0, model_->size() - 6) + ".vocab"));
}

TEST_F(TokenizerTest, RoundTripChinese) { expect_round_trip("床前明月光，疑是地上霜。举头望明月，低头思故乡。"); }

TEST_F(TokenizerTest, RoundTripEnglish) {
  expect_round_trip("The quick brown fox jumps over the lazy dog. Debian is a free operating system!");
}

TEST_F(TokenizerTest, RoundTripMixed) {
  expect_round_trip("在 Debian 这种规模的项目中，使用 apt-get install 安装 fortunes-zh（GPL-3+）。");
}

TEST_F(TokenizerTest, RoundTripDigits) { expect_round_trip("2024年11月27日，收益率3.1415%，净值 1234567890 元"); }

TEST_F(TokenizerTest, RoundTripEmojiUsesByteFallback) {
  const std::string emoji = "😀";  // never in the training text: no piece, so its 4 UTF-8 bytes
  const std::vector<int32_t> ids = tok_->encode(emoji);
  EXPECT_GE(ids.size(), 4u);
  expect_round_trip(emoji);
  expect_round_trip("上涨 📈 下跌 📉 🚀🚀🚀");
}

TEST_F(TokenizerTest, RoundTripWhitespaceAndEdgeCases) {
  expect_round_trip("");
  expect_round_trip(" leading space");
  expect_round_trip("two  spaces\tand a tab\nand a newline ");
  expect_round_trip("全角，标点！？（）");
}

TEST_F(TokenizerTest, RoundTripLongInputs) {
  // More ids than the first guess of the buffers (len/2 ids, 4 bytes per id): exercises the retry.
  std::string emojis;
  for (int i = 0; i < 500; ++i) emojis += "😀";
  expect_round_trip(emojis);
  std::string poems;
  for (int i = 0; i < 200; ++i) poems += "劝君莫惜金缕衣，劝君惜取少年时。花开堪折直须折，莫待无花空折枝。\n";
  expect_round_trip(poems);
}

TEST_F(TokenizerTest, DigitsAreSplit) {
  const std::vector<int32_t> ids = tok_->encode("20241127");
  ASSERT_GE(ids.size(), 8u);
  for (int32_t id : ids) {
    const std::string piece = tok_->decode({id});
    int digits = 0;
    for (char c : piece) digits += (c >= '0' && c <= '9');
    EXPECT_LE(digits, 1) << "piece '" << piece << "'";
  }
}

TEST_F(TokenizerTest, DecodeRejectsIdOutsideVocab) {
  EXPECT_THROW(tok_->decode({5, static_cast<int32_t>(kVocab)}), xy::TokenizerError);
  EXPECT_THROW(tok_->decode({-1}), xy::TokenizerError);
}

TEST_F(TokenizerTest, ConcurrentEncodeMatchesSerial) {
  std::vector<std::string> docs;
  xy::for_each_document({kSampleCorpus}, "text", [&](const std::string& d) {
    if (docs.size() < 400) docs.push_back(d);
  }, nullptr);
  ASSERT_EQ(docs.size(), 400u);
  std::vector<std::vector<int32_t>> expected;
  for (const auto& d : docs) expected.push_back(tok_->encode(d));

  constexpr int kThreads = 4;
  std::vector<std::vector<std::vector<int32_t>>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep) {
        got[t].clear();
        // Each thread starts at a different document so that the calls overlap differently.
        for (size_t i = 0; i < docs.size(); ++i) got[t].push_back(tok_->encode(docs[(i + t * 97) % docs.size()]));
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(got[t].size(), docs.size());
    for (size_t i = 0; i < docs.size(); ++i)
      ASSERT_EQ(got[t][i], expected[(i + t * 97) % docs.size()]) << "thread " << t << " doc " << i;
  }
}

TEST_F(TokenizerTest, TokenizeCorpusWrapsDocumentsInBosEos) {
  xy::CorpusStats stats;
  const std::vector<int32_t> ids = xy::tokenize_corpus({kSampleCorpus}, "text", *tok_, &stats);
  EXPECT_EQ(stats.skipped, 0);
  EXPECT_GT(stats.documents, 5000);
  EXPECT_EQ(stats.tokens, static_cast<int64_t>(ids.size()));
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  int64_t bos = 0, eos = 0;
  for (int32_t id : ids) {
    bos += id == 1;
    eos += id == 2;
    ASSERT_LT(id, kVocab);
  }
  EXPECT_EQ(bos, stats.documents);
  EXPECT_EQ(eos, stats.documents);
  std::cout << "sample corpus: " << stats.documents << " documents, " << ids.size()
            << " tokens with a vocab of " << kVocab << "\n";
}

TEST_F(TokenizerTest, TrainRefusesTooSmallVocab) {
  try {
    xy::Tokenizer::train(*text_file_, *dir_ + "/small", 500);
    FAIL() << "expected a TokenizerError";
  } catch (const xy::TokenizerError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(*text_file_), std::string::npos) << what;
    EXPECT_NE(what.find("character_coverage"), std::string::npos) << what;  // SentencePiece's advice
  }
}

TEST_F(TokenizerTest, TrainMissingInputNamesIt) {
  const std::string missing = *dir_ + "/no such input.txt";
  try {
    xy::Tokenizer::train(missing, *dir_ + "/x", 1000);
    FAIL() << "expected a TokenizerError";
  } catch (const xy::TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
}

TEST_F(TokenizerTest, LoadMissingFileNamesIt) {
  const std::string missing = *dir_ + "/missing.model";
  try {
    xy::Tokenizer::load(missing);
    FAIL() << "expected a TokenizerError";
  } catch (const xy::TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
}

TEST_F(TokenizerTest, LoadGarbageFileNamesIt) {
  const std::string garbage = *dir_ + "/garbage.model";
  std::ofstream(garbage) << "this is not a SentencePiece model\n\x01\x02\x03\xff";
  try {
    xy::Tokenizer::load(garbage);
    FAIL() << "expected a TokenizerError";
  } catch (const xy::TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find(garbage), std::string::npos) << e.what();
  }
}

TEST_F(TokenizerTest, TwoModelsLoadedAtOnce) {
  auto again = xy::Tokenizer::load(*model_);
  const std::string text = "同一个模型加载两次 loads twice";
  EXPECT_EQ(again->encode(text), tok_->encode(text));
}

}  // namespace
