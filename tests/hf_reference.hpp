// An independent reference for Hugging Face folders: LlamaForCausalLM's eager forward written out
// in plain ATen from transformers' modeling_llama.py (RMSNorm, rotate-half RoPE, repeat_kv, causal
// softmax attention, SwiGLU), reading config.json with nlohmann::json and the safetensors files
// (single or sharded through model.safetensors.index.json) with a parser of its own. It shares no
// code with xy's model, layout, safetensors reader or config reader, so a folder that xy writes and
// this computes the same logits from is one that transformers reads the same way. F32 tensors only.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace xy::test {

class HfReference {
 public:
  explicit HfReference(const std::string& dir) {
    cfg_ = read_json(dir + "/config.json");
    std::ifstream index(dir + "/model.safetensors.index.json");
    if (index) {
      const nlohmann::json j = nlohmann::json::parse(index);
      std::map<std::string, bool> files;
      for (const auto& kv : j.at("weight_map").items()) files[kv.value().get<std::string>()] = true;
      for (const auto& f : files) read_safetensors(dir + "/" + f.first);
    } else {
      read_safetensors(dir + "/model.safetensors");
    }
  }

  size_t tensor_count() const { return tensors_.size(); }

  // Logits [B, T, vocab] of ids [B, T] (positions 0..T-1), fp32, without autograd.
  at::Tensor forward(const at::Tensor& ids) const {
    at::NoGradGuard ng;
    const int64_t nh = cfg_.at("num_attention_heads"), nkv = cfg_.value("num_key_value_heads", nh);
    const int64_t hidden = cfg_.at("hidden_size"), layers = cfg_.at("num_hidden_layers");
    const int64_t hd = cfg_.contains("head_dim") && !cfg_["head_dim"].is_null()
                           ? cfg_["head_dim"].get<int64_t>() : hidden / nh;
    const double eps = cfg_.at("rms_norm_eps");
    double theta = cfg_.value("rope_theta", 10000.0);
    if (cfg_.contains("rope_parameters") && cfg_["rope_parameters"].is_object())
      theta = cfg_["rope_parameters"].value("rope_theta", theta);
    const int64_t b = ids.size(0), t = ids.size(1);

    // LlamaRotaryEmbedding (default rope): inv_freq = 1 / theta^(2i / d); emb = cat(freqs, freqs).
    const at::Tensor inv_freq =
        1.0 / at::pow(theta, at::arange(0, hd, 2, at::kFloat).to(at::kDouble) / hd).to(at::kFloat);
    const at::Tensor freqs = at::outer(at::arange(t, at::kFloat), inv_freq);
    const at::Tensor emb = at::cat({freqs, freqs}, -1);
    const at::Tensor cos = emb.cos(), sin = emb.sin();
    auto rotate_half = [&](const at::Tensor& x) {
      return at::cat({-x.narrow(-1, hd / 2, hd / 2), x.narrow(-1, 0, hd / 2)}, -1);
    };
    auto rms = [&](const at::Tensor& x, const std::string& w) {
      return w_(w) * (x * at::rsqrt(x.pow(2).mean({-1}, true) + eps));
    };
    auto linear = [&](const at::Tensor& x, const std::string& w) { return at::matmul(x, w_(w).t()); };
    const at::Tensor mask = at::full({t, t}, -INFINITY, at::kFloat).triu(1);

    at::Tensor x = w_("model.embed_tokens.weight").index_select(0, ids.reshape({-1})).view({b, t, hidden});
    for (int64_t l = 0; l < layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const at::Tensor h = rms(x, p + "input_layernorm.weight");
      at::Tensor q = linear(h, p + "self_attn.q_proj.weight").view({b, t, nh, hd}).transpose(1, 2);
      at::Tensor k = linear(h, p + "self_attn.k_proj.weight").view({b, t, nkv, hd}).transpose(1, 2);
      at::Tensor v = linear(h, p + "self_attn.v_proj.weight").view({b, t, nkv, hd}).transpose(1, 2);
      q = q * cos + rotate_half(q) * sin;
      k = k * cos + rotate_half(k) * sin;
      k = k.repeat_interleave(nh / nkv, 1);  // repeat_kv: each KV head serves nh / nkv query heads
      v = v.repeat_interleave(nh / nkv, 1);
      const at::Tensor scores = at::matmul(q, k.transpose(2, 3)) / std::sqrt(static_cast<double>(hd)) + mask;
      const at::Tensor attn = at::matmul(at::softmax(scores, -1), v).transpose(1, 2).reshape({b, t, nh * hd});
      x = x + linear(attn, p + "self_attn.o_proj.weight");
      const at::Tensor h2 = rms(x, p + "post_attention_layernorm.weight");
      x = x + linear(at::silu(linear(h2, p + "mlp.gate_proj.weight")) * linear(h2, p + "mlp.up_proj.weight"),
                     p + "mlp.down_proj.weight");
    }
    return linear(rms(x, "model.norm.weight"), "lm_head.weight");
  }

 private:
  static nlohmann::json read_json(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error(path + ": cannot open");
    return nlohmann::json::parse(in);
  }

  // safetensors: 8-byte little-endian header length, a JSON header, then the raw data.
  void read_safetensors(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open");
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes.at(i));
    const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n));
    for (const auto& kv : header.items()) {
      if (kv.key() == "__metadata__") continue;
      if (kv.value().at("dtype") != "F32") throw std::runtime_error(path + ": " + kv.key() + " is not F32");
      const auto off = kv.value().at("data_offsets").get<std::vector<uint64_t>>();
      const auto shape = kv.value().at("shape").get<std::vector<int64_t>>();
      at::Tensor out = at::empty(shape, at::kFloat);
      if (static_cast<uint64_t>(out.nbytes()) != off.at(1) - off.at(0))
        throw std::runtime_error(path + ": " + kv.key() + ": data size does not match its shape");
      std::memcpy(out.data_ptr(), bytes.data() + 8 + n + off.at(0), out.nbytes());
      tensors_[kv.key()] = out;
    }
  }

  const at::Tensor& w_(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw std::runtime_error("no tensor " + name);
    return it->second;
  }

  nlohmann::json cfg_;
  std::map<std::string, at::Tensor> tensors_;
};

}  // namespace xy::test
