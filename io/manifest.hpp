// The checkpoint manifest and names, without LibTorch (so that the parser is fuzzed and built with
// sanitizers): a checkpoint directory is never trusted. Every field is type- and range-checked,
// the files may only be the names xy writes (rank-00000.bin ... for ranks 0..world-1, each once),
// sizes are computed with checked arithmetic, and `latest` may only name a sibling step-N
// directory. Written by ckpt/checkpoint.cpp; read by ckpt/checkpoint_io.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/config.hpp"

namespace xy {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr const char* kCheckpointFormat = "xy-checkpoint-1";
// Limits of a well-formed manifest (far above any real job; they stop absurd values early).
inline constexpr int64_t kMaxCheckpointWorld = 1 << 20;
inline constexpr int64_t kMaxCheckpointStep = int64_t{1} << 50;

// "step-00000012". Steps are >= 0.
std::string checkpoint_step_name(int64_t step);
// The step of a directory named "step-<digits>" (1 to 18 digits), or -1 for any other name.
int64_t parse_checkpoint_step_name(const std::string& name);
// "rank-00003.bin": the only rank file names a manifest may list.
std::string checkpoint_rank_file(int64_t rank);
// Bytes per element of a working dtype name as the manifest writes it ("Float", "BFloat16",
// "Half"); throws CheckpointError naming `where` for any other.
int64_t working_dtype_size(const std::string& name, const std::string& where);

struct ManifestFile {
  std::string name;  // rank-00003.bin
  int rank = 0;
  int64_t bytes = 0;
  std::string sha256;  // 64 lowercase hex digits
};

struct ManifestUnit {
  std::string name;
  int64_t numel = 0, shard_numel = 0;
};

// The run's tokenizer, as the manifest records it (`xy-node export` writes its ids into config.json
// and copies the file when it is unchanged): the file that defines it (absolute, as used), its
// SHA-256, its vocabulary size and its BOS / EOS ids (-1 = none). Absent in manifests written
// before xy recorded it, and in runs given samples without a tokenizer (tests).
struct TokenizerRecord {
  std::string file;
  std::string sha256;  // 64 lowercase hex digits
  int64_t vocab_size = 0;
  int32_t bos_id = -1, eos_id = -1;
};

struct Manifest {
  int64_t step = 0, adam_step = 0, samples_per_rank = 0;
  double loss_scale = 1;
  int64_t scaler_iter = 0, scaler_last_overflow = -1, scaler_hysteresis = 0;
  double loss = 0;
  int world_size = 0;   // the ranks the units are sharded over: one rank file each
  int nodes = 1;
  // The data-parallel ranks that consumed samples_per_rank each: world_size, except under node
  // sharding (topology.shard), where each node's ranks hold the shards and every node reads data.
  int data_ranks = 0;
  // Samples the whole job consumed (the data position; mixed GPUs take different counts per
  // rank). Manifests without it: samples_per_rank x data_ranks.
  int64_t samples = 0;
  std::string working_dtype_name;  // "Float" | "BFloat16" | "Half"
  ModelConfig model;          // shape fields only
  std::vector<ManifestUnit> units;
  std::vector<ManifestFile> files;  // sorted by rank, files[r].rank == r
  int64_t rank_file_bytes = 0;      // what each rank file must hold, from the units
  std::optional<TokenizerRecord> tokenizer;
};

// Parses and validates a manifest's text. `where` (the manifest's path) starts every error.
// Throws CheckpointError: invalid JSON, a missing field or one of the wrong type or out of range
// (named), a file name xy does not write, a rank listed twice or missing, sizes that disagree
// with the units, an overflow in the size arithmetic, a malformed tokenizer record (the field
// named; the record itself is optional).
Manifest parse_checkpoint_manifest(const std::string& text, const std::string& where);

// The checkpoint directory `<root>/latest` names. Its content must be one step-N name (a sibling
// directory); anything else (a path, "..", an absolute path) is refused naming the file.
std::string read_latest_checkpoint(const std::string& root);

}  // namespace xy
