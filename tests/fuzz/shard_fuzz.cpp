// libFuzzer target for the token shard reader (io/shards.cpp): the shard header and size check,
// the full CRC-32 and id scan, and the shard manifest parser.
//
// The first byte picks the parser: 'M' = the rest is a manifest.json (parse_manifest: a manifest
// or ShardError); anything else = the whole input is a shard file, checked against the
// expectations its own header claims (so that the data scan runs on hostile counts), with a
// vocabulary from its reserved word. A shard that passes the header check must have exactly the
// size its counts give (checked arithmetic); the data scan must stay inside the buffer (ASan).
// Built with clang and -DXY_FUZZ=ON; tests/fuzz/replay_main.cpp replays tests/fuzz/shard_corpus.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "io/shard_format.hpp"
#include "io/shards.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 0 && data[0] == 'M') {
    try {
      const xy::ShardManifest m = xy::parse_manifest(std::string(reinterpret_cast<const char*>(data) + 1, size - 1), "<fuzz>");
      int64_t sum = 0;
      for (int64_t n : m.shard_sizes) {
        if (n < 0 || n > m.shard_tokens) std::abort();
        sum += n;
      }
      if (sum != m.tokens || m.vocab <= 0 || (m.token_bytes != 2 && m.token_bytes != 4)) std::abort();
    } catch (const xy::ShardError&) {
    }
    return 0;
  }
  xy::ShardExpect want;
  int64_t vocab = 1000;
  if (size >= static_cast<size_t>(xy::shard::kHeaderBytes)) {
    xy::shard::ShardHeader h;
    std::memcpy(&h, data, sizeof(h));
    want = {h.index, h.first_token, h.tokens, h.token_bytes};
    if (h.reserved != 0) vocab = h.reserved;
  }
  const std::string bad = xy::shard_header_problem(data, size, want);
  if (!bad.empty()) return 0;
  const int64_t bytes = xy::shard::file_bytes(want.tokens, 0, want.token_bytes);
  if (bytes < 0 || static_cast<uint64_t>(bytes) > size) std::abort();
  (void)xy::shard_data_problem(data, size, vocab);
  return 0;
}
