// libFuzzer target for the checkpoint manifest parser (io/manifest.cpp: parse_checkpoint_manifest).
//
// Any input must either give a manifest whose rank files are rank-00000.bin ... in rank order, one
// per rank of world_size, with sizes that fit (and a tokenizer record, if any, whose ids are below
// its vocabulary), or throw CheckpointError naming the manifest;
// anything else (a crash, a sanitizer report, another exception) is a finding. Built with clang
// and -DXY_FUZZ=ON; tests/fuzz/replay_main.cpp replays tests/fuzz/manifest_corpus in every build
// and under ASan + UBSan (scripts/test.sh).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "io/manifest.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const xy::Manifest m = xy::parse_checkpoint_manifest(
        std::string(reinterpret_cast<const char*>(data), size), "<fuzz>/manifest.json");
    if (m.world_size <= 0 || static_cast<int64_t>(m.files.size()) != m.world_size) std::abort();
    for (size_t r = 0; r < m.files.size(); ++r) {
      const auto& f = m.files[r];
      if (f.rank != static_cast<int>(r) || f.name != xy::checkpoint_rank_file(f.rank) || f.bytes < 0 ||
          f.sha256.size() != 64)
        std::abort();
    }
    if (m.rank_file_bytes < 0) std::abort();
    for (const auto& u : m.units)
      if (u.numel < 0 || u.shard_numel < 0) std::abort();
    if (m.tokenizer) {  // the tokenizer record: ids below its vocabulary, or -1
      const xy::TokenizerRecord& t = *m.tokenizer;
      if (t.file.empty() || t.sha256.size() != 64 || t.vocab_size < 1 || t.bos_id < -1 || t.eos_id < -1 ||
          t.bos_id >= t.vocab_size || t.eos_id >= t.vocab_size)
        std::abort();
    }
  } catch (const xy::CheckpointError&) {
  }
  return 0;
}
