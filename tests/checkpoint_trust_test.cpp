// Checkpoints are never lost and never trusted: retention orders by step and never deletes the
// checkpoint just published nor the one `latest` names; a fresh run refuses a directory holding
// another run's checkpoints; every manifest field is validated (file names, ranks, sizes, world
// size, model shape) so that a tampered manifest is refused with one line naming it, never read
// outside the checkpoint, never a crash; files are owner-only and temporaries do not follow links.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ckpt/checkpoint_io.hpp"
#include "actors/engine.hpp"
#include "io/atomic_file.hpp"
#include "io/manifest.hpp"
#include "test_util.hpp"

using namespace xy;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Per process: CTest runs each test case in a process of its own, two at a time, and the cases
// that share the good checkpoint below each make it.
fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("xy_ckpt_trust_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TrainResult run(Config cfg, const fs::path& ckpt_dir, int keep_last) {
  cfg.checkpoint.dir = ckpt_dir.string();
  cfg.checkpoint.keep_last = keep_last;
  RunOptions ro;
  ro.data = test::random_samples(6000, cfg.data.seq_len, cfg.model.vocab_size);
  ro.quiet = true;
  return run_training(cfg, ro);
}

std::vector<std::string> step_dirs(const fs::path& root) {
  std::vector<std::string> names;
  for (const auto& d : list_checkpoints(root.string())) names.push_back(fs::path(d).filename().string());
  return names;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The error read_checkpoint gives for `dir`, or "" if it reads it (any other exception fails).
std::string checkpoint_error(const fs::path& dir) {
  try {
    read_checkpoint(dir.string(), true);
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "";
}

// A real checkpoint of a 2-rank run (step 2), made once for the manifest tests.
const fs::path& good_checkpoint() {
  static const fs::path dir = [] {
    const fs::path root = fresh_dir("good");
    Config cfg = test::tiny_config(2, 2);
    const TrainResult r = run(cfg, root, 3);
    EXPECT_EQ(r.exit_code, kExitOk) << r.error;
    return root / "step-00000002";
  }();
  return dir;
}

// A well-formed tokenizer record (what checkpoint.cpp writes for a run's tokenizer).
json tokenizer_record() {
  return {{"file", "/models/x/tokenizer.json"}, {"sha256", std::string(64, 'a')}, {"vocab_size", 260},
          {"bos_id", 258}, {"eos_id", 259}};
}

}  // namespace

// The finding: a fresh 1-step run into a directory holding step-2 and step-4 printed
// "checkpoint .../step-00000001" and then deleted it (names sorted as text put it first), leaving
// `latest` naming nothing.
TEST(CheckpointRetention, NeverDeletesTheCheckpointJustPublished) {
  const fs::path root = fresh_dir("retention");
  Config four = test::tiny_config(1, 4);
  four.checkpoint.every_steps = 2;
  ASSERT_EQ(run(four, root, 2).exit_code, kExitOk);
  ASSERT_EQ(step_dirs(root), (std::vector<std::string>{"step-00000004", "step-00000002"}));

  const TrainResult one = run(test::tiny_config(1, 1), root, 2);
  ASSERT_EQ(one.exit_code, kExitOk) << one.error;
  std::printf("after a 1-step run with keep_last = 2: latest = %s, on disk:", slurp(root / "latest").c_str());
  for (const auto& n : step_dirs(root)) std::printf(" %s", n.c_str());
  std::printf("\n");
  EXPECT_TRUE(fs::is_directory(root / "step-00000001"));
  EXPECT_EQ(resolve_checkpoint("latest", root.string()), (root / "step-00000001").string());
  EXPECT_NO_THROW(read_checkpoint(resolve_checkpoint("latest", root.string()), true));
}

TEST(CheckpointRetention, OrdersByStepNumberNotByName) {
  const fs::path root = fresh_dir("order");
  // Nine digits sort before eight as text: step-100000000 < step-99999998 < step-99999999.
  for (const char* n : {"step-99999998", "step-99999999", "step-100000000"}) fs::create_directories(root / n);
  write_file_atomic((root / "latest").string(), "step-100000000\n");
  apply_retention(root, 100000000, 2, 0);
  EXPECT_EQ(step_dirs(root), (std::vector<std::string>{"step-100000000", "step-99999999"}));
  EXPECT_EQ(list_checkpoints(root.string()).front(), (root / "step-100000000").string());
}

TEST(CheckpointRetention, KeepsWhatLatestNames) {
  const fs::path root = fresh_dir("latest_kept");
  for (const char* n : {"step-00000001", "step-00000002", "step-00000003", "step-00000004"})
    fs::create_directories(root / n);
  write_file_atomic((root / "latest").string(), "step-00000001\n");  // e.g. set back by hand
  apply_retention(root, 4, 1, 0);
  EXPECT_EQ(step_dirs(root), (std::vector<std::string>{"step-00000004", "step-00000001"}));
}

TEST(CheckpointFreshRun, RefusesAnotherRunsCheckpointsUnlessTold) {
  const fs::path root = fresh_dir("fresh");
  EXPECT_NO_THROW(prepare_checkpoint_dir_for_fresh_run(root.string(), false));  // empty: fine
  EXPECT_NO_THROW(prepare_checkpoint_dir_for_fresh_run((root / "absent").string(), false));
  fs::create_directories(root / "step-00000002");
  fs::create_directories(root / "step-00000004");
  write_file_atomic((root / "latest").string(), "step-00000004\n");
  try {
    prepare_checkpoint_dir_for_fresh_run(root.string(), false);
    FAIL() << "a fresh run took over another run's checkpoints";
  } catch (const std::invalid_argument& e) {
    std::printf("%s\n", e.what());
    EXPECT_NE(std::string(e.what()).find("step-00000004, step-00000002"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("--resume latest"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("--overwrite-checkpoints"), std::string::npos);
  }
  EXPECT_TRUE(fs::exists(root / "step-00000004"));
  prepare_checkpoint_dir_for_fresh_run(root.string(), true);
  EXPECT_TRUE(step_dirs(root).empty());
  EXPECT_FALSE(fs::exists(root / "latest"));
}

// Each tampering of the finding, applied to a real manifest: refused by name, before any file
// outside the checkpoint is opened and before any tensor is sized from it.
TEST(CheckpointManifestTrust, TamperedManifestsAreRefusedByName) {
  const fs::path good = good_checkpoint();
  ASSERT_EQ(checkpoint_error(good), "");
  const json base = json::parse(slurp(good / "manifest.json"));
  const fs::path root = fresh_dir("tamper");
  std::ofstream(root / "outside.bin") << std::string(100, 'x');
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"relative path out of the checkpoint", [](json& j) { j["files"][0]["name"] = "../../outside.bin"; },
       "is not the file xy writes for rank 0"},
      {"absolute path", [](json& j) { j["files"][1]["name"] = "/etc/shadow"; }, "is not the file xy writes for rank 1"},
      {"negative element count", [](json& j) { j["units"][1]["numel"] = -5; }, "units[1].numel = -5"},
      {"shuffled element counts",
       [](json& j) { std::swap(j["units"][1]["numel"], j["units"][0]["numel"]); std::swap(j["units"][1]["shard_numel"], j["units"][0]["shard_numel"]); },
       "the model's layout has 'embed'"},
      {"shard count not from numel", [](json& j) { j["units"][0]["shard_numel"] = 1; }, "is not ceil(numel / world_size)"},
      {"world size past 32 bits", [](json& j) { j["world_size"] = 4294967297ull; }, "world_size = 4294967297"},
      {"world size as text", [](json& j) { j["world_size"] = "2"; }, "world_size = \"2\""},
      {"rank listed twice", [](json& j) { j["files"][1] = j["files"][0]; }, "rank 0 is listed twice"},
      {"rank out of range", [](json& j) { j["files"][1]["rank"] = 7; }, "files[1].rank = 7"},
      {"bytes that are not the layout's", [](json& j) { j["files"][0]["bytes"] = 12; }, "files[0].bytes = 12"},
      {"negative step", [](json& j) { j["step"] = -5; }, "step = -5"},
      // The data position of node sharding and mixed micro-batches.
      {"data ranks below the shards", [](json& j) { j["data_ranks"] = 1; }, "data_ranks = 1"},
      {"data ranks as text", [](json& j) { j["data_ranks"] = "4"; }, "data_ranks = \"4\""},
      {"samples negative", [](json& j) { j["samples"] = -8; }, "samples = -8"},
      {"samples as a fraction", [](json& j) { j["samples"] = 2.5; }, "samples = 2.5"},
      {"heads zero", [](json& j) { j["model"]["heads"] = 0; }, "model.heads = 0"},
      {"hidden huge", [](json& j) { j["model"]["hidden"] = int64_t{1} << 62; }, "model.hidden"},
      {"sha not hex", [](json& j) { j["files"][0]["sha256"] = "../../x"; }, "sha256 is not 64 lowercase hex"},
      {"units missing", [](json& j) { j.erase("units"); }, "missing field units"},
      {"loss scale negative", [](json& j) { j["loss_scaler"]["scale"] = -1.0; }, "loss_scaler.scale"},
      {"unknown dtype", [](json& j) { j["working_dtype"] = "Int"; }, "working_dtype 'Int'"},
      {"not an object", [](json& j) { j = json::array({1, 2}); }, "not a JSON object"},
      // The tokenizer record (optional, but whole and well-formed when present).
      {"tokenizer not an object", [](json& j) { j["tokenizer"] = "tok.json"; }, "field tokenizer is not an object"},
      {"tokenizer without file", [](json& j) { j["tokenizer"] = tokenizer_record(); j["tokenizer"].erase("file"); },
       "missing field tokenizer.file"},
      {"tokenizer file empty", [](json& j) { j["tokenizer"] = tokenizer_record(); j["tokenizer"]["file"] = ""; },
       "field tokenizer.file is empty"},
      {"tokenizer sha not hex", [](json& j) { j["tokenizer"] = tokenizer_record(); j["tokenizer"]["sha256"] = "abc"; },
       "field tokenizer.sha256 is not 64 lowercase hex digits"},
      {"tokenizer vocabulary zero", [](json& j) { j["tokenizer"] = tokenizer_record(); j["tokenizer"]["vocab_size"] = 0; },
       "field tokenizer.vocab_size = 0"},
      {"tokenizer vocabulary as text", [](json& j) { j["tokenizer"] = tokenizer_record(); j["tokenizer"]["vocab_size"] = "260"; },
       "field tokenizer.vocab_size = \"260\""},
      {"tokenizer bos beyond the vocabulary", [](json& j) { j["tokenizer"] = tokenizer_record(); j["tokenizer"]["bos_id"] = 260; },
       "field tokenizer.bos_id = 260: expected an integer in [-1, 259]"},
      {"tokenizer eos below -1", [](json& j) { j["tokenizer"] = tokenizer_record(); j["tokenizer"]["eos_id"] = -2; },
       "field tokenizer.eos_id = -2"},
      {"tokenizer eos missing", [](json& j) { j["tokenizer"] = tokenizer_record(); j["tokenizer"].erase("eos_id"); },
       "missing field tokenizer.eos_id"},
  };
  for (const auto& c : cases) {
    const fs::path dir = root / "ckpt";
    fs::remove_all(dir);
    fs::copy(good, dir);
    json j = base;
    c.edit(j);
    std::ofstream(dir / "manifest.json") << j.dump(2);
    const std::string err = checkpoint_error(dir);
    std::printf("%-36s -> %s\n", c.what, err.c_str());
    EXPECT_NE(err.find(c.expect), std::string::npos) << c.what << ": " << err;
  }
  // Not JSON at all, and a manifest that is a link.
  fs::remove_all(root / "ckpt");
  fs::copy(good, root / "ckpt");
  std::ofstream(root / "ckpt" / "manifest.json") << "{\"format\": ";
  EXPECT_NE(checkpoint_error(root / "ckpt").find("not valid JSON"), std::string::npos);
  fs::remove(root / "ckpt" / "manifest.json");
  fs::create_symlink(good / "manifest.json", root / "ckpt" / "manifest.json");
  EXPECT_NE(checkpoint_error(root / "ckpt").find("has no manifest.json"), std::string::npos);
}

// The tokenizer record reads back; a manifest without one (older xy, or a run given samples) reads
// as before; -1 is "none".
TEST(CheckpointManifestTrust, TokenizerRecord) {
  const fs::path good = good_checkpoint();
  const json base = json::parse(slurp(good / "manifest.json"));
  EXPECT_FALSE(base.contains("tokenizer"));  // run_training without RunOptions::tokenizer
  EXPECT_FALSE(read_checkpoint(good.string(), true).tokenizer.has_value());
  const fs::path dir = fresh_dir("tokrec") / "ckpt";
  fs::copy(good, dir);
  json j = base;
  j["tokenizer"] = tokenizer_record();
  j["tokenizer"]["bos_id"] = -1;
  std::ofstream(dir / "manifest.json") << j.dump(2);
  const CheckpointManifest m = read_checkpoint(dir.string(), true);
  ASSERT_TRUE(m.tokenizer.has_value());
  EXPECT_EQ(m.tokenizer->file, "/models/x/tokenizer.json");
  EXPECT_EQ(m.tokenizer->sha256, std::string(64, 'a'));
  EXPECT_EQ(m.tokenizer->vocab_size, 260);
  EXPECT_EQ(m.tokenizer->bos_id, -1);
  EXPECT_EQ(m.tokenizer->eos_id, 259);
}

TEST(CheckpointManifestTrust, RankFileThatIsALinkIsRefused) {
  const fs::path good = good_checkpoint();
  const fs::path dir = fresh_dir("link") / "ckpt";
  fs::copy(good, dir);
  fs::remove(dir / "rank-00001.bin");
  fs::create_symlink(good / "rank-00001.bin", dir / "rank-00001.bin");  // same bytes, but a link
  const std::string err = checkpoint_error(dir);
  std::printf("%s\n", err.c_str());
  EXPECT_NE(err.find("rank-00001.bin cannot be opened"), std::string::npos) << err;
  EXPECT_NE(err.find("symbolic link"), std::string::npos) << err;
}

TEST(CheckpointManifestTrust, LatestNamesOnlyASibling) {
  const fs::path root = fresh_dir("latest");
  fs::create_directories(root / "step-00000003");
  for (const char* bad : {"../step-00000003", "/etc", "..", "step-3/../../x", "", "step-"}) {
    write_file_atomic((root / "latest").string(), std::string(bad) + "\n");
    try {
      resolve_checkpoint("latest", root.string());
      FAIL() << "latest = '" << bad << "' was followed";
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find("must name a checkpoint directory beside it"), std::string::npos) << e.what();
    }
  }
  write_file_atomic((root / "latest").string(), "step-00000003\n");
  EXPECT_EQ(resolve_checkpoint("latest", root.string()), (root / "step-00000003").string());
  EXPECT_NE(checkpoint_error(root / "step-00000009").find("is not a directory (it does not exist)"), std::string::npos);
}

TEST(CheckpointManifestTrust, StepNames) {
  EXPECT_EQ(parse_checkpoint_step_name("step-00000012"), 12);
  EXPECT_EQ(parse_checkpoint_step_name("step-100000000"), 100000000);
  for (const char* bad : {"step--0000005", "step-", "step-1a", "Step-1", "step-1/..", ".tmp-step-1",
                          "step-1234567890123456789"})
    EXPECT_EQ(parse_checkpoint_step_name(bad), -1) << bad;
}

// Checkpoint files are owner-only whatever the umask the process started with; a link planted at
// a temporary's name is replaced, not written through.
TEST(CheckpointFiles, OwnerOnlyAndNoLinkFollowed) {
  const mode_t old = ::umask(022);
  ::unsetenv("XY_UMASK");
  apply_file_mode_policy();
  const fs::path root = fresh_dir("modes");
  const fs::path victim = fresh_dir("modes_victim") / "precious.txt";
  std::ofstream(victim) << "keep me";
  fs::create_symlink(victim, root / "latest.tmp");
  Config cfg = test::tiny_config(1, 1);
  const TrainResult r = run(cfg, root, 2);
  ASSERT_EQ(r.exit_code, kExitOk) << r.error;
  EXPECT_EQ(slurp(victim), "keep me");
  const auto mode = [](const fs::path& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 0777) : -1;
  };
  std::printf("modes: step dir %o, rank file %o, manifest %o, latest %o\n", mode(root / "step-00000001"),
              mode(root / "step-00000001" / "rank-00000.bin"), mode(root / "step-00000001" / "manifest.json"),
              mode(root / "latest"));
  EXPECT_EQ(mode(root / "step-00000001"), 0700);
  EXPECT_EQ(mode(root / "step-00000001" / "rank-00000.bin"), 0600);
  EXPECT_EQ(mode(root / "step-00000001" / "manifest.json"), 0600);
  EXPECT_EQ(mode(root / "latest"), 0600);

  // XY_UMASK=027 lets the group read.
  ::setenv("XY_UMASK", "027", 1);
  apply_file_mode_policy();
  write_file_atomic((root / "shared.txt").string(), "x");
  EXPECT_EQ(mode(root / "shared.txt"), 0640);
  ::setenv("XY_UMASK", "9", 1);
  EXPECT_THROW(apply_file_mode_policy(), std::invalid_argument);
  ::unsetenv("XY_UMASK");
  ::umask(old);
}
