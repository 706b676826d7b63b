// Reading checkpoints: the manifest, verification of every file (size and SHA-256), and the full
// state of each unit assembled from all ranks' shards, whatever the world size they were saved with
// (resume on another world size reshards from these). Written by actors/checkpoint.cpp.
//
// Layout of <dir>/rank-R.bin: for each unit in order, four arrays of shard_numel elements each:
// working copy (working_dtype), fp32 master, fp32 m, fp32 v (raw, little-endian).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/config.hpp"

namespace xy {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct CheckpointFile {
  std::string name;  // rank-00003.bin
  int rank = 0;
  int64_t bytes = 0;
  std::string sha256;
};

struct CheckpointUnit {
  std::string name;
  int64_t numel = 0, shard_numel = 0;
};

struct CheckpointManifest {
  std::string dir;
  int64_t step = 0, adam_step = 0, samples_per_rank = 0;
  double loss_scale = 1;  // the dynamic loss scaler's state (scale 1, iter 0 when it was off)
  int64_t scaler_iter = 0, scaler_last_overflow = -1, scaler_hysteresis = 0;
  double loss = 0;
  int world_size = 0;
  at::ScalarType working_dtype = at::kFloat;
  ModelConfig model;  // shape fields only
  std::vector<CheckpointUnit> units;
  std::vector<CheckpointFile> files;  // sorted by rank
};

// The directory `spec` names: "latest" (the one <root>/latest names) or a path.
std::string resolve_checkpoint(const std::string& spec, const std::string& root);

// Reads <dir>/manifest.json and checks that every rank's file exists with its recorded size and,
// if `verify`, its SHA-256. Throws CheckpointError naming the file and what is wrong.
CheckpointManifest read_checkpoint(const std::string& dir, bool verify);

// Published checkpoints under `root`, newest first (for falling back to an older good one).
std::vector<std::string> list_checkpoints(const std::string& root);

struct UnitState {
  at::Tensor working, master, m, v;  // each [numel] (unpadded)
};

// The full state of unit `u`, assembled from every rank's file.
UnitState read_unit_state(const CheckpointManifest& man, int u);

// Checks that the checkpoint's model has the shapes of `m`; throws CheckpointError naming the
// first field that differs.
void check_model_matches(const CheckpointManifest& man, const ModelConfig& m);

}  // namespace xy
