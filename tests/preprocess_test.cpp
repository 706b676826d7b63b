// Tests `xy-node preprocess` (preprocess/): exact packing against the in-memory tokenizer path,
// determinism across thread counts, every bad-input kind, resume after a stop at several points,
// bounded fds over 1000 inputs, and how inputs expand. The shards as the loader and training read
// them are tested in preprocess_shards_test.cpp.
#include <dirent.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <nlohmann/json.hpp>
#include <chrono>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "io/shard_format.hpp"
#include "io/shards.hpp"
#include "tests/preprocess_test.hpp"

using namespace xy;
using namespace xy::test;

namespace {

TEST_F(PreprocessTest, ConcatEqualsTheInMemoryTokenStream) {
  auto o = opts("out", {kSampleCorpus});
  o.shard_tokens = 40000;  // several shards, documents straddling their boundaries
  o.threads = 2;
  const PreprocessResult r = run_quiet(o);
  CorpusStats st;
  const std::vector<int32_t> want = tokenize_corpus({kSampleCorpus}, "text", *tok_, &st);
  EXPECT_EQ(r.documents, st.documents);
  EXPECT_EQ(r.tokens, static_cast<int64_t>(want.size()));
  EXPECT_EQ(r.shards, (r.tokens + 39999) / 40000);
  EXPECT_TRUE(stream(o.output) == want) << "the shards' token stream differs from tokenize_corpus";

  // The document index: each start is a BOS, and the starts are increasing.
  auto s = ShardSamples::open(o.output, 128);
  const auto m = nlohmann::json::parse(read_all(o.output + "/manifest.json"));
  EXPECT_EQ(m["counts"]["documents"], st.documents);
  EXPECT_EQ(m["token_bytes"], 2);
  EXPECT_EQ(m["inputs"][0]["sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(m["tokenizer"]["sha256"], sha256_file(*tok_path_));
  int64_t docs = 0;
  for (size_t k = 0; k < m["shards"].size(); ++k) {
    const std::string f = read_all(o.output + "/" + m["shards"][k]["file"].get<std::string>());
    const int64_t n = m["shards"][k]["documents"], tokens = m["shards"][k]["tokens"];
    const int64_t table = 64 + (tokens * 2 + 7) / 8 * 8;
    ASSERT_EQ(static_cast<int64_t>(f.size()), table + 8 * n);
    for (int64_t d = 0; d < n; ++d) {
      int64_t start;
      std::memcpy(&start, f.data() + table + 8 * d, 8);
      EXPECT_EQ(s->token(start), tok_->bos_id());
      EXPECT_GE(start, m["shards"][k]["first_token"].get<int64_t>());
      EXPECT_LT(start, m["shards"][k]["first_token"].get<int64_t>() + tokens);
    }
    EXPECT_EQ(m["shards"][k]["first_document"], docs);
    docs += n;
  }
  EXPECT_EQ(docs, st.documents);

  // Samples: exactly TokenSamples over the same stream, including ones straddling shards.
  TokenSamples ref(want, 128, tok_->vocab_size());
  ASSERT_EQ(s->size(), ref.size());
  EXPECT_EQ(s->masked_label(), -1);
  std::vector<int64_t> a(129), b(129);
  for (int64_t i = 0; i < s->size(); ++i) {
    s->copy_sample(i, a.data());
    ref.copy_sample(i, b.data());
    ASSERT_EQ(a, b) << "sample " << i;
  }
}

TEST_F(PreprocessTest, ByteIdenticalWhateverTheThreadCount) {
  std::vector<std::string> dirs;
  for (int threads : {1, 2, 4, 7}) {
    auto o = opts("t" + std::to_string(threads), {kSampleCorpus});
    o.threads = threads;
    o.shard_tokens = 50000;
    o.chunk_bytes = 16 << 10;  // small chunks: many in flight and out of order
    run_quiet(o);
    dirs.push_back(o.output);
  }
  for (size_t i = 1; i < dirs.size(); ++i) expect_same_dirs(dirs[0], dirs[i]);
  // The same for llm-code.
  auto a = opts("llm1", {kSampleCorpus}), b = opts("llm4", {kSampleCorpus});
  for (auto* o : {&a, &b}) {
    o->packing = "llm-code";
    o->seq_len = 64;
    o->shard_tokens = 70000;
  }
  a.threads = 1;
  b.threads = 4;
  run_quiet(a);
  run_quiet(b);
  expect_same_dirs(a.output, b.output);
}

TEST_F(PreprocessTest, LlmCodePadsGroupsOfDocumentsWithEos) {
  auto o = opts("out", {kSampleCorpus});
  o.packing = "llm-code";
  o.seq_len = 64;
  o.group_documents = 1000;
  o.shard_tokens = 30000;
  const PreprocessResult r = run_quiet(o);

  // Expected: per group of 1000 documents, BOS ids EOS each, then EOS up to a multiple of 64.
  std::vector<int32_t> want;
  int64_t docs = 0, pad = 0;
  const int32_t eos = tok_->eos_id();
  auto pad_to = [&]() {
    while (want.size() % 64 != 0) want.push_back(eos), ++pad;
  };
  for_each_document({kSampleCorpus}, "text", [&](const std::string& text) {
    want.push_back(tok_->bos_id());
    const auto ids = tok_->encode(text);
    want.insert(want.end(), ids.begin(), ids.end());
    want.push_back(eos);
    if (++docs % 1000 == 0) pad_to();
  }, nullptr);
  pad_to();
  EXPECT_EQ(r.documents, docs);
  EXPECT_EQ(r.padding, pad);
  EXPECT_GT(pad, 0);
  ASSERT_EQ(want.size() % 64, 0u);
  EXPECT_TRUE(stream(o.output) == want);

  auto s = ShardSamples::open(o.output, 64);
  EXPECT_EQ(s->masked_label(), eos);
  EXPECT_EQ(s->size(), static_cast<int64_t>(want.size()) / 64);
  std::vector<int64_t> last(65);
  s->copy_sample(s->size() - 1, last.data());
  EXPECT_EQ(last[64], eos);  // the label after the stream's end is an EOS pad
  EXPECT_NO_THROW(ShardSamples::open(o.output, 32));  // a divisor keeps samples inside groups
  try {
    ShardSamples::open(o.output, 48);
    ADD_FAILURE() << "seq_len 48 does not divide 64";
  } catch (const ShardError& e) {
    EXPECT_NE(std::string(e.what()).find("valid: 64 or a divisor"), std::string::npos) << e.what();
  }
}

TEST_F(PreprocessTest, PlainGzipMultiMemberAndZstdReadAlike) {
  std::string content;
  for (int i = 0; i < 300; ++i)
    content += "{\"text\": \"第" + std::to_string(i) + "篇：金融市场今天平稳。\", \"meta\": {\"source\": \"t\"}}\n";
  write_text(dir_ + "/a.jsonl", content);
  write_gzip(dir_ + "/b.jsonl.gz", content);
  // Two gzip members in one file.
  write_gzip(dir_ + "/m1.gz", content.substr(0, content.size() / 2 + 7));
  write_gzip(dir_ + "/m2.gz", content.substr(content.size() / 2 + 7));
  write_text(dir_ + "/c.jsonl.gz", read_all(dir_ + "/m1.gz") + read_all(dir_ + "/m2.gz"));
  write_text(dir_ + "/d.jsonl.zst", zstd_bytes(content));
  std::vector<int32_t> first;
  for (const char* f : {"a.jsonl", "b.jsonl.gz", "c.jsonl.gz", "d.jsonl.zst"}) {
    auto o = opts(std::string("out_") + f, {dir_ + "/" + f});
    const auto r = run_quiet(o);
    EXPECT_EQ(r.documents, 300) << f;
    int64_t skipped = 0;
    for (auto n : r.problems) skipped += n;
    EXPECT_EQ(skipped, 0) << f;
    const auto s = stream(o.output);
    if (first.empty()) first = s;
    EXPECT_TRUE(s == first) << f;
  }
}

TEST_F(PreprocessTest, EveryBadInputKindIsCountedAndReported) {
  const std::string good = "{\"text\": \"好的文档\"}\n";
  std::string lines = good;                                   // 1
  lines += "{\"text\": \"broken\n";                           // 2 malformed
  lines += "[1, 2]\n";                                        // 3 not an object: malformed
  lines += "{\"meta\": {}}\n";                                // 4 missing
  lines += "{\"text\": 42}\n";                                // 5 not a string
  lines += "{\"text\": \"bad \xff\xfe utf8\"}\n";             // 6 invalid UTF-8
  lines += "{\"text\": \"\"}\n";                              // 7 empty
  lines += "{\"text\": \"  \\n \"}\n";                        // 8 whitespace only: empty
  lines += "{\"text\": \"" + std::string(300, 'x') + "\"}\n"; // 9 too long (limit 200)
  lines += "\n";                                              // 10 blank: not a problem
  lines += good;                                              // 11
  write_text(dir_ + "/bad.jsonl", lines);
  // A gzip file cut short: its complete lines before the cut are kept.
  std::string many;
  for (int i = 0; i < 2000; ++i) many += "{\"text\": \"行" + std::to_string(i * 7919 % 100003) + "\"}\n";
  write_gzip(dir_ + "/full.gz", many);
  const std::string gz = read_all(dir_ + "/full.gz");
  write_text(dir_ + "/cut.jsonl.gz", gz.substr(0, gz.size() / 2));
  // A zstd file cut short (zstd decodes whole blocks of <= 128 KiB: make several).
  std::string more;
  for (int i = 0; i < 20000; ++i) more += "{\"text\": \"行" + std::to_string(i * 7919 % 100003) + "\"}\n";
  const std::string zs = zstd_bytes(more);
  write_text(dir_ + "/cut.jsonl.zst", zs.substr(0, zs.size() * 2 / 3));

  auto o = opts("out", {dir_ + "/bad.jsonl", dir_ + "/cut.jsonl.gz", dir_ + "/cut.jsonl.zst"});
  o.max_line_bytes = 200;
  o.report_limit = 100;
  const PreprocessResult r = run_quiet(o);
  auto count = [&](Problem p) { return r.problems[static_cast<size_t>(p)]; };
  EXPECT_EQ(count(Problem::kMalformedJson), 2);
  EXPECT_EQ(count(Problem::kMissingField), 1);
  EXPECT_EQ(count(Problem::kNotString), 1);
  EXPECT_EQ(count(Problem::kInvalidUtf8), 1);
  EXPECT_EQ(count(Problem::kEmptyText), 2);
  EXPECT_EQ(count(Problem::kLineTooLong), 1);
  EXPECT_EQ(count(Problem::kTruncatedFile), 2);  // gzip and zstd
  EXPECT_EQ(count(Problem::kCorruptFile), 0);
  const std::string joined = [&] {
    std::string s;
    for (const auto& x : r.reports) s += x + "\n";
    return s;
  }();
  std::cout << joined;
  for (const char* want : {"bad.jsonl:2: malformed_json", "bad.jsonl:3: malformed_json",
                           "bad.jsonl:4: missing_field", "bad.jsonl:5: not_string",
                           "bad.jsonl:6: invalid_utf8", "bad.jsonl:7: empty_text",
                           "bad.jsonl:8: empty_text", "bad.jsonl:9: line_too_long",
                           "cut.jsonl.gz:", ": truncated_file", "cut.jsonl.zst:"})
    EXPECT_NE(joined.find(want), std::string::npos) << want;
  // The good lines of bad.jsonl, and the lines before each cut, are kept; not one more.
  const auto m = nlohmann::json::parse(read_all(o.output + "/manifest.json"));
  EXPECT_EQ(m["inputs"][0]["documents"], 2);
  EXPECT_EQ(m["inputs"][0]["lines"], 11);
  for (int i = 1; i <= 2; ++i) {
    const int64_t docs = m["inputs"][i]["documents"];
    EXPECT_GT(docs, 0) << m["inputs"][i]["path"];
    EXPECT_LT(docs, i == 1 ? 2000 : 20000) << m["inputs"][i]["path"];
  }
  EXPECT_EQ(m["skipped"]["truncated_file"], 2);
  EXPECT_EQ(m["counts"]["skipped"], 10);
  // Corrupt gzip: a bad CRC in the trailer (every line decoded, then the check fails), and
  // garbage in the middle of the data (the lines decoded before it are kept).
  std::string bad_crc = gz;
  bad_crc[gz.size() - 8] = static_cast<char>(bad_crc[gz.size() - 8] ^ 0x5a);
  write_text(dir_ + "/crc.jsonl.gz", bad_crc);
  std::string garbage = gz;
  for (size_t i = gz.size() / 2; i < gz.size() / 2 + 64; ++i) garbage[i] = static_cast<char>(garbage[i] ^ 0x5a);
  write_text(dir_ + "/garbage.jsonl.gz", garbage);
  auto c = opts("outc", {dir_ + "/crc.jsonl.gz", dir_ + "/garbage.jsonl.gz"});
  const PreprocessResult rc = run_quiet(c);
  EXPECT_EQ(rc.problems[static_cast<size_t>(Problem::kCorruptFile)], 2);
  ASSERT_FALSE(rc.reports.empty());
  EXPECT_NE(rc.reports[0].find("crc.jsonl.gz:2001: corrupt_file"), std::string::npos) << rc.reports[0];
  EXPECT_NE(rc.reports.back().find("garbage.jsonl.gz:"), std::string::npos) << rc.reports.back();
  const auto mc = nlohmann::json::parse(read_all(c.output + "/manifest.json"));
  EXPECT_EQ(mc["inputs"][0]["documents"], 2000);
  // The report limit holds.
  auto o2 = opts("out2", o.inputs);
  o2.max_line_bytes = 200;
  o2.report_limit = 3;
  EXPECT_EQ(run_quiet(o2).reports.size(), 3u);
}

TEST_F(PreprocessTest, StrictStopsAtTheFirstBadLineWithFileAndLine) {
  write_text(dir_ + "/a.jsonl", "{\"text\": \"一\"}\n{\"text\": \"二\"}\n{\"text\": 3}\n{\"text\": \"四\"}\n");
  auto o = opts("out", {dir_ + "/a.jsonl"});
  o.strict = true;
  try {
    run_quiet(o);
    ADD_FAILURE() << "--strict did not stop";
  } catch (const PreprocessError& e) {
    EXPECT_NE(std::string(e.what()).find("a.jsonl:3: not_string"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(o.output + "/manifest.json")) << "a failed run must not look complete";
  // A truncated gzip file under --strict is an error too.
  write_gzip(dir_ + "/g.gz", std::string(20000, 'x'));
  const std::string g = read_all(dir_ + "/g.gz");
  write_text(dir_ + "/g.jsonl.gz", g.substr(0, g.size() - 10));
  auto o2 = opts("out2", {dir_ + "/g.jsonl.gz"});
  o2.strict = true;
  o2.max_line_bytes = 1 << 20;
  try {
    run_quiet(o2);
    ADD_FAILURE() << "--strict did not stop at a truncated file";
  } catch (const PreprocessError& e) {
    EXPECT_NE(std::string(e.what()).find("g.jsonl.gz:1: truncated_file"), std::string::npos) << e.what();
  }
}

TEST_F(PreprocessTest, ResumesAfterAStopAtAnyShardWithTheSameOutput) {
  auto ref = opts("ref", {kSampleCorpus});
  ref.shard_tokens = 30000;
  ref.threads = 3;
  ref.chunk_bytes = 8 << 10;  // a resume point after every few documents
  const PreprocessResult full = run_quiet(ref);
  ASSERT_GT(full.shards, 12);
  for (int64_t stop : {int64_t{1}, int64_t{2}, int64_t{7}, full.shards - 1}) {
    auto o = opts("stop" + std::to_string(stop), {kSampleCorpus});
    o.shard_tokens = 30000;
    o.threads = 2;
    o.chunk_bytes = 16 << 10;
    o.stop_after_shards = stop;
    EXPECT_THROW(run_quiet(o), PreprocessError);
    EXPECT_TRUE(fs::exists(o.output + "/" + shard::shard_name(stop - 1)));
    EXPECT_FALSE(fs::exists(o.output + "/" + shard::shard_name(stop + 1)));
    EXPECT_TRUE(fs::exists(o.output + "/preprocess.state"));
    EXPECT_FALSE(fs::exists(o.output + "/manifest.json"));
    EXPECT_THROW(ShardSamples::open(o.output, 16), ShardError);  // not finished: refused
    o.stop_after_shards = 0;
    o.threads = 4;  // a different thread count on resume changes nothing
    const PreprocessResult r = run_quiet(o);
    EXPECT_TRUE(r.resumed);
    EXPECT_EQ(r.tokens, full.tokens);
    expect_same_dirs(ref.output, o.output);
  }
  // Stopped twice, then finished; llm-code keeps its group state across a stop too.
  auto l = opts("lref", {kSampleCorpus});
  l.packing = "llm-code";
  l.seq_len = 128;
  l.group_documents = 300;
  l.shard_tokens = 25000;
  l.chunk_bytes = 32 << 10;
  run_quiet(l);
  auto o = l;
  o.output = dir_ + "/ltwice";
  o.stop_after_shards = 3;
  EXPECT_THROW(run_quiet(o), PreprocessError);
  o.stop_after_shards = 9;
  EXPECT_THROW(run_quiet(o), PreprocessError);
  o.stop_after_shards = 0;
  run_quiet(o);
  expect_same_dirs(l.output, o.output);
  // Complete: a rerun does nothing; other settings on the same directory are refused.
  EXPECT_TRUE(run_quiet(o).already_complete);
  o.seq_len = 256;
  try {
    run_quiet(o);
    ADD_FAILURE() << "different settings were accepted";
  } catch (const PreprocessError& e) {
    EXPECT_NE(std::string(e.what()).find("seq_len differs"), std::string::npos) << e.what();
  }
}

// Open fds of this process, sampled from another thread while the run goes on.
int count_fds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (const dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // the directory's own fd
}

TEST_F(PreprocessTest, OpenFilesStayBoundedOverAThousandInputs) {
  fs::create_directories(dir_ + "/in/sub");
  for (int i = 0; i < 1000; ++i) {
    std::string s;
    for (int j = 0; j < 3; ++j) s += "{\"text\": \"文件" + std::to_string(i) + "第" + std::to_string(j) + "行。\"}\n";
    const std::string name = dir_ + (i % 2 ? "/in/sub/" : "/in/") + "f" + std::to_string(i);
    if (i % 3 == 0) write_gzip(name + ".jsonl.gz", s);
    else if (i % 3 == 1) write_text(name + ".jsonl.zst", zstd_bytes(s));
    else write_text(name + ".jsonl", s);
  }
  const int before = count_fds();
  std::atomic<bool> done{false};
  std::atomic<int> peak{before};
  std::thread sampler([&] {
    while (!done) {
      peak = std::max(peak.load(), count_fds());
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  auto o = opts("out", {dir_ + "/in"});
  o.threads = 4;
  o.shard_tokens = 2000;  // many shards, so shard and state files open and close all the time
  PreprocessResult r;
  try {
    r = run_quiet(o);
  } catch (...) {
    done = true;
    sampler.join();
    throw;
  }
  done = true;
  sampler.join();
  std::cout << "open fds: " << before << " before, peak " << peak << " during a run over 1000 inputs\n";
  EXPECT_EQ(r.documents, 3000);
  EXPECT_GT(r.shards, 5);
  EXPECT_LE(peak - before, kPreprocessMaxFiles);
  EXPECT_LE(peak - before, 4);  // input + shard + state (+ the tokenizer or directory, briefly)
}

TEST_F(PreprocessTest, InputsExpandFromDirectoriesAndGlobsInOrder) {
  fs::create_directories(dir_ + "/d/x");
  for (const char* f : {"d/b.jsonl", "d/a.json.gz", "d/x/c.jsonl.zst", "d/notes.txt", "e1.jsonl", "e2.jsonl"})
    write_text(dir_ + "/" + f, "");
  const auto v = expand_inputs({dir_ + "/e*.jsonl", dir_ + "/d", dir_ + "/e1.jsonl"});
  const std::vector<std::string> want = {dir_ + "/e1.jsonl", dir_ + "/e2.jsonl", dir_ + "/d/a.json.gz",
                                         dir_ + "/d/b.jsonl", dir_ + "/d/x/c.jsonl.zst"};
  EXPECT_EQ(v, want);
  EXPECT_THROW(expand_inputs({dir_ + "/nothing*.jsonl"}), PreprocessError);
  EXPECT_THROW(expand_inputs({dir_ + "/missing.jsonl"}), PreprocessError);
}

}  // namespace
