// safetensors reader/writer: round trips (single, sharded, every dtype), and one test per kind of
// malformed input asserting the exact error it produces.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/safetensors.hpp"

using namespace xy::st;
namespace fs = std::filesystem;

namespace {

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("xy_safetensors_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes raw bytes: an 8-byte little-endian length (declared, or the header's own), the header
  // and `data_bytes` bytes of data.
  std::string raw(const std::string& name, const std::string& header, size_t data_bytes,
                  int64_t declared = -1) {
    const uint64_t n = declared >= 0 ? static_cast<uint64_t>(declared) : header.size();
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    bytes += header;
    bytes.append(data_bytes, '\x01');
    std::ofstream(path(name), std::ios::binary) << bytes;
    return path(name);
  }

  // The message of the SafetensorsError that opening `p` throws ("" when none is thrown).
  static std::string open_error(const std::string& p) {
    try {
      Reader::open(p);
    } catch (const SafetensorsError& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

}  // namespace

TEST_F(Safetensors, RoundTripEveryDtypeScalarsAndEmptyTensors) {
  std::vector<float> f32 = {1.5f, -2.25f, 3e-8f, 1e30f, 0.f, -0.f};
  std::vector<uint16_t> bf16 = {0x3f80, 0xc000, 0x7f80};
  std::vector<uint16_t> f16 = {0x3c00, 0xfbff};
  std::vector<int64_t> i64 = {-(int64_t{1} << 62), 7};
  std::vector<double> f64 = {3.141592653589793};
  std::vector<TensorToWrite> ts = {
      {"a.f32", DType::kF32, {2, 3}, f32.data(), {}},
      {"b.bf16", DType::kBF16, {3}, bf16.data(), {}},
      {"c.f16", DType::kF16, {1, 2}, f16.data(), {}},
      {"d.i64", DType::kI64, {2}, i64.data(), {}},
      {"e.scalar", DType::kF64, {}, f64.data(), {}},
      {"f.empty", DType::kF32, {0, 4}, nullptr, {}},
  };
  // One tensor through fill (the streaming path).
  ts.push_back({"g.filled", DType::kU8, {5}, nullptr, [](void* dst) {
                  for (int i = 0; i < 5; ++i) static_cast<uint8_t*>(dst)[i] = static_cast<uint8_t>(10 + i);
                }});
  write_file(path("x.safetensors"), ts, {{"format", "pt"}});

  // The header is padded with spaces to a multiple of 8 and starts with '{'.
  std::ifstream in(path("x.safetensors"), std::ios::binary);
  uint8_t len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(in.get(), '{');

  Reader r = Reader::open(path("x.safetensors"));
  EXPECT_EQ(r.names().size(), ts.size());
  EXPECT_EQ(r.files()[0]->header().metadata.at("format"), "pt");
  for (const auto& t : ts) {
    TensorRef ref = r.get(t.name);
    EXPECT_EQ(ref.info->dtype, t.dtype) << t.name;
    EXPECT_EQ(ref.info->shape, t.shape) << t.name;
    ASSERT_EQ(ref.info->nbytes(), t.nbytes()) << t.name;
    if (t.data) EXPECT_EQ(std::memcmp(ref.data, t.data, t.nbytes()), 0) << t.name;
  }
  EXPECT_EQ(r.get("g.filled").data[4], 14);
  EXPECT_EQ(r.get("e.scalar").info->numel(), 1);
  std::printf("round trip: %zu tensors, header %llu bytes, bytes identical\n", ts.size(),
              static_cast<unsigned long long>(n));
}

TEST_F(Safetensors, ShardedWriteAndReadWithIndex) {
  // Five tensors of 100 bytes, at most 250 bytes a shard: shards of 2, 2, 1 tensors; a 300-byte
  // tensor gets a shard of its own.
  std::vector<std::vector<float>> data;
  std::vector<TensorToWrite> ts;
  for (int i = 0; i < 5; ++i) data.emplace_back(25, static_cast<float>(i));
  data.emplace_back(75, 9.f);
  for (int i = 0; i < 6; ++i)
    ts.push_back({"t" + std::to_string(i), DType::kF32, {static_cast<int64_t>(data[i].size())},
                  data[i].data(), {}});
  std::swap(ts[2], ts[5]);  // t5 (300 bytes) third
  uint64_t last_done = 0, total = 0;
  const auto names = write_sharded(dir_.string(), ts, 250, {{"format", "pt"}},
                                   [&](uint64_t d, uint64_t t) { last_done = d; total = t; });
  const std::vector<std::string> expect = {
      "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
      "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors",
      "model.safetensors.index.json"};
  EXPECT_EQ(names, expect);
  EXPECT_EQ(last_done, 800u);
  EXPECT_EQ(total, 800u);

  Reader r = Reader::open(dir_.string());  // the directory: the index is found
  EXPECT_EQ(r.files().size(), 4u);
  EXPECT_EQ(r.names().size(), 6u);
  for (const auto& t : ts) EXPECT_EQ(std::memcmp(r.get(t.name).data, t.data, t.nbytes()), 0);
  EXPECT_EQ(*r.get("t5").file, path("model-00002-of-00004.safetensors"));

  // One shard when everything fits: model.safetensors and no index.
  fs::create_directories(dir_ / "one");
  EXPECT_EQ(write_sharded(path("one"), ts, 1 << 20), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(Reader::open(path("one")).names().size(), 6u);
}

// ---- malformed input: one test per case, exact messages --------------------------------------

TEST_F(Safetensors, TruncatedFile) {
  std::ofstream(path("t.safetensors"), std::ios::binary) << std::string("\x10\0\0", 3);
  EXPECT_EQ(open_error(path("t.safetensors")),
            path("t.safetensors") + ": truncated: 3 bytes, a safetensors file starts with an 8-byte header length");
  std::ofstream(path("e.safetensors"), std::ios::binary);
  EXPECT_EQ(open_error(path("e.safetensors")),
            path("e.safetensors") + ": truncated: 0 bytes, a safetensors file starts with an 8-byte header length");
}

TEST_F(Safetensors, HeaderLengthPastTheEnd) {
  const std::string p = raw("h.safetensors", "{}", 8, /*declared=*/1000);
  EXPECT_EQ(open_error(p), p + ": header length 1000 runs past the end of the file (18 bytes)");
}

TEST_F(Safetensors, HeaderNotJson) {
  const std::string p = raw("j.safetensors", "{\"a\": nope}", 0);
  EXPECT_EQ(open_error(p), p + ": header is not valid JSON (parse error at header byte 8)");
}

TEST_F(Safetensors, HeaderNumberOutOfRange) {  // found by the fuzzer: nlohmann's out_of_range
  const std::string p = raw("big.safetensors", "{\"a\": 1e400}", 0);
  EXPECT_EQ(open_error(p), p + ": header is not valid JSON ([json.exception.out_of_range.406] "
                               "number overflow parsing '1e400')");
}

TEST_F(Safetensors, HeaderNotAnObject) {
  const std::string p = raw("o.safetensors", "[1, 2]", 0);
  EXPECT_EQ(open_error(p), p + ": header is not a JSON object");
}

TEST_F(Safetensors, OverlappingOffsets) {
  const std::string p = raw("ov.safetensors",
                            R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                            R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 24);
  EXPECT_EQ(open_error(p), p + ": tensor 'b': data_offsets [8, 24] overlap tensor 'a' [0, 16]");
}

TEST_F(Safetensors, OffsetsPastTheDataSection) {
  const std::string p = raw("r.safetensors",
                            R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  EXPECT_EQ(open_error(p),
            p + ": tensor 'a': data_offsets [0, 16] run past the end of the data section (8 bytes)");
}

TEST_F(Safetensors, OffsetsEndBeforeTheyBegin) {
  const std::string p = raw("b.safetensors",
                            R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8);
  EXPECT_EQ(open_error(p), p + ": tensor 'a': data_offsets [8, 4] end before they begin");
}

TEST_F(Safetensors, HoleAndTailInTheDataSection) {
  const std::string p = raw("hole.safetensors",
                            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})", 24);
  EXPECT_EQ(open_error(p),
            p + ": bytes [8, 16) of the data section belong to no tensor (before tensor 'b')");
  const std::string q = raw("tail.safetensors",
                            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 16);
  EXPECT_EQ(open_error(q), q + ": bytes [8, 16) at the end of the data section belong to no tensor");
}

TEST_F(Safetensors, SizeNotMatchingDtypeTimesShape) {
  const std::string p = raw("s.safetensors",
                            R"({"lm_head.weight":{"dtype":"F32","shape":[2,4],"data_offsets":[0,24]}})", 24);
  EXPECT_EQ(open_error(p), p + ": tensor 'lm_head.weight': data_offsets [0, 24] hold 24 bytes but "
                               "F32 [2, 4] needs 32");
  const std::string q = raw("big.safetensors",
                            R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0);
  EXPECT_EQ(open_error(q), q + ": tensor 'a': shape [4294967296, 4294967296] is too large");
}

TEST_F(Safetensors, UnknownDtype) {
  const std::string p = raw("d.safetensors",
                            R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", 1);
  EXPECT_EQ(open_error(p), p + ": tensor 'a': unknown dtype 'Q7'");
}

TEST_F(Safetensors, BadEntryFields) {
  const std::string p = raw("n.safetensors",
                            R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0);
  EXPECT_EQ(open_error(p), p + ": tensor 'a': shape must be an array of non-negative integers");
  const std::string q = raw("m.safetensors", R"({"a":{"dtype":"F32","shape":[0]}})", 0);
  EXPECT_EQ(open_error(q),
            q + ": tensor 'a': \"data_offsets\" must be [begin, end] of non-negative integers");
  const std::string m = raw("meta.safetensors", R"({"__metadata__":{"format":1}})", 0);
  EXPECT_EQ(open_error(m), m + ": \"__metadata__\" key 'format' is not a string");
}

TEST_F(Safetensors, MissingTensor) {
  std::vector<float> v = {1, 2};
  write_file(path("model.safetensors"), {{"a", DType::kF32, {2}, v.data(), {}}});
  Reader r = Reader::open(dir_.string());
  try {
    r.get("model.norm.weight");
    FAIL() << "no error";
  } catch (const SafetensorsError& e) {
    EXPECT_EQ(std::string(e.what()), path("model.safetensors") + ": missing tensor 'model.norm.weight'");
  }
}

TEST_F(Safetensors, IndexPointingToAMissingShard) {
  std::vector<float> v = {1, 2};
  write_file(path("model-00001-of-00002.safetensors"), {{"a", DType::kF32, {2}, v.data(), {}}});
  std::ofstream(path("model.safetensors.index.json"))
      << R"({"metadata":{"total_size":16},"weight_map":{"a":"model-00001-of-00002.safetensors",)"
      << R"("b":"model-00002-of-00002.safetensors"}})";
  EXPECT_EQ(open_error(dir_.string()),
            path("model.safetensors.index.json") +
                ": tensor 'b' is in shard 'model-00002-of-00002.safetensors', which does not exist (" +
                path("model-00002-of-00002.safetensors") + ")");
}

TEST_F(Safetensors, IndexAndShardsDisagree) {
  std::vector<float> v = {1, 2};
  write_file(path("s1.safetensors"), {{"a", DType::kF32, {2}, v.data(), {}},
                                      {"c", DType::kF32, {2}, v.data(), {}}});
  const std::string idx = path("model.safetensors.index.json");
  std::ofstream(idx) << R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s1.safetensors"}})";
  EXPECT_EQ(open_error(idx), idx + ": tensor 'b' is listed in shard 's1.safetensors' but is not in it");
  std::ofstream(idx) << R"({"weight_map":{"a":"s1.safetensors"}})";
  EXPECT_EQ(open_error(idx), path("s1.safetensors") + ": tensor 'c': is not listed for this shard in the index " + idx);
  std::ofstream(idx) << R"({"weight_map":{"a":"../s1.safetensors"}})";
  EXPECT_EQ(open_error(idx), idx + ": weight_map: tensor 'a': shard '../s1.safetensors' is not a plain file name");
  std::ofstream(idx) << R"({"metadata":{}})";
  EXPECT_EQ(open_error(idx), idx + ": missing \"weight_map\" object");
  std::ofstream(idx) << R"({"weight_map":)";
  EXPECT_EQ(open_error(idx), idx + ": not valid JSON (parse error at byte 15)");
}

TEST_F(Safetensors, NotAModelDirectoryOrFile) {
  EXPECT_EQ(open_error(dir_.string()),
            dir_.string() + ": holds neither model.safetensors nor model.safetensors.index.json");
  EXPECT_EQ(open_error(path("absent.safetensors")),
            path("absent.safetensors") + ": cannot open: No such file or directory");
}

TEST_F(Safetensors, WriterRefusesDuplicateNames) {
  std::vector<float> v = {1};
  try {
    write_file(path("dup.safetensors"), {{"a", DType::kF32, {1}, v.data(), {}},
                                         {"a", DType::kF32, {1}, v.data(), {}}});
    FAIL() << "no error";
  } catch (const SafetensorsError& e) {
    EXPECT_EQ(std::string(e.what()), path("dup.safetensors") + ": tensor 'a': duplicate or reserved name");
  }
  EXPECT_FALSE(fs::exists(path("dup.safetensors")));
}
