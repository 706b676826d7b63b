// What verifying token shards costs when training opens them (docs/DATA.md, "Training from
// shards"): writes a synthetic shard directory (uint16 ids, 256 MiB shards by default) and times
// ShardSamples::open without and with verification (CRC-32 of every byte and every id against
// the vocabulary), page cache warm.
// usage: shard_verify_bench [DIR] [MiB of ids, default 2048] [MiB per shard, default 256]
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <vector>

#include "io/shard_format.hpp"
#include "io/shards.hpp"

namespace fs = std::filesystem;
using namespace xy;

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : (fs::temp_directory_path() / "xy_shard_verify_bench").string();
  const int64_t total_mb = argc > 2 ? std::atoll(argv[2]) : 2048, shard_mb = argc > 3 ? std::atoll(argv[3]) : 256;
  const int64_t vocab = 32000, shard_tokens = shard_mb << 19, tokens = total_mb << 19;
  fs::remove_all(dir);
  fs::create_directories(dir);
  nlohmann::json m = {{"format", "xy-shards"}, {"version", 1}, {"packing", "concat"}, {"seq_len", 0},
                      {"tokenizer", {{"path", "none"}, {"sha256", ""}, {"vocab", vocab}, {"bos_id", 1}, {"eos_id", 2}}},
                      {"token_bytes", 2}, {"shard_tokens", shard_tokens},
                      {"counts", {{"tokens", tokens}, {"documents", 0}}}, {"shards", nlohmann::json::array()}};
  std::mt19937 rng(1);
  std::vector<uint16_t> ids(static_cast<size_t>(shard_tokens));
  for (auto& v : ids) v = static_cast<uint16_t>(rng() % vocab);
  for (int64_t k = 0, first = 0; first < tokens; ++k, first += shard_tokens) {
    const int64_t n = std::min(shard_tokens, tokens - first);
    shard::ShardHeader h{};
    std::memcpy(h.magic, shard::kMagic, 8);
    h.version = shard::kVersion;
    h.token_bytes = 2;
    h.index = k;
    h.first_token = first;
    h.tokens = n;
    const std::string pad(static_cast<size_t>(shard::padded(n * 2) - n * 2), '\0');
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(ids.data()), static_cast<uInt>(n * 2));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(pad.data()), static_cast<uInt>(pad.size()));
    h.crc32 = static_cast<uint32_t>(crc);
    std::ofstream f(fs::path(dir) / shard::shard_name(k), std::ios::binary);
    f.write(reinterpret_cast<const char*>(&h), sizeof(h));
    f.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(n * 2)) << pad;
    m["shards"].push_back({{"file", shard::shard_name(k)}, {"tokens", n}});
  }
  std::ofstream(fs::path(dir) / shard::kManifest) << m.dump(1);
  std::printf("%s: %lld MiB of ids in %zu shards, %u hardware threads\n", dir.c_str(),
              static_cast<long long>(total_mb), m["shards"].size(), std::thread::hardware_concurrency());
  for (int rep = 0; rep < 3; ++rep)
    for (bool verify : {false, true}) {
      const auto t0 = std::chrono::steady_clock::now();
      auto s = ShardSamples::open(dir, 2048, verify);
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("open %-10s %7.3f s  (%.2f GB/s)\n", verify ? "verify" : "no verify", sec,
                  verify ? static_cast<double>(tokens * 2) / sec / 1e9 : 0.0);
    }
  fs::remove_all(dir);
  return 0;
}
