// Tests of the config loader: the presets, defaults, a full round trip, and one test per kind of
// mistake, each asserting the file:line:col, the dotted key and the hint of the message (and
// printing the message, so that the test log shows what users will read).
#include "io/config.hpp"
#include "io/config_fields.hpp"
#include "io/error_text.hpp"

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

namespace xy {
namespace {

// The ConfigError message parse_config gives for `text` (named test.toml), printed; a test
// failure if it accepts the text.
std::string error_of(const std::string& text) {
  try {
    parse_config(text, "test.toml");
  } catch (const ConfigError& e) {
    std::cout << "    message: " << e.what() << "\n";
    return e.what();
  }
  ADD_FAILURE() << "parse_config accepted:\n" << text;
  return "";
}

::testing::AssertionResult Has(const std::string& message, const std::string& part) {
  if (message.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "message\n  " << message << "\nlacks\n  " << part;
}

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

TEST(ConfigPresets, UnknownNameListsValidOnes) {
  try {
    model_preset("7B-chat");
    FAIL() << "no ConfigError";
  } catch (const ConfigError& e) {
    std::cout << "    message: " << e.what() << "\n";
    EXPECT_TRUE(Has(e.what(), "model.preset: '7B-chat' is not a preset"));
    EXPECT_TRUE(Has(e.what(), "valid: tiny, 1b, 3b, 7b, xuanyuan-6b, custom"));
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
  for (const char* path : {"config/tiny.toml", "config/tiny-2rank.toml", "config/llama2-7b.toml"}) {
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
}

// ---- one test per kind of mistake ---------------------------------------------------------------

TEST(ConfigErrors, MissingFile) {
  try {
    load_config("/nonexistent/xy.toml");
    FAIL() << "no ConfigError";
  } catch (const ConfigError& e) {
    std::cout << "    message: " << e.what() << "\n";
    EXPECT_STREQ(e.what(),
                 "cannot read config file '/nonexistent/xy.toml': No such file or directory");
  }
}

TEST(ConfigErrors, TomlSyntax) {
  std::string msg = error_of("[model]\nhidden = 256\nheads = = 8\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:9: TOML syntax error: "));
}

// toml++ 3.3 trips over its own checks on a few malformed lines (a "[" ending a line, "[=",
// "x = [}"); they are reported like any syntax error, at the line, instead of aborting.
TEST(ConfigErrors, TomlSyntaxThatTomlPlusPlusCannotLocate) {
  std::string msg = error_of("[model]\nhidden = 256\n[\nheads = 8\n");
  EXPECT_TRUE(Has(msg, "test.toml:3: TOML syntax error: toml++ cannot parse this line"));
  msg = error_of("[data]\ninputs = [\n  \"a.jsonl\",\n  }\"b.jsonl\"]\n");
  EXPECT_TRUE(Has(msg, "test.toml:4: TOML syntax error"));
}

TEST(ConfigErrors, UnknownTable) {
  std::string msg = error_of("[train]\nsteps = 5\n\n[modle]\nhidden = 256\n");
  EXPECT_TRUE(Has(msg, "test.toml:4:2: modle: unknown table (did you mean [model]?)"));
  EXPECT_TRUE(Has(msg,
                  "valid: [topology], [model], [data], [train], [optimizer], [actors], "
                  "[deadlines], [checkpoint]"));
}

TEST(ConfigErrors, UnknownKeySuggestsTheClosest) {
  std::string msg = error_of("[model]\npreset = \"tiny\"\nhiden = 256\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:1: model.hiden: unknown key (did you mean 'hidden'?)"));
  EXPECT_TRUE(Has(msg, "valid: preset, vocab_size, hidden, intermediate, layers, heads, kv_heads"));
}

TEST(ConfigErrors, FirstUnknownKeyInFileOrderIsReported) {
  std::string msg = error_of("[train]\nzzz = 1\naaa = 2\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:1: train.zzz: unknown key; valid: steps"));
}

TEST(ConfigErrors, KeyInTheWrongTable) {
  std::string msg = error_of("[train]\nsteps = 5\nlr = 0.1\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:1: train.lr: unknown key ('lr' belongs in [optimizer])"));
  EXPECT_TRUE(Has(msg, "valid: steps, micro_batch"));
}

TEST(ConfigErrors, KeyOutsideAnyTable) {
  std::string msg = error_of("steps = 5\n[train]\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:1:1: steps: unknown key at the top level ('steps' belongs in "
                  "[train])"));
}

TEST(ConfigErrors, WrongType) {
  std::string msg = error_of("[model]\nheads = \"8\"\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:9: model.heads: expected an integer, got a string ('8'); "
                  "valid: an integer >= 1"));
  msg = error_of("[train]\nsteps = 10.0\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:9: train.steps: expected an integer, got a float (10.0)"));
  msg = error_of("[optimizer]\nlr = \"3e-4\"\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:6: optimizer.lr: expected a number, got a string ('3e-4')"));
  msg = error_of("[data]\ninputs = \"a.jsonl\"\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:10: data.inputs: expected an array of strings, got a string"));
  msg = error_of("[data]\ninputs = [\"a.jsonl\", 3]\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:22: data.inputs[1]: expected a string, got an integer (3)"));
  msg = error_of("model = 3\n");
  EXPECT_TRUE(Has(msg, "test.toml:1:9: model: expected a table, got an integer (3)"));
}

TEST(ConfigErrors, NonPositiveCount) {
  std::string msg = error_of("[train]\nmicro_batch = 0\n");
  EXPECT_TRUE(
      Has(msg, "test.toml:2:15: train.micro_batch: 0 is out of range; valid: an integer >= 1"));
  msg = error_of("[model]\nlayers = -2\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:10: model.layers: -2 is out of range; valid: an integer in 1..1000000"));
}

TEST(ConfigErrors, NumberOutOfRange) {
  std::string msg = error_of("[model]\nrms_eps = -1e-6\n");
  EXPECT_TRUE(
      Has(msg, "test.toml:2:11: model.rms_eps: -1e-6 is out of range; valid: a number > 0"));
  msg = error_of("[model]\nrms_eps = nan\n");
  EXPECT_TRUE(Has(msg, "model.rms_eps: nan is not a finite number"));
  msg = error_of("[deadlines]\nfirst_step_factor = 0.5\n");
  EXPECT_TRUE(Has(msg, "deadlines.first_step_factor: 0.5 is out of range; valid: a number >= 1"));
}

TEST(ConfigErrors, ProbabilityOutsideUnitInterval) {
  std::string msg = error_of("[optimizer]\nbeta2 = 1.0\n");
  EXPECT_TRUE(
      Has(msg, "test.toml:2:9: optimizer.beta2: 1.0 is out of range; valid: a number in [0, 1)"));
}

TEST(ConfigErrors, LearningRateNotPositive) {
  std::string msg = error_of("[optimizer]\nlr = 0\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:6: optimizer.lr: 0 is out of range; valid: a number > 0"));
}

TEST(ConfigErrors, UnknownPrecision) {
  std::string msg = error_of("[train]\nprecision = \"fp8\"\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:13: train.precision: unknown value 'fp8' (did you mean 'fp32'?); "
                  "valid: fp32, bf16, fp16"));
}

TEST(ConfigErrors, UnknownDevice) {
  std::string msg = error_of("[topology]\ndevice = \"gpu\"\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:10: topology.device: unknown value 'gpu' (did you mean 'cpu'?); "
                  "valid: cpu, cuda"));
}

TEST(ConfigErrors, UnknownSchedule) {
  std::string msg = error_of("[optimizer]\nschedule = \"cosin\"\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:12: optimizer.schedule: unknown value 'cosin' (did you mean "
                  "'cosine'?); valid: cosine, linear, constant"));
}

TEST(ConfigErrors, UnknownPreset) {
  std::string msg = error_of("[model]\npreset = \"13b\"\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:10: model.preset: unknown value '13b' (did you mean '1b'?); "
                  "valid: tiny, 1b, 3b, 7b, xuanyuan-6b, custom"));
}

TEST(ConfigErrors, CustomPresetMissingAShape) {
  std::string msg = error_of("[model]\npreset = \"custom\"\nhidden = 64\nlayers = 2\nheads = 4\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:10: model.intermediate: missing; model.preset = 'custom' needs "
                  "hidden, intermediate, layers and heads"));
}

TEST(ConfigErrors, HeadsDoNotDivideHidden) {
  std::string msg = error_of("[model]\nhidden = 256\nheads = 7\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:3:9: model.heads: 7 does not divide model.hidden = 256: "
                  "head_dim would be 36.57, not an integer; valid: "));
  EXPECT_TRUE(
      Has(msg, "valid: a divisor of 256 that leaves an even head_dim, such as 2, 4, 8, 16"));
  // A heads value from the preset is named as such; the error points at the key that was written.
  msg = error_of("[model]\npreset = \"7b\"\nhidden = 4112\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:3:10: model.heads: 32 (from preset '7b') does not divide "
                  "model.hidden = 4112: head_dim would be 128.50, not an integer"));
}

TEST(ConfigErrors, HeadDimOdd) {
  std::string msg = error_of("[model]\nhidden = 264\nheads = 8\nkv_heads = 8\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:3:9: model.heads: head_dim = model.hidden / model.heads = 264 / 8 "
                  "= 33 is odd, but rotary embeddings rotate pairs of dimensions"));
  EXPECT_TRUE(
      Has(msg, "valid: a divisor of 264 that leaves an even head_dim, such as 4, 6, 11, 12"));
}

TEST(ConfigErrors, KvHeadsDoNotDivideHeads) {
  std::string msg = error_of("[model]\nheads = 8\nkv_heads = 3\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:12: model.kv_heads: 3 does not divide model.heads = 8"));
  EXPECT_TRUE(Has(msg, "valid: 0 (= heads), 1, 2, 4, 8"));
}

TEST(ConfigErrors, VocabSmallerThanTrainedTokenizer) {
  std::string msg = error_of("[model]\nvocab_size = 1000\n[data]\ntokenizer_vocab = 2048\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:14: model.vocab_size: 1000 is smaller than data.tokenizer_vocab "
                  "= 2048"));
  EXPECT_TRUE(Has(msg, "valid: 0 (take the tokenizer's) or >= 2048"));
}

TEST(ConfigErrors, SeqLenExceedsMaxSeqLen) {
  std::string msg = error_of("[model]\npreset = \"7b\"\n[data]\nseq_len = 8192\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:4:11: data.seq_len: 8192 exceeds model.max_seq_len = 4096 (from "
                  "preset '7b'); valid: 1..4096 (or raise model.max_seq_len)"));
}

TEST(ConfigErrors, MinLrAboveLr) {
  std::string msg = error_of("[optimizer]\nlr = 1e-4\nmin_lr = 1e-3\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:10: optimizer.min_lr: 0.001 exceeds optimizer.lr = 0.0001"));
  EXPECT_TRUE(Has(msg, "valid: 0 <= min_lr <= 0.0001"));
}

TEST(ConfigErrors, WarmupLongerThanTraining) {
  std::string msg = error_of("[train]\nsteps = 10\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:9: optimizer.warmup_steps: 20 (default) exceeds train.steps = "
                  "10 (the run would end before reaching the peak learning rate); valid: 0..10"));
}

TEST(ConfigErrors, NoNodes) {
  std::string msg = error_of("[topology]\nnodes = []\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:9: topology.nodes: the list is empty, but at least one node is "
                  "needed"));
}

TEST(ConfigErrors, NodeWithoutDevices) {
  std::string msg = error_of("[[topology.nodes]]\nhost = \"10.0.0.1\"\ndevices = 0\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:3:11: topology.nodes[0].devices: 0 is out of range; "
                  "valid: an integer in 1..1024"));
}

TEST(ConfigErrors, UnknownNodeKey) {
  std::string msg = error_of("[[topology.nodes]]\nhost = \"10.0.0.1\"\ngpus = 2\n");
  EXPECT_TRUE(
      Has(msg, "test.toml:3:1: topology.nodes[0].gpus: unknown key; valid: host, port, devices"));
}

TEST(ConfigErrors, NodeIndexOutOfRange) {
  std::string msg = error_of(R"([topology]
node_index = 2
[[topology.nodes]]
host = "10.0.0.1"
port = 29500
[[topology.nodes]]
host = "10.0.0.2"
port = 29500
)");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:14: topology.node_index: 2 but topology.nodes lists 2 nodes; "
                  "valid: 0..1"));
}

TEST(ConfigErrors, DuplicateHostPort) {
  std::string msg = error_of(R"([[topology.nodes]]
host = "10.0.0.1"
port = 29500
[[topology.nodes]]
host = "10.0.0.1"
port = 29500
)");
  EXPECT_TRUE(Has(msg,
                  "test.toml:6:8: topology.nodes[1]: 10.0.0.1:29500 is already used by "
                  "topology.nodes[0]; valid: a distinct host:port per node"));
}

TEST(ConfigErrors, PortZeroWithSeveralNodes) {
  std::string msg = error_of(R"([[topology.nodes]]
host = "10.0.0.1"
port = 29500
[[topology.nodes]]
host = "10.0.0.2"
)");
  EXPECT_TRUE(Has(msg,
                  "test.toml:5:8: topology.nodes[1].port: 0 (pick a free port) only works with "
                  "a single node"));
}

TEST(ConfigErrors, KeepLastZero) {
  std::string msg = error_of("[checkpoint]\nevery_steps = 50\nkeep_last = 0\n");
  EXPECT_TRUE(
      Has(msg, "test.toml:3:13: checkpoint.keep_last: 0 is out of range; valid: an integer >= 1"));
}

TEST(ConfigErrors, EmptyInputs) {
  std::string msg = error_of("[data]\ninputs = []\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:10: data.inputs: the list is empty; valid: one or more JSONL"));
}

TEST(ConfigData, ShardsReplaceInputs) {
  Config c = parse_config("[data]\nshards = \"runs/fincorpus-shards\"\nseq_len = 128\n");
  EXPECT_EQ(c.data.shards, "runs/fincorpus-shards");
  EXPECT_EQ(parse_config("").data.shards, "");
  // No trained tokenizer with shards: model.vocab_size below tokenizer_vocab is not an error.
  EXPECT_NO_THROW(parse_config("[model]\nvocab_size = 300\n[data]\nshards = \"s\"\n"));
}

TEST(ConfigErrors, ShardsTogetherWithInputs) {
  std::string msg = error_of("[data]\ninputs = [\"a.jsonl\"]\nshards = \"s\"\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:10: data.shards: is given together with data.inputs"));
  EXPECT_TRUE(Has(msg, "valid: remove data.inputs"));
}


// ---- [control] (docs/OPERATIONS.md) ------------------------------------------------------------

TEST(ConfigControl, KeysAndDefaults) {
  Config d = parse_config("");
  EXPECT_EQ(d.control.secret, "");
  EXPECT_EQ(d.control.heartbeat_s, 10);
  EXPECT_EQ(d.control.http_port, 0);
  EXPECT_TRUE(d.control.doctor);
  Config c = parse_config("[control]\nsecret = \"s3\"\nheartbeat_s = 2.5\nhttp_port = 8080\n"
                          "http_host = \"10.0.0.1\"\ndoctor = false\n");
  EXPECT_EQ(c.control.secret, "s3");
  EXPECT_EQ(c.control.heartbeat_s, 2.5);
  EXPECT_EQ(c.control.http_port, 8080);
  EXPECT_EQ(c.control.http_host, "10.0.0.1");
  EXPECT_FALSE(c.control.doctor);
}

TEST(ConfigControl, BadValuesNameTheKey) {
  EXPECT_TRUE(Has(error_of("[control]\nhttp_port = 70000\n"), "test.toml:2:13: control.http_port"));
  EXPECT_TRUE(Has(error_of("[control]\ndoctor = 1\n"), "control.doctor: expected a boolean"));
  EXPECT_TRUE(Has(error_of("[control]\nheartbeat_s = 0\n"), "control.heartbeat_s"));
  EXPECT_TRUE(Has(error_of("[control]\nsecrets = \"x\"\n"), "did you mean"));
}

TEST(ConfigFaults, InjectIsAString) {
  EXPECT_EQ(parse_config("").faults.inject, "");
  EXPECT_EQ(parse_config("[faults]\ninject = \"kill-node:rank=1\"\n").faults.inject, "kill-node:rank=1");
  EXPECT_TRUE(Has(error_of("[faults]\ninject = 3\n"), "faults.inject: expected a string"));
}

// ---- error text: what users see of a LibTorch error ---------------------------------------------

// c10::Error's what() carries a C++ backtrace; every top-level handler and the engine's error path
// print what comes before it (io/error_text.hpp).
TEST(ErrorText, LibTorchBacktraceIsCut) {
  EXPECT_EQ(without_backtrace("Device index value 1 is out of index range [0, 1)\nException raised "
                              "from check at c10/core/Device.h:12 (most recent call first):\nframe #0: "
                              "c10::Error::Error"),
            "Device index value 1 is out of index range [0, 1)");
  EXPECT_EQ(without_backtrace("[enforce fail at alloc_cpu.cpp:75] err == 0. DefaultCPUAllocator: can't "
                              "allocate memory\nframe #0: <unknown function> + 0x4c062"),
            "[enforce fail at alloc_cpu.cpp:75] err == 0. DefaultCPUAllocator: can't allocate memory");
  EXPECT_EQ(without_backtrace("a plain message"), "a plain message");
}

// ---- model.init_from: the shape comes from the folder's config.json, at load time ----------------

// preset = "custom" with init_from is documented as valid: the shape is the folder's (3 layers of
// hidden 64 in tests/fixtures/hf_tiny), taken by the reader itself, so that nothing (the checks
// here, the doctor, status) ever sees the zeros of 'custom' (a division by heads = 0 was a SIGFPE).
TEST(ConfigInitFrom, CustomPresetTakesTheFoldersShape) {
  Config c = parse_config("[model]\npreset = \"custom\"\ninit_from = \"tests/fixtures/hf_tiny\"\n"
                          "[data]\ntokenizer = \"tok.model\"\nseq_len = 32\n");
  EXPECT_EQ(c.model.init_from, "tests/fixtures/hf_tiny");
  EXPECT_EQ(c.model.vocab_size, 611);
  EXPECT_EQ(c.model.hidden, 64);
  EXPECT_EQ(c.model.intermediate, 176);
  EXPECT_EQ(c.model.layers, 3);
  EXPECT_EQ(c.model.heads, 8);
  EXPECT_EQ(c.model.kv_heads, 2);
  EXPECT_EQ(c.model.max_seq_len, 4096);  // the larger of the config's and max_position_embeddings
  // Explicit shape keys are replaced by the folder's, as docs/CONFIG.md says.
  Config t = parse_config("[model]\nhidden = 512\ninit_from = \"tests/fixtures/hf_tiny\"\n"
                          "[data]\ntokenizer = \"tok.model\"\n");
  EXPECT_EQ(t.model.hidden, 64);
}

TEST(ConfigInitFrom, RulesApplyToTheFoldersShapeAndBlameInitFrom) {
  // The folder's vocabulary (611) is smaller than the tokenizer trained from the inputs (8000).
  std::string msg = error_of("[model]\npreset = \"custom\"\ninit_from = \"tests/fixtures/hf_tiny\"\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:13: model.vocab_size: 611 (from tests/fixtures/hf_tiny/config.json) "
                       "is smaller than data.tokenizer_vocab = 8000"));
}

TEST(ConfigInitFrom, UnreadableFolderIsAConfigError) {
  std::string msg = error_of("[model]\npreset = \"custom\"\ninit_from = \"/nonexistent/hf\"\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:13: model.init_from: cannot take the model's shape from it: "));
  EXPECT_TRUE(Has(msg, "/nonexistent/hf"));
}

// ---- ranges: every numeric key has an upper bound where a larger value overflows or is a typo ----

TEST(ConfigRanges, NodePortLeavesRoomForTheStore) {
  std::string msg = error_of("[[topology.nodes]]\nhost = \"127.0.0.1\"\nport = 65535\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:8: topology.nodes[0].port: 65535 leaves no port for the "
                       "rendezvous store, which node 0 serves on its port + 1; valid: 1..65534"));
  EXPECT_EQ(parse_config("[[topology.nodes]]\nport = 65534\n").topology.nodes[0].port, 65534);
  // Another node of node 0's host must not take node 0's store port.
  msg = error_of("[[topology.nodes]]\nhost = \"h\"\nport = 29500\n"
                 "[[topology.nodes]]\nhost = \"h\"\nport = 29501\n");
  EXPECT_TRUE(Has(msg, "test.toml:6:8: topology.nodes[1].port: h:29501 is node 0's rendezvous store"));
  EXPECT_NO_THROW(parse_config("[[topology.nodes]]\nhost = \"a\"\nport = 29500\n"
                               "[[topology.nodes]]\nhost = \"b\"\nport = 29501\n"));
  // Node i's status server is on http_port + i.
  msg = error_of("[control]\nhttp_port = 65535\n[[topology.nodes]]\nhost = \"a\"\nport = 1000\n"
                 "[[topology.nodes]]\nhost = \"b\"\nport = 1000\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:13: control.http_port: 65535 + node index reaches 65536"));
  EXPECT_TRUE(Has(error_of("[[topology.nodes]]\ndevices = 5000\n"),
                  "topology.nodes[0].devices: 5000 is out of range; valid: an integer in 1..1024"));
}

TEST(ConfigRanges, DeadlinesAndIntervalsAtMostThirtyDays) {
  std::string msg = error_of("[deadlines]\ncollective_s = 1e300\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:16: deadlines.collective_s: 1e300 is out of range; valid: a "
                       "number > 0 and <= 2592000 (30 days)"));
  EXPECT_EQ(parse_config("[deadlines]\ncollective_s = 2592000\n").deadlines.collective_s, 2592000);
  for (const char* text :
       {"[deadlines]\ncompute_s = 3e6\n", "[deadlines]\noptimizer_s = 1e10\n",
        "[deadlines]\nbatch_s = 1e300\n", "[deadlines]\ncheckpoint_s = 2592001\n",
        "[deadlines]\nfirst_step_factor = 1e300\n", "[deadlines]\npoll_ms = 1e300\n",
        "[control]\nheartbeat_s = 1e300\n", "[checkpoint]\nevery_minutes = 1e300\n"}) {
    SCOPED_TRACE(text);
    EXPECT_TRUE(Has(error_of(text), "is out of range; valid: a number"));
  }
}

TEST(ConfigRanges, CountsWithUpperBounds) {
  EXPECT_TRUE(Has(error_of("[model]\nvocab_size = 2147483648\n"),
                  "model.vocab_size: 2147483648 is out of range; valid: an integer in 0..2147483647"));
  EXPECT_TRUE(Has(error_of("[model]\nlayers = 10000000\n"), "model.layers: 10000000 is out of range"));
  EXPECT_TRUE(Has(error_of("[train]\nthreads = 100000\n"), "train.threads: 100000 is out of range"));
  EXPECT_TRUE(Has(error_of("[actors]\nadam_threads = 100000\n"), "actors.adam_threads"));
  EXPECT_TRUE(Has(error_of("[actors]\nprefetch_batches = 100000\n"), "actors.prefetch_batches"));
  EXPECT_TRUE(Has(error_of("[actors]\ngather_budget_mb = 1099511627776\n"), "actors.gather_budget_mb"));
  EXPECT_TRUE(Has(error_of("[train]\ninitial_loss_scale = 1e300\n"), "train.initial_loss_scale: 1e300 is "
                                                                    "out of range; valid: a number > 0 and <= 2^64"));
  EXPECT_TRUE(Has(error_of("[data]\ntokenizer_vocab = 3000000000\n"), "data.tokenizer_vocab"));
}

// Sizes derived from the shape are checked with overflow-safe arithmetic and name the key (hidden =
// 2^62 overflowed the doctor's parameter count and ended in a raw allocator trace).
TEST(ConfigRanges, ShapeTooLargeNamesTheKey) {
  std::string msg = error_of("[model]\nhidden = 4611686018427387904\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:10: model.hidden: 4611686018427387904 makes q_proj (hidden x hidden) "
                       "larger than 2^53 elements"));
  msg = error_of("[model]\nintermediate = 4000000000000000\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:16: model.intermediate: 4000000000000000 makes gate_proj"));
  msg = error_of("[model]\nlayers = 1000000\nhidden = 65536\nheads = 64\nintermediate = 65536\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:10: model.layers: 1000000 makes the parameter count"));
  msg = error_of("[train]\nmicro_batch = 4398046511104\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:15: train.micro_batch: 4398046511104 makes"));
  msg = error_of("[model]\nmax_seq_len = 9007199254740992\n");
  EXPECT_TRUE(Has(msg, "model.max_seq_len: 9007199254740992 makes the rotary tables"));
  // The largest preset is well inside.
  EXPECT_NO_THROW(parse_config("[model]\npreset = \"7b\"\n"));
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
  EXPECT_EQ(join(keys_of("topology")), "device, nodes, node_index");
  EXPECT_EQ(join(node_table().keys()), "host, port, devices");
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

namespace xy {
TEST(ConfigErrors, EvalSetsAreNameEqualsPathOnceEach) {
  const Config ok = parse_config("[eval]\nsets = [\"fin=a.jsonl\", \"general-2=dir\"]\nevery_steps = 5\n");
  EXPECT_EQ(ok.eval.sets.size(), 2u);
  EXPECT_EQ(ok.eval.every_steps, 5);
  std::string msg = error_of("[eval]\nsets = [\"a.jsonl\"]\n");
  EXPECT_NE(msg.find(":2:8: eval.sets: 'a.jsonl' is not name=path; valid: \"name=path\""), std::string::npos) << msg;
  msg = error_of("[eval]\nsets = [\"fin=a\", \"fin=b\"]\n");
  EXPECT_NE(msg.find("eval.sets: the name 'fin' is used twice"), std::string::npos) << msg;
  msg = error_of("[eval]\nsets = [\"f i=a\"]\n");
  EXPECT_NE(msg.find("is not name=path"), std::string::npos) << msg;
  msg = error_of("[eval]\nsamples = 0\n");
  EXPECT_NE(msg.find("eval.samples"), std::string::npos) << msg;
  std::printf("%s\n", msg.c_str());
}
}  // namespace xy
