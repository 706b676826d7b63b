// Memory-mapped token shards as a SampleSource (see shards.hpp).
#include "io/shards.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/shard_format.hpp"
#include "io/threads.hpp"

namespace fs = std::filesystem;

namespace xy {

ShardManifest read_manifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / shard::kManifest).string();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (fs::exists(fs::path(dir) / shard::kState))
      throw ShardError("'" + dir + "': preprocessing is not finished (" + shard::kState +
                       " but no " + shard::kManifest + "); rerun the same xy-node preprocess "
                       "command to complete it");
    throw ShardError("'" + dir + "' is not a preprocessed shard directory: cannot open " + path);
  }
  std::ostringstream text;
  text << in.rdbuf();
  ShardManifest s = parse_manifest(text.str(), path);
  s.dir = dir;
  return s;
}

ShardManifest parse_manifest(const std::string& text, const std::string& path) {
  nlohmann::json m = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (m.is_discarded() || !m.is_object() || !m.contains("format") || !m["format"].is_string() ||
      m["format"] != "xy-shards")
    throw ShardError("'" + path + "' is not an xy-shards manifest");
  ShardManifest s;
  // Integers only (a float or an unsigned beyond int64 would be converted silently).
  auto integer = [&](const nlohmann::json& v, const char* key) -> int64_t {
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX))
      throw ShardError("'" + path + "' is corrupt: " + key + " is not an integer");
    return v.get<int64_t>();
  };
  try {
    s.packing = m.at("packing").get<std::string>();
    s.seq_len = integer(m.at("seq_len"), "seq_len");
    const auto& tok = m.at("tokenizer");
    s.vocab = integer(tok.at("vocab"), "tokenizer.vocab");
    s.bos_id = static_cast<int32_t>(std::clamp<int64_t>(integer(tok.at("bos_id"), "tokenizer.bos_id"), -2, INT32_MAX));
    s.eos_id = static_cast<int32_t>(std::clamp<int64_t>(integer(tok.at("eos_id"), "tokenizer.eos_id"), -2, INT32_MAX));
    s.tokenizer_path = tok.at("path").get<std::string>();
    s.tokenizer_sha256 = tok.at("sha256").get<std::string>();
    s.token_bytes = integer(m.at("token_bytes"), "token_bytes");
    s.shard_tokens = integer(m.at("shard_tokens"), "shard_tokens");
    s.tokens = integer(m.at("counts").at("tokens"), "counts.tokens");
    s.documents = integer(m.at("counts").at("documents"), "counts.documents");
    const auto& shards = m.at("shards");
    if (!shards.is_array()) throw ShardError("'" + path + "' is corrupt: shards is not a list");
    for (const auto& sh : shards) s.shard_sizes.push_back(integer(sh.at("tokens"), "shards[].tokens"));
  } catch (const nlohmann::json::exception& e) {
    throw ShardError("'" + path + "' lacks a field: " + e.what());
  }
  auto corrupt = [&](const std::string& what) { return ShardError("'" + path + "' is corrupt: " + what); };
  if (s.packing != "concat" && s.packing != "llm-code") throw corrupt("packing '" + s.packing + "'");
  if (s.token_bytes != 2 && s.token_bytes != 4)
    throw corrupt("token_bytes " + std::to_string(s.token_bytes) + " (2 or 4)");
  if (s.shard_tokens <= 0) throw corrupt("shard_tokens " + std::to_string(s.shard_tokens));
  // Ids are int32 in memory, uint16 on disk when token_bytes is 2.
  if (s.vocab <= 0 || s.vocab > (s.token_bytes == 2 ? 65536 : int64_t{INT32_MAX}))
    throw corrupt("tokenizer.vocab " + std::to_string(s.vocab) + " with token_bytes " +
                  std::to_string(s.token_bytes));
  for (const int32_t id : {s.bos_id, s.eos_id})
    if (id < -1 || id >= s.vocab) throw corrupt("bos_id/eos_id " + std::to_string(id) + " outside the vocabulary");
  if (s.packing == "llm-code" && (s.seq_len <= 0 || s.eos_id < 0))
    throw corrupt("llm-code packing with seq_len " + std::to_string(s.seq_len) + ", eos_id " +
                  std::to_string(s.eos_id));
  if (s.seq_len < 0 || s.documents < 0 || s.tokens < 0) throw corrupt("a negative count");
  int64_t sum = 0;
  for (size_t k = 0; k < s.shard_sizes.size(); ++k) {
    const int64_t n = s.shard_sizes[k];
    if (n < 0 || n > s.shard_tokens || (k + 1 < s.shard_sizes.size() && n != s.shard_tokens))
      throw corrupt("shard " + std::to_string(k) + " holds " + std::to_string(n) + " tokens; every shard but " +
                    "the last must hold shard_tokens = " + std::to_string(s.shard_tokens) + ", the last at most that");
    if (__builtin_add_overflow(sum, n, &sum)) throw corrupt("the shard sizes overflow");
  }
  if (sum != s.tokens)
    throw corrupt("the shards hold " + std::to_string(sum) + " tokens, counts.tokens says " +
                  std::to_string(s.tokens));
  return s;
}

std::string shard_header_problem(const unsigned char* data, size_t size, const ShardExpect& want) {
  std::ostringstream bad;
  if (size < static_cast<size_t>(shard::kHeaderBytes)) {
    bad << size << " bytes: shorter than its " << shard::kHeaderBytes << "-byte header";
    return bad.str();
  }
  shard::ShardHeader h;
  std::memcpy(&h, data, sizeof(h));
  const int64_t expect = shard::file_bytes(h.tokens, h.documents, h.token_bytes);
  if (std::memcmp(h.magic, shard::kMagic, sizeof(h.magic)) != 0) bad << "bad magic (not an xy shard)";
  else if (h.version != shard::kVersion) bad << "format version " << h.version << ", expected " << shard::kVersion;
  else if (h.token_bytes != 2 && h.token_bytes != 4) bad << "token_bytes " << h.token_bytes << " (2 or 4)";
  else if (h.token_bytes != want.token_bytes) bad << "token_bytes " << h.token_bytes << " != manifest " << want.token_bytes;
  else if (h.index != want.index || h.first_token != want.first_token || h.tokens != want.tokens)
    bad << "header says shard " << h.index << " at token " << h.first_token << " with " << h.tokens
        << " tokens; the manifest says shard " << want.index << " at " << want.first_token << " with "
        << want.tokens;
  else if (expect < 0)
    bad << "header counts " << h.tokens << " tokens and " << h.documents
        << " documents: impossible sizes (corrupt header)";
  else if (static_cast<uint64_t>(expect) != size)
    bad << size << " bytes, expected " << expect << " (truncated or overwritten?)";
  return bad.str();
}

std::string shard_data_problem(const unsigned char* data, size_t size, int64_t vocab) {
  shard::ShardHeader h;
  std::memcpy(&h, data, sizeof(h));
  const size_t W = h.token_bytes == 2 ? 2 : 4;
  const size_t end_ids = static_cast<size_t>(shard::kHeaderBytes) + static_cast<size_t>(h.tokens) * W;
  // Blocks of 1 MiB (a multiple of both widths): the CRC and the id scan read each block while it
  // is in cache.
  constexpr size_t kBlock = size_t{1} << 20;
  uLong crc = crc32(0L, Z_NULL, 0);
  int64_t bad_at = -1, bad_id = 0;
  for (size_t off = static_cast<size_t>(shard::kHeaderBytes); off < size; off += kBlock) {
    const size_t n = std::min(kBlock, size - off);
    crc = crc32(crc, data + off, static_cast<uInt>(n));
    if (bad_at >= 0 || off >= end_ids) continue;
    const size_t ids_end = std::min(off + n, end_ids);
    uint32_t top = 0;  // the block's largest id: a loop the compiler vectorises
    if (W == 2) {
      for (size_t i = off; i < ids_end; i += 2) {
        uint16_t v;
        std::memcpy(&v, data + i, 2);
        top = std::max<uint32_t>(top, v);
      }
    } else {
      for (size_t i = off; i < ids_end; i += 4) {
        uint32_t v;
        std::memcpy(&v, data + i, 4);
        top = std::max(top, v);
      }
    }
    if (static_cast<int64_t>(top) < vocab) continue;
    for (size_t i = off; i < ids_end; i += W) {  // find the first one
      uint32_t v = 0;
      std::memcpy(&v, data + i, W);  // little-endian: the low bytes
      if (static_cast<int64_t>(v) >= vocab) {
        bad_at = static_cast<int64_t>(i);
        bad_id = v;
        break;
      }
    }
  }
  char buf[160];
  if (static_cast<uint32_t>(crc) != h.crc32) {
    std::snprintf(buf, sizeof(buf), "CRC-32 of bytes 64..%zu is %08x, the header records %08x (the data is corrupt)",
                  size, static_cast<unsigned>(crc), static_cast<unsigned>(h.crc32));
    return buf;
  }
  if (bad_at >= 0)
    return "token id " + std::to_string(bad_id) + " at byte offset " + std::to_string(bad_at) + " (token " +
           std::to_string((bad_at - shard::kHeaderBytes) / static_cast<int64_t>(W)) +
           " of the shard) is not below the vocabulary " + std::to_string(vocab) +
           " (the CRC matches: written so, or the manifest's vocabulary is wrong)";
  return "";
}

std::shared_ptr<ShardSamples> ShardSamples::open(const std::string& dir, int64_t seq_len, bool verify) {
  if (seq_len <= 0) throw ShardError("seq_len must be positive");
  std::shared_ptr<ShardSamples> s(new ShardSamples());
  s->manifest_ = read_manifest(dir);
  const ShardManifest& m = s->manifest_;
  s->seq_len_ = seq_len;
  s->llm_code_ = m.packing == "llm-code";
  if (s->llm_code_ && (m.seq_len <= 0 || m.seq_len % seq_len != 0))
    throw ShardError("'" + dir + "' was packed llm-code for samples of " + std::to_string(m.seq_len) +
                     " tokens (groups padded to a multiple of it); data.seq_len = " +
                     std::to_string(seq_len) + " would cut samples across groups; valid: " +
                     std::to_string(m.seq_len) + " or a divisor of it");

  std::vector<std::string> paths;
  int64_t total = 0;
  for (size_t k = 0; k < m.shard_sizes.size(); ++k) {
    const std::string path = (fs::path(dir) / shard::shard_name(static_cast<int64_t>(k))).string();
    paths.push_back(path);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw ShardError("cannot open shard '" + path + "': " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      throw ShardError("cannot stat shard '" + path + "': " + std::strerror(e));
    }
    const size_t bytes = static_cast<size_t>(st.st_size);
    void* base = bytes >= static_cast<size_t>(shard::kHeaderBytes)
                     ? ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0)
                     : MAP_FAILED;
    const int map_errno = errno;
    ::close(fd);  // the mapping keeps the file; no fd per shard
    if (base == MAP_FAILED)
      throw ShardError("cannot map shard '" + path + "' (" + std::to_string(bytes) + " bytes): " +
                       (bytes < static_cast<size_t>(shard::kHeaderBytes) ? "shorter than its header"
                                                                         : std::strerror(map_errno)));
    s->maps_.push_back({base, bytes, nullptr, 0});
    const int64_t want = m.shard_sizes[k];
    const std::string bad = shard_header_problem(static_cast<const unsigned char*>(base), bytes,
                                                 {static_cast<int64_t>(k), total, want, m.token_bytes});
    if (!bad.empty()) throw ShardError("shard '" + path + "' is unusable: " + bad);
    s->maps_.back().tokens = static_cast<const unsigned char*>(base) + shard::kHeaderBytes;
    s->maps_.back().count = want;
    total += want;  // no overflow: parse_manifest checked the sum
  }
  if (verify) {
    // Every shard read once, on up to 8 threads (CRC-32 ~2.8 GB/s per core here); the first bad
    // shard in order is reported. A thread the system refuses only means fewer threads.
    const auto t0 = std::chrono::steady_clock::now();
    const size_t n = s->maps_.size();
    std::vector<std::string> problems(n);
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t k; (k = next.fetch_add(1)) < n;) {
        const Mapped& mp = s->maps_[k];
        ::madvise(mp.base, mp.bytes, MADV_SEQUENTIAL);
        problems[k] = shard_data_problem(static_cast<const unsigned char*>(mp.base), mp.bytes, m.vocab);
        ::madvise(mp.base, mp.bytes, MADV_DONTNEED);  // read-only file pages: only drops them from RSS
      }
    };
    std::vector<std::thread> helpers;
    const size_t want_threads = std::min<size_t>({n, 8, std::max(1u, std::thread::hardware_concurrency())});
    for (size_t i = 1; i < want_threads; ++i) {
      try {
        helpers.push_back(start_thread("a shard verification thread", work));
      } catch (const ThreadStartError&) {
        break;
      }
    }
    work();
    for (auto& t : helpers) t.join();
    for (size_t k = 0; k < n; ++k)
      if (!problems[k].empty()) throw ShardError("shard '" + paths[k] + "' is unusable: " + problems[k]);
    s->verify_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  for (const Mapped& mp : s->maps_) ::madvise(mp.base, mp.bytes, MADV_RANDOM);
  s->count_ = s->llm_code_ ? total / seq_len : (total > 0 ? (total - 1) / seq_len : 0);
  return s;
}

ShardSamples::~ShardSamples() {
  for (const Mapped& m : maps_)
    if (m.base != nullptr) ::munmap(m.base, m.bytes);
}

int32_t ShardSamples::token(int64_t t) const {
  const int64_t k = t / manifest_.shard_tokens;
  const Mapped& m = maps_[static_cast<size_t>(k)];
  const int64_t i = t - k * manifest_.shard_tokens;
  if (manifest_.token_bytes == 2) {
    uint16_t v;
    std::memcpy(&v, m.tokens + i * 2, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, m.tokens + i * 4, 4);
  return static_cast<int32_t>(v);
}

void ShardSamples::copy_sample(int64_t i, int64_t* out) const {
  if (i < 0 || i >= count_)
    throw std::out_of_range("sample " + std::to_string(i) + " of " + std::to_string(count_));
  const int64_t total = manifest_.tokens;
  int64_t t = i * seq_len_;
  int64_t n = seq_len_ + 1;
  // llm-code: the label after the stream's last token is an EOS pad (masked).
  if (t + n > total) {
    out[n - 1] = manifest_.eos_id;
    --n;
  }
  const int64_t S = manifest_.shard_tokens;
  while (n > 0) {
    const int64_t k = t / S;
    const Mapped& m = maps_[static_cast<size_t>(k)];
    const int64_t off = t - k * S;
    const int64_t take = std::min(n, m.count - off);
    if (manifest_.token_bytes == 2) {
      const auto* p = reinterpret_cast<const uint16_t*>(m.tokens) + off;  // 64-byte aligned base
      for (int64_t j = 0; j < take; ++j) out[j] = p[j];
    } else {
      const auto* p = reinterpret_cast<const uint32_t*>(m.tokens) + off;
      for (int64_t j = 0; j < take; ++j) out[j] = static_cast<int32_t>(p[j]);
    }
    out += take;
    t += take;
    n -= take;
  }
}

}  // namespace xy
