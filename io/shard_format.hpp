// The on-disk format of `xy-node preprocess` output: token shards, their header, and file names.
// Shared by the writer (preprocess/packer.cpp) and the memory-mapped reader (io/shards.cpp); the
// format is described for users in docs/DATA.md.
//
// A shard file (little-endian):
//   [0, 64)                 ShardHeader
//   [64, 64 + T*W)          T token ids, W = token_bytes (2 = uint16, 4 = uint32)
//   zero padding to a multiple of 8
//   D int64                 global token offsets of the D documents that start in this shard
// The shards of one directory cut one global token stream: shard k holds tokens
// [k * shard_tokens, k * shard_tokens + tokens); every shard but the last is full.
#pragma once

#include <cstdint>
#include <climits>
#include <cstdio>
#include <string>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shards are written in host byte order, which xy assumes to be little-endian"
#endif

namespace xy::shard {

constexpr char kMagic[8] = {'X', 'Y', 'S', 'H', 'A', 'R', 'D', '1'};
constexpr uint32_t kVersion = 1;
constexpr int64_t kHeaderBytes = 64;

struct ShardHeader {
  char magic[8];
  uint32_t version;
  uint32_t token_bytes;     // 2 or 4
  int64_t index;            // shard number k
  int64_t first_token;      // global offset of the shard's first token (= k * shard_tokens)
  int64_t tokens;           // tokens in this shard
  int64_t first_document;   // global index of the first document starting in this shard
  int64_t documents;        // documents starting in this shard
  uint32_t crc32;           // zlib crc32 of every byte after the header
  uint32_t reserved;        // 0
};
static_assert(sizeof(ShardHeader) == kHeaderBytes, "ShardHeader must be 64 bytes");

inline int64_t padded(int64_t bytes) { return (bytes + 7) / 8 * 8; }

// Total file size of a shard with these counts, or -1 when a count is negative or the size does
// not fit in int64: checked arithmetic, so that a corrupt header (2^62 tokens, say) cannot wrap
// around to the size of the file it is in.
inline int64_t file_bytes(int64_t tokens, int64_t documents, int64_t token_bytes) {
  int64_t ids = 0, index = 0, total = 0;
  if (tokens < 0 || documents < 0 || token_bytes <= 0) return -1;
  if (__builtin_mul_overflow(tokens, token_bytes, &ids) || ids > INT64_MAX - 7) return -1;
  if (__builtin_mul_overflow(documents, int64_t{8}, &index)) return -1;
  if (__builtin_add_overflow(padded(ids), index, &total) ||
      __builtin_add_overflow(total, kHeaderBytes, &total))
    return -1;
  return total;
}

inline std::string shard_name(int64_t index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "shard-%05lld.bin", static_cast<long long>(index));
  return buf;
}

constexpr const char* kManifest = "manifest.json";      // present = the output is complete
constexpr const char* kState = "preprocess.state";      // present = a run is in progress

}  // namespace xy::shard
