// Reading checkpoints: the manifest, verification of every file (size and SHA-256), and the full
// state of each unit assembled from all ranks' shards, whatever the world size they were saved with
// (resume on another world size reshards from these). Written by ckpt/checkpoint.cpp.
//
// Layout of <dir>/rank-R.bin: for each unit in order, four arrays of shard_numel elements each:
// working copy (working_dtype), fp32 master, fp32 m, fp32 v (raw, little-endian).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/config.hpp"
#include "io/manifest.hpp"

namespace xy {

using CheckpointFile = ManifestFile;
using CheckpointUnit = ManifestUnit;

// A validated manifest (io/manifest.hpp) with the directory it was read from and its working
// dtype as LibTorch's.
struct CheckpointManifest : Manifest {
  std::string dir;
  at::ScalarType working_dtype = at::kFloat;
};

// The directory `spec` names: "latest" (the step-N beside it that <root>/latest names) or a path.
std::string resolve_checkpoint(const std::string& spec, const std::string& root);

// Reads <dir>/manifest.json (untrusted: parse_checkpoint_manifest validates every field), checks the units
// against the layout of the manifest's model, and that every rank's file is a regular file (not
// a link) with the recorded size and, if `verify`, its SHA-256. Throws CheckpointError naming the
// file and what is wrong.
CheckpointManifest read_checkpoint(const std::string& dir, bool verify);

// Published checkpoints under `root` (directories named step-N), newest step first (for falling
// back to an older good one).
std::vector<std::string> list_checkpoints(const std::string& root);

// Removes the checkpoint directory root/name (rename to .del-name, then delete).
void remove_checkpoint_dir(const std::filesystem::path& root, const std::string& name);

// Retention after publishing `published_step` under `root`: keeps the newest `keep_last` step-N
// directories by step number (and every `keep_every`-th step's for good); never deletes the one
// just published nor the one `latest` names.
void apply_retention(const std::filesystem::path& root, int64_t published_step, int keep_last,
                     int64_t keep_every);

// Before a fresh run (no --resume) on node 0: a checkpoint directory that already holds
// checkpoints (step-N directories or `latest`) belongs to another run, whose newest checkpoint
// the fresh run's retention and `latest` would replace. Throws std::invalid_argument naming the
// directory and what is there, with the ways out — unless `overwrite`, which removes them first
// (saying so on stdout).
void prepare_checkpoint_dir_for_fresh_run(const std::string& root, bool overwrite);

struct UnitState {
  at::Tensor working, master, m, v;  // each [numel] (unpadded)
};

// The full state of unit `u`, assembled from every rank's file.
UnitState read_unit_state(const CheckpointManifest& man, int u);

// Checks that the checkpoint's model has the shapes of `m`; throws CheckpointError naming the
// first field that differs.
void check_model_matches(const CheckpointManifest& man, const ModelConfig& m);

}  // namespace xy
