// hf_logits HF_DIR FIXTURE OUT: xy's logits for a Hugging Face folder on the fixture's input_ids,
// written as OUT (safetensors: input_ids I64, logits F32) for
// `python3 scripts/make_hf_fixture.py --check-export HF_DIR --xy-logits OUT` to compare with
// transformers. Used by the interop acceptance run (docs/INTEROP.md).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cstdio>
#include <cstring>

#include "io/hf_config.hpp"
#include "io/safetensors.hpp"
#include "model/hf_io.hpp"
#include "model/llama.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: hf_logits HF_DIR FIXTURE.safetensors OUT.safetensors\n");
    return 2;
  }
  try {
    xy::ModelConfig m = xy::read_hf_config(argv[1]).model;
    const xy::ModelLayout layout = xy::build_layout(m, 1, {});
    const std::vector<at::Tensor> units = xy::load_hf_units(argv[1], layout, at::kFloat);
    xy::st::Reader fx = xy::st::Reader::open(argv[2]);
    const xy::st::TensorRef ids_ref = fx.get("input_ids");
    const auto& shape = ids_ref.info->shape;
    at::Tensor ids = at::empty(shape, at::kLong);
    std::memcpy(ids.data_ptr(), ids_ref.data, ids_ref.info->nbytes());
    m.max_seq_len = std::max<int64_t>(m.max_seq_len, ids.size(1));
    xy::Llama model(m, layout);
    at::NoGradGuard ng;
    at::Tensor logits = model.forward(units, ids).contiguous();
    std::vector<xy::st::TensorToWrite> out(2);
    out[0].name = "input_ids";
    out[0].dtype = xy::st::DType::kI64;
    out[0].shape = {ids.size(0), ids.size(1)};
    out[0].data = ids.data_ptr();
    out[1].name = "logits";
    out[1].dtype = xy::st::DType::kF32;
    out[1].shape = {logits.size(0), logits.size(1), logits.size(2)};
    out[1].data = logits.data_ptr();
    xy::st::write_file(argv[3], out);
    std::printf("hf_logits: %s: logits [%lld, %lld, %lld] written to %s\n", argv[1],
                static_cast<long long>(logits.size(0)), static_cast<long long>(logits.size(1)),
                static_cast<long long>(logits.size(2)), argv[3]);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hf_logits: %s\n", e.what());
    return 1;
  }
}
