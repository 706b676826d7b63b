// Tests JSONL corpus reading (plain, gzip, multi-member gzip, bad lines) and the token cache file.
// Runs from the repository root (it reads data/sample/).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/corpus.hpp"

namespace fs = std::filesystem;

namespace {

// Line 1 good; 2 malformed; 3 no "text"; 4 non-string; 5 empty text; 6 blank; 7 not an object;
// 8 good (with an escaped newline); 9 good, no final '\n'.
const char* kLines =
    "{\"text\": \"第一篇文档\", \"meta\": {\"source\": \"test\"}}\n"
    "{\"text\": \"broken\n"
    "{\"meta\": {\"source\": \"no text\"}}\n"
    "{\"text\": 42}\n"
    "{\"text\": \"\"}\n"
    "\n"
    "[1, 2, 3]\n"
    "{\"text\": \"second\\nline\", \"id\": 8}\n"
    "{\"text\": \"last\"}";

const std::vector<std::string> kGoodTexts = {"第一篇文档", "second\nline", "last"};

class CorpusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "xy_corpus_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write_plain(const std::string& name, const std::string& content) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }

  // Writes `parts` as consecutive gzip members of one file (one member when there is one part).
  std::string write_gzip(const std::string& name, const std::vector<std::string>& parts) {
    const std::string path = dir_ + "/" + name;
    bool first = true;
    for (const std::string& part : parts) {
      gzFile f = gzopen(path.c_str(), first ? "wb" : "ab");
      EXPECT_NE(f, nullptr);
      EXPECT_EQ(gzwrite(f, part.data(), static_cast<unsigned>(part.size())), static_cast<int>(part.size()));
      EXPECT_EQ(gzclose(f), Z_OK);
      first = false;
    }
    return path;
  }

  static std::vector<std::string> read_all(const std::vector<std::string>& files, xy::CorpusStats* stats) {
    std::vector<std::string> texts;
    xy::for_each_document(files, "text", [&](const std::string& t) { texts.push_back(t); }, stats);
    return texts;
  }

  static void expect_hand_written_counts(const xy::CorpusStats& stats, const std::string& path) {
    EXPECT_EQ(stats.lines, 9);
    EXPECT_EQ(stats.documents, 3);
    EXPECT_EQ(stats.skipped, 5);  // lines 2, 3, 4, 5, 7; the blank line 6 is neither
    EXPECT_EQ(stats.tokens, 0);
    const std::string prefix = path + ":2: malformed JSON";
    EXPECT_EQ(stats.first_problem.substr(0, prefix.size()), prefix) << stats.first_problem;
  }

  std::string dir_;
};

TEST_F(CorpusTest, PlainJsonlCountsAndSkipsBadLines) {
  const std::string path = write_plain("docs.jsonl", kLines);
  xy::CorpusStats stats;
  EXPECT_EQ(read_all({path}, &stats), kGoodTexts);
  expect_hand_written_counts(stats, path);
}

TEST_F(CorpusTest, GzipJsonlCountsAndSkipsBadLines) {
  const std::string path = write_gzip("docs.jsonl.gz", {kLines});
  xy::CorpusStats stats;
  EXPECT_EQ(read_all({path}, &stats), kGoodTexts);
  expect_hand_written_counts(stats, path);
}

TEST_F(CorpusTest, MultiMemberGzipIsReadWhole) {
  const std::string all = kLines;
  // Two gzip members split in the middle of line 3: the line must come out whole.
  const size_t cut = all.find("{\"text\": 42}") - 7;
  const std::string path = write_gzip("multi.json.gz", {all.substr(0, cut), all.substr(cut)});
  xy::CorpusStats stats;
  EXPECT_EQ(read_all({path}, &stats), kGoodTexts);
  expect_hand_written_counts(stats, path);
}

TEST_F(CorpusTest, ProblemDescriptionsNameTheCause) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"meta\": 1}", ":1: no \"text\" field"},
      {"{\"text\": 42}", ":1: \"text\" is number, not a string"},
      {"{\"text\": null}", ":1: \"text\" is null, not a string"},
      {"{\"text\": \"\"}", ":1: empty \"text\""},
      {"\"just a string\"", ":1: not a JSON object but string"},
      {"{\"text\": \"bad utf-8 \xff\"}", ":1: malformed JSON"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = write_plain("case" + std::to_string(i) + ".jsonl", cases[i].first + "\n");
    xy::CorpusStats stats;
    EXPECT_TRUE(read_all({path}, &stats).empty());
    EXPECT_EQ(stats.skipped, 1);
    const std::string expected = path + cases[i].second;
    EXPECT_EQ(stats.first_problem.substr(0, expected.size()), expected) << stats.first_problem;
  }
}

TEST_F(CorpusTest, CrlfAndOtherFieldNames) {
  const std::string path = write_plain("crlf.jsonl", "{\"body\": \"a\"}\r\n{\"body\": \"b\", \"text\": 1}\r\n");
  std::vector<std::string> texts;
  xy::CorpusStats stats;
  xy::for_each_document({path}, "body", [&](const std::string& t) { texts.push_back(t); }, &stats);
  EXPECT_EQ(texts, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(stats.skipped, 0);
  EXPECT_TRUE(stats.first_problem.empty());
}

TEST_F(CorpusTest, StatsAccumulateOverFilesAndKeepTheFirstProblem) {
  const std::string a = write_plain("a.jsonl", "{\"text\": \"x\"}\n{\"text\": 1}\n");
  const std::string b = write_gzip("b.jsonl.gz", {"{\"nope\": 1}\n{\"text\": \"y\"}\n"});
  xy::CorpusStats stats;
  EXPECT_EQ(read_all({a, b}, &stats), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(stats.lines, 4);
  EXPECT_EQ(stats.documents, 2);
  EXPECT_EQ(stats.skipped, 2);
  EXPECT_EQ(stats.first_problem.rfind(a + ":2: ", 0), 0u) << stats.first_problem;
  read_all({b}, &stats);  // a second call adds to the same stats
  EXPECT_EQ(stats.lines, 6);
  EXPECT_EQ(stats.first_problem.rfind(a + ":2: ", 0), 0u) << stats.first_problem;
}

TEST_F(CorpusTest, NullStatsIsAllowed) {
  const std::string path = write_plain("docs.jsonl", kLines);
  EXPECT_EQ(read_all({path}, nullptr), kGoodTexts);
}

TEST_F(CorpusTest, MissingFileThrowsNamingIt) {
  const std::string missing = dir_ + "/missing.jsonl.gz";
  try {
    read_all({missing}, nullptr);
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
}

TEST_F(CorpusTest, TruncatedGzipThrowsNamingIt) {
  std::string content;
  for (int i = 0; i < 20000; ++i) content += "{\"text\": \"line " + std::to_string(i * 7919) + "\"}\n";
  const std::string path = write_gzip("cut.jsonl.gz", {content});
  fs::resize_file(path, fs::file_size(path) / 2);
  try {
    read_all({path}, nullptr);
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST_F(CorpusTest, SampleCorpusReadsCleanly) {
  // data/sample/README.md: 5,672 documents, 2,062,247 bytes of text (fortunes-zh 2.98). Crosses
  // the 1 MiB read buffer twice, so a line lost or split at a boundary shows here.
  xy::CorpusStats stats;
  int64_t bytes = 0;
  xy::for_each_document({"data/sample/fincorpus_sample.jsonl.gz"}, "text",
                        [&](const std::string& t) { bytes += static_cast<int64_t>(t.size()); }, &stats);
  EXPECT_EQ(stats.documents, 5672);
  EXPECT_EQ(stats.lines, 5672);
  EXPECT_EQ(stats.skipped, 0) << stats.first_problem;
  EXPECT_EQ(bytes, 2062247);
}

TEST_F(CorpusTest, TokenFileRoundTrip) {
  const std::string path = dir_ + "/tokens.bin";
  const std::vector<int32_t> ids = {1, 5, 31999, 0, 2, 17, 1, 2};
  xy::write_token_file(path, ids, 32000);
  EXPECT_EQ(fs::file_size(path), 8u + 8u + 8u + 4u * ids.size());
  int64_t vocab = 0;
  EXPECT_EQ(xy::read_token_file(path, &vocab), ids);
  EXPECT_EQ(vocab, 32000);

  xy::write_token_file(path, {}, 7);  // overwrites; an empty stream is valid
  EXPECT_TRUE(xy::read_token_file(path, &vocab).empty());
  EXPECT_EQ(vocab, 7);
  for (const auto& entry : fs::directory_iterator(dir_))  // no temporary file left behind
    EXPECT_EQ(entry.path().filename(), "tokens.bin");
}

TEST_F(CorpusTest, TokenFileRejectsIdsOutsideVocab) {
  EXPECT_THROW(xy::write_token_file(dir_ + "/t.bin", {1, 2, 100}, 100), std::runtime_error);
  EXPECT_THROW(xy::write_token_file(dir_ + "/t.bin", {-1}, 100), std::runtime_error);
  EXPECT_FALSE(fs::exists(dir_ + "/t.bin"));
}

void expect_read_fails_naming(const std::string& path, const std::string& why) {
  try {
    xy::read_token_file(path, nullptr);
    FAIL() << "expected std::runtime_error for " << path;
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find(why), std::string::npos) << what;
  }
}

TEST_F(CorpusTest, TruncatedTokenFileIsRejected) {
  const std::string path = dir_ + "/tokens.bin";
  xy::write_token_file(path, {1, 2, 3, 4, 5}, 10);
  fs::resize_file(path, fs::file_size(path) - 2);
  expect_read_fails_naming(path, "truncated");
  fs::resize_file(path, 12);  // inside the header
  expect_read_fails_naming(path, "truncated");
}

TEST_F(CorpusTest, TokenFileWithBadMagicOrExtraBytesIsRejected) {
  const std::string path = write_plain("not_tokens.bin", std::string("XYTOK2\0\0", 8) + std::string(16, '\0'));
  expect_read_fails_naming(path, "magic");
  const std::string longer = dir_ + "/longer.bin";
  xy::write_token_file(longer, {1, 2}, 10);
  std::ofstream(longer, std::ios::app | std::ios::binary) << "xx";
  expect_read_fails_naming(longer, "longer");
  expect_read_fails_naming(dir_ + "/absent.bin", "cannot open");
}

TEST(SampleCount, CutsIntoSeqLenPlusOneWindows) {
  EXPECT_EQ(xy::sample_count(0, 4), 0);
  EXPECT_EQ(xy::sample_count(4, 4), 0);
  EXPECT_EQ(xy::sample_count(5, 4), 1);
  EXPECT_EQ(xy::sample_count(9, 4), 2);
  EXPECT_EQ(xy::sample_count(100, 0), 0);
}

}  // namespace
