// The parameter layout: every unit (embedding, each block, head) is one flat buffer described by a
// named size table; ZeRO-3 sharding is offset arithmetic over it.
//
// Units, in order: 0 = embedding, 1..L = transformer blocks, L+1 = head (final norm + LM head;
// with tied embeddings the final norm only: the LM head is the embedding's matrix).
// Each parameter carries its Hugging Face name ("model.layers.3.self_attn.q_proj.weight"), its
// shape, its offset in the unit's flat buffer and whether it gets weight decay. A unit's buffer is
// padded to a multiple of the world size; rank r owns elements [r * shard, (r + 1) * shard).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/config.hpp"

namespace xy {

enum class UnitKind { kEmbedding, kBlock, kHead };

struct ParamSpec {
  std::string name;            // Hugging Face name
  std::vector<int64_t> shape;  // row-major
  int64_t offset = 0;          // elements from the start of the unit's flat buffer
  int64_t numel = 0;
  bool decay = true;           // AdamW weight decay applies
  bool is_norm = false;        // an RMSNorm weight (initialised to 1)
  bool is_bias = false;        // a projection's bias (initialised to 0)
};

struct UnitLayout {
  UnitKind kind = UnitKind::kBlock;
  int index = 0;               // position among all units
  int block = -1;              // transformer block index for kBlock, else -1
  std::string name;            // "embed", "layers.3", "head"
  std::vector<ParamSpec> params;
  int64_t numel = 0;           // sum of params' numel
  int64_t padded_numel = 0;    // numel rounded up to a multiple of world_size
  int64_t shard_numel = 0;     // padded_numel / world_size

  // The range [begin, end) of real (unpadded) elements that rank r owns, clipped to numel.
  int64_t shard_begin(int rank) const { return rank * shard_numel; }
  int64_t shard_end(int rank) const;
  const ParamSpec& param(const std::string& suffix) const;  // by name suffix, e.g. "q_proj.weight"
};

struct ModelLayout {
  std::vector<UnitLayout> units;
  int world_size = 1;
  // Tied embeddings: the head unit holds only model.norm.weight and the LM head reads the
  // embedding unit's model.embed_tokens.weight (one parameter, one shard, one gradient).
  bool tied = false;
  int64_t total_numel() const;   // parameters in the model (without padding)
  int num_blocks() const { return static_cast<int>(units.size()) - 2; }
};

// Builds the layout of `m` for `world_size` ranks. Parameter names containing any `no_decay`
// substring get decay = false.
ModelLayout build_layout(const ModelConfig& m, int world_size, const std::vector<std::string>& no_decay);

}  // namespace xy
