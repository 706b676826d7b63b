// Hugging Face folders <-> unit buffers (see hf_io.hpp).
#include "model/hf_io.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <stdexcept>

#include "io/atomic_file.hpp"
#include "io/hf_config.hpp"
#include "io/safetensors.hpp"

namespace xy {

namespace {

std::string shape_str(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool to_scalar_type(st::DType d, at::ScalarType* out) {
  switch (d) {
    case st::DType::kF32: *out = at::kFloat; return true;
    case st::DType::kBF16: *out = at::kBFloat16; return true;
    case st::DType::kF16: *out = at::kHalf; return true;
    case st::DType::kF64: *out = at::kDouble; return true;
    default: return false;
  }
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::vector<at::Tensor> load_hf_units(const std::string& dir, const ModelLayout& layout,
                                      at::ScalarType dtype) {
  const st::Reader reader = st::Reader::open(dir);
  std::set<std::string> expected;
  for (const auto& u : layout.units)
    for (const auto& p : u.params) expected.insert(p.name);

  // Every tensor in the files must be one of the layout's (or an ignorable rotary table).
  // A tied model's folder may still hold lm_head.weight (some exports write the tied matrix
  // twice): accepted when it equals the embedding, checked below.
  const std::vector<std::string> names = reader.names();
  const bool tied_copy = layout.tied && !expected.count("lm_head.weight") &&
                         std::find(names.begin(), names.end(), "lm_head.weight") != names.end();
  std::vector<std::string> extra;
  for (const auto& name : names)
    if (!expected.count(name) && !ends_with(name, ".rotary_emb.inv_freq") &&
        !(tied_copy && name == "lm_head.weight"))
      extra.push_back(name);
  if (!extra.empty()) {
    std::string list;
    for (size_t i = 0; i < extra.size() && i < 20; ++i) list += (i ? ", " : "") + extra[i];
    if (extra.size() > 20) list += ", ... (" + std::to_string(extra.size() - 20) + " more)";
    throw std::runtime_error(reader.source() + ": " + std::to_string(extra.size()) +
                             " tensor(s) that an xy LLaMA does not have: " + list);
  }

  std::vector<at::Tensor> units;
  units.reserve(layout.units.size());
  for (const auto& u : layout.units) {
    at::Tensor flat = at::zeros({u.padded_numel}, at::TensorOptions().dtype(dtype));
    for (const auto& p : u.params) {
      const st::TensorRef ref = reader.get(p.name);  // throws "missing tensor" naming the source
      const st::TensorInfo& info = *ref.info;
      if (info.shape != p.shape)
        throw std::runtime_error(*ref.file + ": tensor '" + p.name + "': shape " +
                                 shape_str(info.shape) + ", expected " + shape_str(p.shape) +
                                 " for this model");
      at::ScalarType src_type;
      if (!to_scalar_type(info.dtype, &src_type))
        throw std::runtime_error(*ref.file + ": tensor '" + p.name + "': dtype " +
                                 st::dtype_name(info.dtype) + " is not a float type");
      // The mapping is read-only and may be misaligned for the element type: copy through an
      // aligned buffer when it is.
      const size_t esize = st::dtype_size(info.dtype);
      at::Tensor src;
      if (reinterpret_cast<uintptr_t>(ref.data) % esize == 0) {
        src = at::from_blob(const_cast<uint8_t*>(ref.data), p.shape,
                            at::TensorOptions().dtype(src_type));
      } else {
        src = at::empty(p.shape, at::TensorOptions().dtype(src_type));
        std::memcpy(src.data_ptr(), ref.data, info.nbytes());
      }
      flat.narrow(0, p.offset, p.numel).view(p.shape).copy_(src);
    }
    units.push_back(std::move(flat));
  }
  if (tied_copy) {
    const ParamSpec& e = layout.units.front().params.front();  // model.embed_tokens.weight
    const st::TensorRef ref = reader.get("lm_head.weight");
    at::ScalarType src_type;
    bool same = ref.info->shape == e.shape && to_scalar_type(ref.info->dtype, &src_type);
    if (same) {
      at::Tensor head = at::empty(e.shape, at::TensorOptions().dtype(src_type));
      std::memcpy(head.data_ptr(), ref.data, ref.info->nbytes());
      same = at::equal(head.to(dtype), units.front().narrow(0, e.offset, e.numel).view(e.shape));
    }
    if (!same)
      throw std::runtime_error(*ref.file + ": tensor 'lm_head.weight' differs from "
                               "'model.embed_tokens.weight', but the model has tied embeddings "
                               "(tie_word_embeddings): its LM head is the embedding matrix");
  }
  return units;
}

void save_hf_model(const std::string& dir, const ModelConfig& model, const ModelLayout& layout,
                   const std::vector<at::Tensor>& units, at::ScalarType dtype,
                   int64_t max_shard_bytes, const SaveProgress& progress, const HfFolderExtras& extras) {
  namespace fs = std::filesystem;
  for (const auto& [name, contents] : extras.files)
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == ".." ||
        name == "config.json" || name == "generation_config.json" || name.find(".safetensors") != std::string::npos)
      throw std::invalid_argument("save_hf_model: '" + name + "' is not a file name an export may add");
  if (dtype != at::kFloat && dtype != at::kBFloat16)
    throw std::invalid_argument("save_hf_model: dtype must be float32 or bfloat16");
  if (max_shard_bytes <= 0) throw std::invalid_argument("save_hf_model: max_shard_bytes must be > 0");
  if (units.size() != layout.units.size())
    throw std::invalid_argument("save_hf_model: " + std::to_string(units.size()) +
                                " unit buffers for a layout of " +
                                std::to_string(layout.units.size()) + " units");
  for (size_t i = 0; i < units.size(); ++i)
    if (units[i].dim() != 1 || units[i].numel() < layout.units[i].numel)
      throw std::invalid_argument("save_hf_model: unit " + layout.units[i].name + " has " +
                                  std::to_string(units[i].numel()) + " elements, needs " +
                                  std::to_string(layout.units[i].numel));

  const fs::path target(dir);
  std::error_code ec;
  if (fs::exists(target, ec) && !(fs::is_directory(target, ec) && fs::is_empty(target, ec)))
    throw std::runtime_error(dir + ": already exists and is not an empty directory");
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  const fs::path tmp = parent / ("." + target.filename().string() + ".partial-" +
                                 std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec))
    throw std::runtime_error(tmp.string() + ": cannot create: " + ec.message());

  try {
    const std::string torch_dtype = dtype == at::kFloat ? "float32" : "bfloat16";
    write_hf_config((tmp / "config.json").string(), model, torch_dtype, extras.token_ids);
    if (extras.generation_config)
      write_file_atomic((tmp / "generation_config.json").string(), hf_generation_config_json(extras.token_ids));
    for (const auto& [name, contents] : extras.files) write_file_atomic((tmp / name).string(), contents);
    const st::DType file_dtype = dtype == at::kFloat ? st::DType::kF32 : st::DType::kBF16;
    std::vector<st::TensorToWrite> tensors;
    for (size_t i = 0; i < units.size(); ++i) {
      for (const auto& p : layout.units[i].params) {
        st::TensorToWrite t;
        t.name = p.name;
        t.dtype = file_dtype;
        t.shape = p.shape;
        // Converted one tensor at a time, while it is written.
        const at::Tensor view = units[i].narrow(0, p.offset, p.numel);
        t.fill = [view, dtype](void* dst) {
          at::Tensor c = view.to(at::kCPU).to(dtype).contiguous();
          std::memcpy(dst, c.data_ptr(), c.numel() * c.element_size());
        };
        tensors.push_back(std::move(t));
      }
    }
    st::write_sharded(tmp.string(), tensors, static_cast<uint64_t>(max_shard_bytes),
                      {{"format", "pt"}}, progress);
    if (fs::exists(target, ec)) fs::remove(target, ec);  // the empty directory checked above
    fs::rename(tmp, target);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace xy
