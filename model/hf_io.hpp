// Hugging Face checkpoints <-> xy's unit buffers: load a LlamaForCausalLM folder (config.json +
// safetensors, single or sharded) into one flat buffer per unit, and save units as such a folder.
//
// Names match because the layout's ParamSpec names are Hugging Face's. Shapes are checked against
// the layout; tensors are converted from the file's dtype (F32, BF16, F16, F64) to the requested
// one. Errors are st::SafetensorsError (bad files, missing tensors) or std::runtime_error
// (shapes, unexpected tensors), each naming the file and the tensor.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "io/config.hpp"
#include "io/hf_config.hpp"
#include "model/layout.hpp"

namespace xy {

// Loads every parameter of `layout` from the safetensors in `dir` (a directory with
// model.safetensors or model.safetensors.index.json, or a single .safetensors file). Returns one
// flat buffer per unit, of padded_numel elements of `dtype` (padding zero), on the CPU.
// `*.rotary_emb.inv_freq` tensors (old transformers checkpoints) are ignored. Fails, naming the
// file and tensor, on a missing tensor, a shape other than the layout's (expected vs found), a
// non-float dtype, or tensors the layout does not have (all of them are listed). Does not read
// config.json: check it separately with read_hf_config when the layout was built from elsewhere.
std::vector<at::Tensor> load_hf_units(const std::string& dir, const ModelLayout& layout,
                                      at::ScalarType dtype = at::kFloat);

// Called as tensors are written: bytes written so far, bytes in all.
using SaveProgress = std::function<void(uint64_t done, uint64_t total)>;

// What an export adds beside the weights: config.json's special-token ids, and optionally a
// generation_config.json with them and files copied in (the tokenizer), all inside the folder
// that appears at once.
struct HfFolderExtras {
  HfTokenIds token_ids;                 // default: 1/2 (Llama-2's)
  bool generation_config = false;       // write generation_config.json
  std::vector<std::pair<std::string, std::string>> files;  // {plain file name, contents}
};

// Writes `units` (full flat buffers, one per unit of `layout`, any float dtype, at least numel
// elements each) as a Hugging Face folder `dir`: config.json (from `model`, torch_dtype from
// `dtype`) and the parameters in `dtype` (kFloat or kBFloat16) as safetensors, sharded at
// max_shard_bytes of data per file with model.safetensors.index.json when more than one shard is
// needed. Written into a temporary directory beside `dir`, then renamed into place: `dir` either
// appears complete or not at all. Fails if `dir` exists and is not empty.
void save_hf_model(const std::string& dir, const ModelConfig& model, const ModelLayout& layout,
                   const std::vector<at::Tensor>& units, at::ScalarType dtype,
                   int64_t max_shard_bytes = int64_t{5} << 30, const SaveProgress& progress = {},
                   const HfFolderExtras& extras = {});

}  // namespace xy
