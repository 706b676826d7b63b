// Memory-mapped token shards as a SampleSource (see shards.hpp).
#include "io/shards.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/shard_format.hpp"

namespace fs = std::filesystem;

namespace xy {

ShardManifest read_manifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / shard::kManifest).string();
  std::ifstream in(path);
  if (!in) {
    if (fs::exists(fs::path(dir) / shard::kState))
      throw ShardError("'" + dir + "': preprocessing is not finished (" + shard::kState +
                       " but no " + shard::kManifest + "); rerun the same xy-node preprocess "
                       "command to complete it");
    throw ShardError("'" + dir + "' is not a preprocessed shard directory: cannot open " + path);
  }
  nlohmann::json m = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (m.is_discarded() || !m.is_object() || m.value("format", "") != "xy-shards")
    throw ShardError("'" + path + "' is not an xy-shards manifest");
  ShardManifest s;
  try {
    s.dir = dir;
    s.packing = m.at("packing");
    s.seq_len = m.at("seq_len");
    s.vocab = m.at("tokenizer").at("vocab");
    s.bos_id = m.at("tokenizer").at("bos_id");
    s.eos_id = m.at("tokenizer").at("eos_id");
    s.tokenizer_path = m.at("tokenizer").at("path");
    s.tokenizer_sha256 = m.at("tokenizer").at("sha256");
    s.token_bytes = m.at("token_bytes");
    s.shard_tokens = m.at("shard_tokens");
    s.tokens = m.at("counts").at("tokens");
    s.documents = m.at("counts").at("documents");
    for (const auto& sh : m.at("shards")) s.shard_sizes.push_back(sh.at("tokens"));
  } catch (const nlohmann::json::exception& e) {
    throw ShardError("'" + path + "' lacks a field: " + e.what());
  }
  if ((s.token_bytes != 2 && s.token_bytes != 4) || s.shard_tokens <= 0 || s.vocab <= 0)
    throw ShardError("'" + path + "' is corrupt: token_bytes " + std::to_string(s.token_bytes) +
                     ", shard_tokens " + std::to_string(s.shard_tokens));
  return s;
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

  int64_t total = 0;
  for (size_t k = 0; k < m.shard_sizes.size(); ++k) {
    const std::string path = (fs::path(dir) / shard::shard_name(static_cast<int64_t>(k))).string();
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
    shard::ShardHeader h;
    std::memcpy(&h, base, sizeof(h));
    const int64_t want = m.shard_sizes[k];
    std::ostringstream bad;
    if (std::memcmp(h.magic, shard::kMagic, sizeof(h.magic)) != 0) bad << "bad magic";
    else if (h.version != shard::kVersion) bad << "version " << h.version << ", expected " << shard::kVersion;
    else if (h.token_bytes != m.token_bytes) bad << "token_bytes " << h.token_bytes << " != manifest " << m.token_bytes;
    else if (h.index != static_cast<int64_t>(k) || h.first_token != total || h.tokens != want)
      bad << "header says shard " << h.index << " at token " << h.first_token << " with " << h.tokens
          << " tokens; the manifest says shard " << k << " at " << total << " with " << want;
    else if (static_cast<int64_t>(bytes) != shard::file_bytes(h.tokens, h.documents, h.token_bytes))
      bad << bytes << " bytes, expected " << shard::file_bytes(h.tokens, h.documents, h.token_bytes)
          << " (truncated or overwritten?)";
    if (bad.str().empty() && verify) {
      const auto* p = static_cast<const unsigned char*>(base) + shard::kHeaderBytes;
      const size_t n = bytes - static_cast<size_t>(shard::kHeaderBytes);
      uLong crc = crc32(0L, Z_NULL, 0);
      for (size_t off = 0; off < n; off += (1u << 30))
        crc = crc32(crc, p + off, static_cast<uInt>(std::min<size_t>(n - off, 1u << 30)));
      if (static_cast<uint32_t>(crc) != h.crc32) bad << "CRC-32 mismatch (the data is corrupt)";
    }
    if (!bad.str().empty()) throw ShardError("shard '" + path + "' is unusable: " + bad.str());
    s->maps_.back().tokens = static_cast<const unsigned char*>(base) + shard::kHeaderBytes;
    s->maps_.back().count = h.tokens;
    if (k + 1 < m.shard_sizes.size() && h.tokens != m.shard_tokens)
      throw ShardError("shard '" + path + "' holds " + std::to_string(h.tokens) +
                       " tokens; every shard but the last must hold " + std::to_string(m.shard_tokens));
    ::madvise(base, bytes, MADV_RANDOM);
    total += h.tokens;
  }
  if (total != m.tokens)
    throw ShardError("'" + dir + "': the shards hold " + std::to_string(total) +
                     " tokens, the manifest says " + std::to_string(m.tokens));
  if (verify)
    for (int64_t t = 0; t < total; ++t)
      if (s->token(t) >= m.vocab || s->token(t) < 0)
        throw ShardError("'" + dir + "': token " + std::to_string(t) + " is " +
                         std::to_string(s->token(t)) + ", not below the vocabulary " +
                         std::to_string(m.vocab));
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
