// Tests of the config loader: the presets, defaults, a full round trip, the shipped configs, and
// the field tables as the schema, the reader and the docs (docs/CONFIG.md's key tables,
// config/tiny.toml). One test per kind of mistake is in config_errors_test.cpp.
#include "io/config.hpp"
#include "io/hf_config.hpp"
#include "io/config_fields.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>

#include "tests/config_test.hpp"

namespace xy {
namespace {

using test::error_of;
using test::Has;

// ---- valid input -------------------------------------------------------------------------------

TEST(ConfigPresets, ShapesAreExact) {
  struct Shape {
    const char* name;
    int64_t hidden, intermediate, layers, heads, kv_heads, vocab;
  };
  const Shape shapes[] = {
      {"tiny", 256, 688, 4, 8, 8, 32000},
      {"1b", 2048, 5504, 24, 16, 16, 32000},
      {"3b", 3200, 8640, 26, 32, 32, 32000},
      {"7b", 4096, 11008, 32, 32, 32, 32000},
      {"xuanyuan-6b", 4096, 11008, 30, 32, 32, 39438},
  };
  for (const Shape& s : shapes) {
    SCOPED_TRACE(s.name);
    ModelConfig m = model_preset(s.name);
    EXPECT_EQ(m.preset, s.name);
    EXPECT_EQ(m.hidden, s.hidden);
    EXPECT_EQ(m.intermediate, s.intermediate);
    EXPECT_EQ(m.layers, s.layers);
    EXPECT_EQ(m.heads, s.heads);
    EXPECT_EQ(m.kv_heads, s.kv_heads);
    EXPECT_EQ(m.vocab_size, s.vocab);
  }
  ModelConfig llama = model_preset("7b");
  EXPECT_EQ(llama.max_seq_len, 4096);
  EXPECT_DOUBLE_EQ(llama.rms_eps, 1e-5);
  EXPECT_DOUBLE_EQ(llama.rope_theta, 10000.0);
  EXPECT_EQ(model_preset("xuanyuan-6b").max_seq_len, 4096);
  ModelConfig custom = model_preset("custom");
  EXPECT_EQ(custom.hidden, 0);
  EXPECT_EQ(custom.vocab_size, 0);
}

// The presets of today's open models are exactly their published config.json files (as
// read by io/hf_config; docs/CONFIG.md, "Presets", says where each comes from).
TEST(ConfigPresets, OpenModelsEqualTheirPublishedConfigJson) {
  const std::string llama_common =
      R"("architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
         "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
         "vocab_size": 128256, "attention_bias": false, "mlp_bias": false, "num_key_value_heads": 8,)";
  const std::string qwen_common =
      R"("architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_act": "silu",
         "head_dim": 128, "max_position_embeddings": 40960, "rms_norm_eps": 1e-06,
         "rope_scaling": null, "rope_theta": 1000000, "vocab_size": 151936,
         "attention_bias": false, "use_sliding_window": false, "num_key_value_heads": 8,)";
  const std::pair<const char*, std::string> published[] = {
      {"llama3.1-8b", "{" + llama_common + R"("hidden_size": 4096, "intermediate_size": 14336,
         "num_attention_heads": 32, "num_hidden_layers": 32, "tie_word_embeddings": false,
         "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192, "rope_type": "llama3"}})"},
      {"llama3.2-1b", "{" + llama_common + R"("head_dim": 64, "hidden_size": 2048,
         "intermediate_size": 8192, "num_attention_heads": 32, "num_hidden_layers": 16,
         "tie_word_embeddings": true,
         "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192, "rope_type": "llama3"}})"},
      {"llama3.2-3b", "{" + llama_common + R"("head_dim": 128, "hidden_size": 3072,
         "intermediate_size": 8192, "num_attention_heads": 24, "num_hidden_layers": 28,
         "tie_word_embeddings": true,
         "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192, "rope_type": "llama3"}})"},
      {"qwen3-1.7b", "{" + qwen_common + R"("hidden_size": 2048, "intermediate_size": 6144,
         "num_attention_heads": 16, "num_hidden_layers": 28, "tie_word_embeddings": true})"},
      {"qwen3-8b", "{" + qwen_common + R"("hidden_size": 4096, "intermediate_size": 12288,
         "num_attention_heads": 32, "num_hidden_layers": 36, "tie_word_embeddings": false})"},
  };
  for (const auto& [name, json] : published) {
    SCOPED_TRACE(name);
    const ModelConfig p = model_preset(name);
    const ModelConfig h = parse_hf_config(json, name).model;
    EXPECT_EQ(p.family, h.family);
    EXPECT_EQ(p.vocab_size, h.vocab_size);
    EXPECT_EQ(p.hidden, h.hidden);
    EXPECT_EQ(p.intermediate, h.intermediate);
    EXPECT_EQ(p.layers, h.layers);
    EXPECT_EQ(p.heads, h.heads);
    EXPECT_EQ(p.kv_heads, h.kv_heads);
    EXPECT_EQ(head_dim_of(p), head_dim_of(h));
    EXPECT_EQ(p.tie_embeddings, h.tie_embeddings);
    EXPECT_EQ(p.attention_bias, h.attention_bias);
    EXPECT_EQ(p.qk_norm, h.qk_norm);
    EXPECT_EQ(p.rms_eps, h.rms_eps);
    EXPECT_EQ(p.rope_theta, h.rope_theta);
    EXPECT_EQ(p.max_seq_len, h.max_seq_len);
    EXPECT_EQ(p.rope_scaling, h.rope_scaling);
    if (p.rope_scaling != "none") {
      EXPECT_EQ(p.rope_factor, h.rope_factor);
      EXPECT_EQ(p.rope_low_freq_factor, h.rope_low_freq_factor);
      EXPECT_EQ(p.rope_high_freq_factor, h.rope_high_freq_factor);
      EXPECT_EQ(p.rope_original_max_len, h.rope_original_max_len);
    }
  }
}

TEST(ConfigPresets, UnknownNameListsValidOnes) {
  try {
    model_preset("7B-chat");
    FAIL() << "no ConfigError";
  } catch (const ConfigError& e) {
    std::cout << "    message: " << e.what() << "\n";
    EXPECT_TRUE(Has(e.what(), "model.preset: '7B-chat' is not a preset"));
    EXPECT_TRUE(Has(e.what(), "valid: tiny, 1b, 3b, 7b, xuanyuan-6b, llama3.1-8b, llama3.2-1b, "
                              "llama3.2-3b, qwen3-1.7b, qwen3-8b, custom"));
  }
}

TEST(ConfigDefaults, EmptyFileGivesTheDocumentedDefaults) {
  Config c = parse_config("");
  EXPECT_EQ(c.source, "<string>");
  EXPECT_EQ(c.topology.device, "cpu");
  ASSERT_EQ(c.topology.nodes.size(), 1u);
  EXPECT_EQ(c.topology.nodes[0].host, "127.0.0.1");
  EXPECT_EQ(c.topology.nodes[0].port, 0);
  EXPECT_EQ(c.topology.nodes[0].devices, 1);
  EXPECT_EQ(c.topology.node_index, 0);
  EXPECT_EQ(c.topology.world_size(), 1);
  EXPECT_EQ(c.model.preset, "tiny");
  EXPECT_EQ(c.model.hidden, 256);
  EXPECT_EQ(c.model.vocab_size, 32000);
  EXPECT_EQ(c.model.max_seq_len, 4096);
  EXPECT_EQ(c.model.init_seed, 1234u);
  EXPECT_EQ(c.data.inputs, std::vector<std::string>{"data/sample/fincorpus_sample.jsonl.gz"});
  EXPECT_EQ(c.data.text_field, "text");
  EXPECT_EQ(c.data.tokenizer, "");
  EXPECT_EQ(c.data.tokenizer_vocab, 8000);
  EXPECT_EQ(c.data.work_dir, "runs/tiny");
  EXPECT_EQ(c.data.seq_len, 256);
  EXPECT_EQ(c.data.seed, 42u);
  EXPECT_EQ(c.train.steps, 200);
  EXPECT_EQ(c.train.micro_batch, 8);
  EXPECT_EQ(c.train.grad_accum, 1);
  EXPECT_EQ(c.train.precision, "fp32");
  EXPECT_EQ(c.train.log_every, 10);
  EXPECT_EQ(c.train.threads, 0);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 3e-3);
  EXPECT_DOUBLE_EQ(c.optimizer.min_lr, 3e-4);
  EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.9);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.95);
  EXPECT_DOUBLE_EQ(c.optimizer.eps, 1e-8);
  EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 0.1);
  EXPECT_EQ(c.optimizer.no_decay, std::vector<std::string>{"norm"});
  EXPECT_DOUBLE_EQ(c.optimizer.grad_clip, 1.0);
  EXPECT_EQ(c.optimizer.warmup_steps, 20);
  EXPECT_EQ(c.optimizer.schedule, "cosine");
  EXPECT_EQ(c.actors.prefetch_batches, 2);
  EXPECT_EQ(c.actors.prefetch_layers, 1);
  EXPECT_EQ(c.actors.gather_budget_mb, 4096);
  EXPECT_EQ(c.actors.adam_threads, 0);
  EXPECT_DOUBLE_EQ(c.deadlines.collective_s, 120);
  EXPECT_DOUBLE_EQ(c.deadlines.compute_s, 300);
  EXPECT_DOUBLE_EQ(c.deadlines.optimizer_s, 300);
  EXPECT_DOUBLE_EQ(c.deadlines.batch_s, 120);
  EXPECT_DOUBLE_EQ(c.deadlines.checkpoint_s, 1800);
  EXPECT_DOUBLE_EQ(c.deadlines.first_step_factor, 5);
  EXPECT_DOUBLE_EQ(c.deadlines.poll_ms, 200);
  EXPECT_EQ(c.checkpoint.dir, "runs/tiny/checkpoints");
  EXPECT_EQ(c.checkpoint.every_steps, 0);
  EXPECT_EQ(c.checkpoint.keep_last, 2);
}

TEST(ConfigDefaults, DerivedDefaultsFollowOtherKeys) {
  Config c = parse_config(R"(
[model]
preset = "custom"
hidden = 64
intermediate = 172
layers = 2
heads = 4
[data]
work_dir = "/tmp/run7"
)");
  EXPECT_EQ(c.model.kv_heads, 4);    // 0 = heads, resolved at load
  EXPECT_EQ(c.model.vocab_size, 0);  // custom: take the tokenizer's
  EXPECT_EQ(c.checkpoint.dir, "/tmp/run7/checkpoints");
}

TEST(ConfigPresets, ExplicitKeysOverrideThePreset) {
  Config c = parse_config(R"(
[model]
preset = "7b"
layers = 2
vocab_size = 0
kv_heads = 8
)");
  EXPECT_EQ(c.model.preset, "7b");
  EXPECT_EQ(c.model.hidden, 4096);
  EXPECT_EQ(c.model.layers, 2);
  EXPECT_EQ(c.model.vocab_size, 0);
  EXPECT_EQ(c.model.kv_heads, 8);
}

const char* kFullConfig = R"(# every key, none at its default
[topology]
device = "cuda"
node_index = 1

[[topology.nodes]]
host = "10.0.0.1"
port = 29500
devices = 2

[[topology.nodes]]
host = "10.0.0.2"
port = 29500
devices = 4

[model]
preset = "custom"
vocab_size = 4096
hidden = 512
intermediate = 1376
layers = 6
heads = 16
kv_heads = 4
rms_eps = 1e-6
rope_theta = 500000   # an integer where a float is expected is fine
max_seq_len = 1024
init_std = 0.01
init_seed = 99

[data]
inputs = ["a.jsonl.gz", "b.jsonl"]
text_field = "content"
tokenizer = "tok.model"
tokenizer_vocab = 4096
work_dir = "runs/full"
seq_len = 512
seed = 7

[train]
steps = 1000
micro_batch = 2
grad_accum = 4
precision = "bf16"
log_every = 5
threads = 3

[optimizer]
lr = 6e-4
min_lr = 6e-5
beta1 = 0.8
beta2 = 0.99
eps = 1e-6
weight_decay = 0.05
no_decay = ["norm", "bias", "embed"]
grad_clip = 0.5
warmup_steps = 100
schedule = "linear"

[actors]
prefetch_batches = 3
prefetch_layers = 2
gather_budget_mb = 1024
adam_threads = 8

[deadlines]
collective_s = 60
compute_s = 90.5
optimizer_s = 100
batch_s = 30
checkpoint_s = 600
first_step_factor = 3
poll_ms = 50

[checkpoint]
dir = "/ckpt/full"
every_steps = 250
keep_last = 5
)";

TEST(ConfigRoundTrip, EveryFieldIsRead) {
  Config c = parse_config(kFullConfig, "full.toml");
  EXPECT_EQ(c.source, "full.toml");
  EXPECT_EQ(c.topology.device, "cuda");
  EXPECT_EQ(c.topology.node_index, 1);
  ASSERT_EQ(c.topology.nodes.size(), 2u);
  EXPECT_EQ(c.topology.nodes[0].host, "10.0.0.1");
  EXPECT_EQ(c.topology.nodes[0].port, 29500);
  EXPECT_EQ(c.topology.nodes[0].devices, 2);
  EXPECT_EQ(c.topology.nodes[1].host, "10.0.0.2");
  EXPECT_EQ(c.topology.nodes[1].port, 29500);
  EXPECT_EQ(c.topology.nodes[1].devices, 4);
  EXPECT_EQ(c.model.preset, "custom");
  EXPECT_EQ(c.model.vocab_size, 4096);
  EXPECT_EQ(c.model.hidden, 512);
  EXPECT_EQ(c.model.intermediate, 1376);
  EXPECT_EQ(c.model.layers, 6);
  EXPECT_EQ(c.model.heads, 16);
  EXPECT_EQ(c.model.kv_heads, 4);
  EXPECT_DOUBLE_EQ(c.model.rms_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.model.rope_theta, 500000.0);
  EXPECT_EQ(c.model.max_seq_len, 1024);
  EXPECT_DOUBLE_EQ(c.model.init_std, 0.01);
  EXPECT_EQ(c.model.init_seed, 99u);
  EXPECT_EQ(c.data.inputs, (std::vector<std::string>{"a.jsonl.gz", "b.jsonl"}));
  EXPECT_EQ(c.data.text_field, "content");
  EXPECT_EQ(c.data.tokenizer, "tok.model");
  EXPECT_EQ(c.data.tokenizer_vocab, 4096);
  EXPECT_EQ(c.data.work_dir, "runs/full");
  EXPECT_EQ(c.data.seq_len, 512);
  EXPECT_EQ(c.data.seed, 7u);
  EXPECT_EQ(c.train.steps, 1000);
  EXPECT_EQ(c.train.micro_batch, 2);
  EXPECT_EQ(c.train.grad_accum, 4);
  EXPECT_EQ(c.train.precision, "bf16");
  EXPECT_EQ(c.train.log_every, 5);
  EXPECT_EQ(c.train.threads, 3);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 6e-4);
  EXPECT_DOUBLE_EQ(c.optimizer.min_lr, 6e-5);
  EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.8);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.99);
  EXPECT_DOUBLE_EQ(c.optimizer.eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 0.05);
  EXPECT_EQ(c.optimizer.no_decay, (std::vector<std::string>{"norm", "bias", "embed"}));
  EXPECT_DOUBLE_EQ(c.optimizer.grad_clip, 0.5);
  EXPECT_EQ(c.optimizer.warmup_steps, 100);
  EXPECT_EQ(c.optimizer.schedule, "linear");
  EXPECT_EQ(c.actors.prefetch_batches, 3);
  EXPECT_EQ(c.actors.prefetch_layers, 2);
  EXPECT_EQ(c.actors.gather_budget_mb, 1024);
  EXPECT_EQ(c.actors.adam_threads, 8);
  EXPECT_DOUBLE_EQ(c.deadlines.collective_s, 60);
  EXPECT_DOUBLE_EQ(c.deadlines.compute_s, 90.5);
  EXPECT_DOUBLE_EQ(c.deadlines.optimizer_s, 100);
  EXPECT_DOUBLE_EQ(c.deadlines.batch_s, 30);
  EXPECT_DOUBLE_EQ(c.deadlines.checkpoint_s, 600);
  EXPECT_DOUBLE_EQ(c.deadlines.first_step_factor, 3);
  EXPECT_DOUBLE_EQ(c.deadlines.poll_ms, 50);
  EXPECT_EQ(c.checkpoint.dir, "/ckpt/full");
  EXPECT_EQ(c.checkpoint.every_steps, 250);
  EXPECT_EQ(c.checkpoint.keep_last, 5);
}

TEST(ConfigTopology, WorldSizeSumsDevicesOverNodes) {
  Config c = parse_config(kFullConfig);
  EXPECT_EQ(c.topology.world_size(), 6);
  TopologyConfig t;
  t.nodes = {NodeSpec{"a", 1, 1}, NodeSpec{"b", 1, 8}};
  EXPECT_EQ(t.world_size(), 9);
}

TEST(ConfigFiles, LoadConfigNamesThePathInMessages) {
  char path[] = "/tmp/xy_config_test_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream out(path);
    out << "[train]\nsteps = 10\n\n[optimizer]\nwarmup_steps = 20\n";
  }
  try {
    load_config(path);
    ADD_FAILURE() << "no ConfigError";
  } catch (const ConfigError& e) {
    std::cout << "    message: " << e.what() << "\n";
    EXPECT_TRUE(Has(e.what(), std::string(path) + ":5:16: optimizer.warmup_steps: 20 exceeds "
                                                  "train.steps = 10"));
  }
  {
    std::ofstream out(path);
    out << "[train]\nsteps = 30\n";
  }
  Config c = load_config(path);
  EXPECT_EQ(c.source, path);
  EXPECT_EQ(c.train.steps, 30);
  std::remove(path);
}

// The configs shipped in config/ load (the test runs in the repository root).
TEST(ConfigFiles, ShippedConfigsAreValid) {
  for (const char* path : {"config/tiny.toml", "config/tiny-2rank.toml", "config/llama2-7b.toml",
                           "config/seed-cluster.toml"}) {
    SCOPED_TRACE(path);
    if (!std::ifstream(path)) {
      ADD_FAILURE() << path << " not found; run the test from the repository root";
      continue;
    }
    Config c = load_config(path);
    EXPECT_EQ(c.source, path);
  }
  Config tiny = load_config("config/tiny.toml");
  EXPECT_EQ(tiny.model.vocab_size, 0);
  EXPECT_EQ(tiny.data.tokenizer_vocab, 8000);
  EXPECT_EQ(tiny.train.steps, 200);
  EXPECT_EQ(tiny.checkpoint.every_steps, 100);
  EXPECT_EQ(load_config("config/tiny-2rank.toml").topology.world_size(), 2);
  Config llama = load_config("config/llama2-7b.toml");
  EXPECT_EQ(llama.model.hidden, 4096);
  EXPECT_EQ(llama.data.seq_len, 4096);
  EXPECT_EQ(llama.train.precision, "bf16");
  // The seed's two servers (docs/OPERATIONS.md, "Running on several machines").
  Config seed = load_config("config/seed-cluster.toml");
  EXPECT_EQ(seed.topology.nodes.size(), 2u);
  EXPECT_EQ(seed.topology.world_size(), 4);
  EXPECT_EQ(seed.topology.shard, "auto");
  EXPECT_EQ(step_samples(seed), 64);
}

// The continued-pretraining examples of today's families name a model folder that is not here:
// with init_from emptied they load, and their presets are the architectures the folders have.
TEST(ConfigFiles, ContinuedPretrainingExamplesAreValid) {
  struct Example {
    const char* path;
    const char* family;
    bool tied, qk_norm;
    const char* rope_scaling;
    const char* tokenizer_suffix;
  };
  for (const Example& e : {Example{"config/llama3.1-8b.toml", "llama", false, false, "llama3", "tokenizer.json"},
                           Example{"config/qwen3-1.7b.toml", "qwen3", true, true, "none", "tokenizer.json"}}) {
    SCOPED_TRACE(e.path);
    std::ifstream in(e.path);
    ASSERT_TRUE(in) << e.path << " not found; run the test from the repository root";
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t at = text.find("\ninit_from = \"");
    ASSERT_NE(at, std::string::npos) << "an example of continued pretraining sets model.init_from";
    const size_t value = text.find('"', at) + 1;
    text.erase(value, text.find('"', value) - value);  // init_from = "" (the folder is not here)
    const Config c = parse_config(text, e.path);
    EXPECT_EQ(c.model.family, e.family);
    EXPECT_EQ(c.model.tie_embeddings, e.tied);
    EXPECT_EQ(c.model.qk_norm, e.qk_norm);
    EXPECT_EQ(c.model.rope_scaling, e.rope_scaling);
    EXPECT_LE(c.data.seq_len, c.model.max_seq_len);
    EXPECT_TRUE(Has(c.data.tokenizer, e.tokenizer_suffix)) << c.data.tokenizer;
  }
}

// ---- each key stated once: the field tables make the schema, the reader and the docs --------------

// Every key of every table is read by its rule, and its message's "valid:" is its docs' column: a
// value no rule accepts (a date) names the key and what its row in docs/CONFIG.md says is valid.
TEST(ConfigFields, EveryKeyIsReadByItsRule) {
  using namespace config_fields;
  auto check = [](const std::string& text, const std::string& dotted, const std::string& valid) {
    SCOPED_TRACE(text);
    std::string msg = error_of(text);
    EXPECT_TRUE(Has(msg, "test.toml:2:"));
    EXPECT_TRUE(Has(msg, dotted + ": expected "));
    EXPECT_TRUE(Has(msg, "; valid: " + valid));
  };
  size_t keys = 0;
  Config cfg;
  for_each_table(cfg, [&](const auto& table, auto&) {
    for (const auto& f : table.fields) {
      check("[" + table.name + "]\n" + f.key + " = 2024-01-01\n", table.name + "." + f.key,
            f.rule.valid());
      ++keys;
    }
  });
  for (const auto& f : node_table().fields) {
    check("[[topology.nodes]]\n" + f.key + " = 2024-01-01\n", "topology.nodes[0]." + f.key,
          f.rule.valid());
    ++keys;
  }
  EXPECT_GE(keys, 70u);  // the tables are all there
}

// The "unknown key; valid: ..." list of a table is its field table's keys, in their order.
TEST(ConfigFields, UnknownKeyListsTheFieldTable) {
  using namespace config_fields;
  for (const TableKeys& t : schema()) {
    SCOPED_TRACE(t.name);
    std::string msg = error_of("[" + t.name + "]\nzzz_not_a_key = 1\n");
    EXPECT_EQ(msg, "test.toml:2:1: " + t.name + ".zzz_not_a_key: unknown key; valid: " + join(t.keys));
  }
  EXPECT_EQ(join(keys_of("topology")), "device, nodes, node_index, shard, gpu_memory_gb");
  EXPECT_EQ(join(node_table().keys()), "host, port, devices, micro_batch, grad_accum");
}

// Every key has its documentation (a key added without docs fails here).
TEST(ConfigDocs, EveryKeyHasADoc) {
  using namespace config_fields;
  for (const std::string& name : doc_table_names()) {
    std::istringstream rows(doc_table(name));
    std::string row;
    std::getline(rows, row);  // the header
    std::getline(rows, row);  // |---|
    while (std::getline(rows, row)) {
      SCOPED_TRACE(name + ": " + row);
      // | `key` | default | valid | meaning |: five bars, no empty cell.
      EXPECT_EQ(std::count(row.begin(), row.end(), '|'), 5);
      EXPECT_EQ(row.find("|  |"), std::string::npos);
      EXPECT_EQ(row.find("| |"), std::string::npos);
    }
  }
}

// docs/CONFIG.md holds exactly the key tables the field tables make, each between its markers.
// XY_WRITE_CONFIG_DOCS=1 writes them there instead (the way to regenerate them).
TEST(ConfigDocs, ConfigMdHasTheGeneratedKeyTables) {
  using namespace config_fields;
  const std::string path = "docs/CONFIG.md";
  std::ifstream in(path);
  ASSERT_TRUE(in) << path << " not found; run the test from the repository root";
  std::stringstream buf;
  buf << in.rdbuf();
  std::string doc = buf.str();
  const bool write = std::getenv("XY_WRITE_CONFIG_DOCS") != nullptr;
  const std::string regenerate =
      "regenerate the tables from the field tables in io/config_fields.cpp with\n"
      "  XY_WRITE_CONFIG_DOCS=1 build/bin/config_test --gtest_filter='ConfigDocs.*'\n"
      "(from the repository root), then review `git diff docs/CONFIG.md`";
  size_t tables = 0;
  for (const std::string& name : doc_table_names()) {
    const std::string begin = "<!-- keys of [" + name + "]: generated from io/config_fields.cpp -->\n";
    const std::string end = "<!-- end of keys of [" + name + "] -->\n";
    size_t b = doc.find(begin), e = b == std::string::npos ? b : doc.find(end, b);
    if (b == std::string::npos || e == std::string::npos) {
      ADD_FAILURE() << path << " lacks the markers of the key table of [" << name << "]: put\n  "
                    << begin << "  " << end << "where it goes, and " << regenerate;
      continue;
    }
    b += begin.size();
    const std::string want = doc_table(name);
    if (write) {
      doc.replace(b, e - b, want);
    } else {
      EXPECT_EQ(doc.substr(b, e - b), want)
          << path << ": the key table of [" << name << "] differs from its field table; " << regenerate;
    }
    ++tables;
  }
  EXPECT_EQ(tables, doc_table_names().size());
  // No table of a key that is gone.
  size_t markers = 0;
  for (size_t at = doc.find("<!-- keys of ["); at != std::string::npos; at = doc.find("<!-- keys of [", at + 1))
    ++markers;
  EXPECT_EQ(markers, doc_table_names().size()) << path << " has key tables of unknown tables";
  if (write) {
    std::ofstream(path) << doc;
    std::cout << "    wrote the key tables of " << path << "\n";
  }
}

// config/tiny.toml shows every key (its header says so, and README points users to it): a key
// added to the field tables must be added there too, with its default and a comment (commented
// out where writing it would change the run: the preset's shape keys, data.shards).
TEST(ConfigFiles, TinyTomlNamesEveryKey) {
  using namespace config_fields;
  std::ifstream in("config/tiny.toml");
  ASSERT_TRUE(in) << "config/tiny.toml not found; run the test from the repository root";
  std::set<std::string> written;  // dotted keys, and "topology.nodes" for [[topology.nodes]]
  std::string section, line;
  auto trim = [](const std::string& s) {
    size_t first = s.find_first_not_of(" \t");
    return first == std::string::npos ? std::string() : s.substr(first);
  };
  while (std::getline(in, line)) {
    line = trim(line);
    // A key shown commented out ("# hidden = 256  # ...") names it too.
    if (line.rfind("#", 0) == 0) {
      std::string rest = trim(line.substr(1));
      size_t name_end = rest.find_first_not_of("abcdefghijklmnopqrstuvwxyz_0123456789");
      if (name_end == 0 || name_end == std::string::npos || trim(rest.substr(name_end)).rfind("=", 0) != 0)
        continue;
      line = rest;
    }
    line = trim(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    if (line[0] == '[') {
      size_t open = line.find_first_not_of('['), close = line.find(']');
      section = line.substr(open, close - open);
      if (line.rfind("[[", 0) == 0) written.insert(section);
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string key = line.substr(0, eq);
    key = key.substr(0, key.find_last_not_of(" \t") + 1);
    written.insert(section + "." + key);
  }
  std::vector<std::string> missing;
  for (const TableKeys& t : schema())
    for (const std::string& key : t.keys)
      if (!written.count(t.name + "." + key)) missing.push_back(t.name + "." + key);
  for (const std::string& key : node_table().keys())
    if (!written.count("topology.nodes." + key)) missing.push_back("topology.nodes." + key);
  EXPECT_TRUE(missing.empty()) << "config/tiny.toml lacks " << join(missing)
                               << ": add each with its default and a comment";
}

}  // namespace
}  // namespace xy
