// The checkpoint actor: on `save` it snapshots every local rank's shards (working copy, fp32
// master, m, v) into host memory, answers at once so training continues, then writes them in the
// background and publishes the checkpoint atomically:
//   <dir>/.tmp-step-N/{rank-R.bin, manifest.json} --fsync--> rename to <dir>/step-N --> `latest`
// rank-R.bin holds, per unit in order, working | master | m | v as raw little-endian arrays; the
// manifest lists every file with its size and SHA-256, the units with their shard sizes, the step,
// the data position and the model config.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "actors/actors.hpp"
#include "ckpt/checkpoint_io.hpp"
#include "io/atomic_file.hpp"
#include "io/manifest.hpp"
#include "io/sha256.hpp"

namespace fs = std::filesystem;

namespace xy {
namespace {

struct Snapshot {
  CheckpointInfo info;
  std::vector<std::vector<at::Tensor>> ranks;  // per local rank: per unit 4 tensors
};

struct CheckpointState {
  std::shared_ptr<NodeContext> ctx;
  std::string last_published;
  static inline const char* name = "checkpoint";
};

// Writes `tensors` back to back into `path` and fsyncs it; returns {bytes, sha256}.
std::pair<int64_t, std::string> write_tensors(const fs::path& path, const std::vector<at::Tensor>& ts) {
  // A new file (exclusive, no link followed), mode 0666 & ~umask: owner-only by default.
  std::FILE* f = ::fdopen(open_exclusive(path.string()), "wb");
  if (!f) throw std::runtime_error("cannot create " + path.string() + ": " + std::strerror(errno));
  Sha256 sha;
  int64_t bytes = 0;
  for (const auto& t : ts) {
    at::Tensor c = t.contiguous();
    const size_t n = c.numel() * c.element_size();
    const auto* p = static_cast<const unsigned char*>(c.data_ptr());
    if (std::fwrite(p, 1, n, f) != n) {
      const std::string err = std::strerror(errno);
      std::fclose(f);
      throw std::runtime_error("write of " + path.string() + " failed: " + err);
    }
    sha.update(p, n);
    bytes += static_cast<int64_t>(n);
  }
  if (std::fflush(f) != 0 || ::fsync(fileno(f)) != 0) {
    const std::string err = std::strerror(errno);
    std::fclose(f);
    throw std::runtime_error("flush of " + path.string() + " failed: " + err);
  }
  if (std::fclose(f) != 0)
    throw std::runtime_error("close of " + path.string() + " failed: " + std::strerror(errno));
  return {bytes, sha.hex()};
}

// A host copy of `t` for the snapshot: device memory is copied down; host memory is copied by
// the node's thread pool (the optimizer, whose pool it is, is idle during a snapshot), so that the
// pause training takes is bounded by memory bandwidth, not by one thread.
at::Tensor snapshot_copy(NodeContext& ctx, const at::Tensor& t) {
  if (!t.is_cpu()) {
    // On the rank's host-to-device stream (which the optimizer's uploads of these working copies
    // used, and which waits for no collective), never on the device's legacy default stream: that
    // one is ordered after other work of the device, and with two local ranks at different steps
    // it could wait on a collective that the other rank cannot join until this snapshot is done.
    for (const auto& st : ctx.streams)
      if (st.device == t.device()) {
        c10::StreamGuard guard(st.h2d);
        return t.to(at::kCPU);
      }
    return t.to(at::kCPU);
  }
  at::Tensor src = t.contiguous();
  at::Tensor dst = at::empty_like(src);
  const auto* from = static_cast<const char*>(src.data_ptr());
  auto* to = static_cast<char*>(dst.data_ptr());
  ctx.adam_pool->parallel_for(static_cast<int64_t>(src.nbytes()), int64_t{1} << 16,
                              [&](int64_t b, int64_t e) { std::memcpy(to + b, from + b, e - b); });
  return dst;
}

// The optimizer's latest version of unit u's working copy where its write is deferred
// (UnitPlacement::deferred_write): the GPU part of the fp32 master rounded to the working
// precision (round to nearest even, as the device's recast and the CPU AdamW round), then the
// host part waiting in next_host.
at::Tensor next_working(NodeContext& ctx, const RankShards& sh, size_t u) {
  const at::Tensor host = snapshot_copy(ctx, sh.next_host[u]);
  if (sh.master_dev.empty() || sh.master_dev[u].numel() == 0) return host;
  return at::cat({snapshot_copy(ctx, sh.master_dev[u]).to(host.scalar_type()), host});
}

// Every node writes its ranks' files into <dir>/.tmp-step-N/ and reports them through the store;
// node 0 waits for every node's report, writes the manifest and publishes (rename, then `latest`).
std::string publish(NodeContext& ctx, const Snapshot& snap) {
  const fs::path root = ctx.cfg.checkpoint.dir;
  fs::create_directories(root);
  const std::string name = checkpoint_step_name(snap.info.step);
  const fs::path tmp = root / (".tmp-" + name), final_dir = root / name;
  // On a shared file system every node writes into the same one, so it is never emptied here
  // (what a crash left is removed when node 0's checkpoint actor starts); a link there is refused.
  make_dir_no_link(tmp.string());
  nlohmann::json files = nlohmann::json::array();
  // Under node sharding every node holds the same shards: node 0 writes them (one file per shard
  // of the node's group), the others none.
  for (size_t local = 0; local < snap.ranks.size() && !(ctx.node_shard && ctx.node_index != 0); ++local) {
    const int rank = ctx.shards[local]->shard;
    const std::string fname = checkpoint_rank_file(rank);
    auto [bytes, sha] = write_tensors(tmp / fname, snap.ranks[local]);
    files.push_back({{"name", fname}, {"rank", rank}, {"bytes", bytes}, {"sha256", sha}});
  }
  fsync_path(tmp.string(), true);
  const std::string key = "checkpoint/" + name + "/node/";
  if (ctx.node_index != 0) {
    ctx.store->set(key + std::to_string(ctx.node_index), files.dump());
    return final_dir.string();
  }
  for (int n = 1; n < ctx.nodes; ++n) {
    // Another node's word: only entries of the shape written above, for ranks of the job.
    const auto list = nlohmann::json::parse(ctx.store->get(key + std::to_string(n)), nullptr, false);
    if (!list.is_array()) throw std::runtime_error("node " + std::to_string(n) + " sent a malformed file list");
    for (const auto& f : list) {
      const bool ok = f.is_object() && f.contains("rank") && f["rank"].is_number_integer() &&
                      f["rank"].get<int64_t>() >= 0 && f["rank"].get<int64_t>() < ctx.world &&
                      f.contains("name") && f["name"] == checkpoint_rank_file(f["rank"].get<int64_t>()) &&
                      f.contains("bytes") && f["bytes"].is_number_integer() && f.contains("sha256") &&
                      f["sha256"].is_string();
      if (!ok) throw std::runtime_error("node " + std::to_string(n) + " sent a malformed file entry " + f.dump());
      files.push_back(f);
    }
  }

  nlohmann::json man;
  man["format"] = "xy-checkpoint-1";
  man["step"] = snap.info.step;
  man["adam_step"] = snap.info.adam_step;
  man["samples_per_rank"] = snap.info.samples_per_rank;
  const LossScalerState& ls = snap.info.scaler;
  man["loss_scaler"] = {{"scale", ls.scale}, {"iter", ls.iter}, {"last_overflow", ls.last_overflow},
                        {"cur_hysteresis", ls.cur_hysteresis}};
  man["loss"] = snap.info.loss;
  man["world_size"] = ctx.shard_world;
  man["data_ranks"] = ctx.world;
  man["samples"] = global_samples(ctx.cfg, snap.info.samples_per_rank, ctx.world);
  man["nodes"] = ctx.nodes;
  man["working_dtype"] = std::string(c10::toString(ctx.working_dtype));
  const ModelConfig& mc = ctx.cfg.model;
  man["model"] = {{"vocab_size", mc.vocab_size}, {"hidden", mc.hidden},
                  {"intermediate", mc.intermediate}, {"layers", mc.layers},
                  {"heads", mc.heads}, {"kv_heads", mc.kv_heads}, {"rms_eps", mc.rms_eps},
                  {"rope_theta", mc.rope_theta}, {"max_seq_len", mc.max_seq_len},
                  // The architecture beyond Llama-2's (absent in older manifests: Llama-2-shaped).
                  {"head_dim", mc.head_dim}, {"family", mc.family},
                  {"tie_embeddings", mc.tie_embeddings}, {"attention_bias", mc.attention_bias},
                  {"qk_norm", mc.qk_norm}, {"rope_scaling", mc.rope_scaling},
                  {"rope_factor", mc.rope_factor}, {"rope_original_max_len", mc.rope_original_max_len},
                  {"rope_low_freq_factor", mc.rope_low_freq_factor},
                  {"rope_high_freq_factor", mc.rope_high_freq_factor},
                  {"rope_beta_fast", mc.rope_beta_fast}, {"rope_beta_slow", mc.rope_beta_slow},
                  {"rope_attention_factor", mc.rope_attention_factor}};
  for (const auto& u : ctx.layout.units)
    man["units"].push_back({{"name", u.name}, {"numel", u.numel}, {"shard_numel", u.shard_numel}});
  man["files"] = files;
  // The run's tokenizer: `xy-node export` writes its ids into config.json and copies it.
  if (ctx.tokenizer) {
    const TokenizerRecord& t = *ctx.tokenizer;
    man["tokenizer"] = {{"file", t.file}, {"sha256", t.sha256}, {"vocab_size", t.vocab_size},
                        {"bos_id", t.bos_id}, {"eos_id", t.eos_id}};
  }
  // (A tokenizer path that is not UTF-8 is written with U+FFFD: export then reports it missing.)
  write_file_atomic((tmp / "manifest.json").string(),
                    man.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  fsync_path(tmp.string(), true);
  // A checkpoint of the same step from before (a resumed run re-saving it) is replaced; a link in
  // its place is removed as a link.
  std::error_code ec;
  if (fs::symlink_status(final_dir, ec).type() != fs::file_type::not_found) remove_checkpoint_dir(root, name);
  fs::rename(tmp, final_dir);
  // `latest` names the newest published checkpoint; replaced atomically.
  write_file_atomic((root / "latest").string(), name + "\n");
  apply_retention(root, snap.info.step, ctx.cfg.checkpoint.keep_last, ctx.cfg.checkpoint.keep_every);
  return final_dir.string();
}

// Removes what a crash left behind: unpublished (.tmp-*) and half-deleted (.del-*) checkpoints.
void remove_leftovers(const fs::path& root) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(".tmp-step-", 0) == 0 || n.rfind(".del-step-", 0) == 0) fs::remove_all(e.path(), ec);
  }
}

checkpoint_actor::behavior_type checkpoint_fn(
    checkpoint_actor::stateful_pointer<CheckpointState> self, std::shared_ptr<NodeContext> ctx) {
  self->state.ctx = ctx;
  if (ctx->node_index == 0) remove_leftovers(ctx->cfg.checkpoint.dir);
  return {
      [=](save_atom, CheckpointInfo info) -> caf::typed_response_promise<std::string> {
        auto& s = self->state;
        auto rp = self->make_response_promise<std::string>();
        const auto t0 = Clock::now();
        Snapshot snap;
        snap.info = info;
        // The optimizer's last uploads of the working copies and its device AdamW (both on the
        // rank's host-to-device stream) must be done (the host waits for that stream: once per
        // checkpoint, not in the steady state).
        for (const auto& st : s.ctx->streams)
          if (st.on_device()) st.h2d.synchronize();
        for (const auto& sh : s.ctx->shards) {
          std::vector<at::Tensor> ts;
          for (size_t u = 0; u < sh->working.size(); ++u) {
            // Deferred writes (the delayed update, working copies on the GPU): version info.step
            // may not be written in yet; it is the fp32 master's GPU part recast (as the
            // parameter-shard will write it) and next_host.
            if (s.ctx->plan.units[u].deferred_write)
              ts.push_back(next_working(*s.ctx, *sh, u));
            else
              ts.push_back(snapshot_copy(*s.ctx, sh->working_of(u, info.step)));
            // master, m, v: the GPU part (optimizer.placement) first, then the host part: one
            // layout whatever the placement.
            for (int which : {0, 1, 2}) {
              const auto [host, dev] = sh->state_parts(which);
              const bool split = !dev->empty() && (*dev)[u].numel() > 0;
              ts.push_back(split ? at::cat({snapshot_copy(*s.ctx, (*dev)[u]), snapshot_copy(*s.ctx, (*host)[u])})
                                 : snapshot_copy(*s.ctx, (*host)[u]));
            }
          }
          snap.ranks.push_back(std::move(ts));
        }
        const std::string name = checkpoint_step_name(info.step);
        const std::string dir = (fs::path(s.ctx->cfg.checkpoint.dir) / name).string();
        rp.deliver(dir);  // training continues; the write below runs on this actor's own thread
        const double pause_s = std::chrono::duration<double>(Clock::now() - t0).count();
        try {
          OpScope scope(&s.ctx->registry, "checkpoint", -1, -1, 0, info.step,
                        s.ctx->cfg.deadlines.checkpoint_s);
          fault::maybe("checkpoint", -1, info.step);  // fault injection (health/faults.hpp)
          s.last_published = publish(*s.ctx, snap);
          const double write_s = std::chrono::duration<double>(Clock::now() - t0).count() - pause_s;
          int64_t bytes = 0;
          for (const auto& r : snap.ranks)
            for (const auto& t : r) bytes += t.numel() * t.element_size();
          s.ctx->last_checkpoint_pause_s = pause_s;
          s.ctx->last_checkpoint_write_s = write_s;
          if (!s.ctx->quiet)
            std::printf("xy: checkpoint %s: training paused %.1f ms for the snapshot; written in "
                        "%.0f ms in the background (%.1f MiB, %.0f MiB/s)\n",
                        name.c_str(), pause_s * 1e3, write_s * 1e3, bytes / 1048576.0,
                        bytes / 1048576.0 / std::max(write_s, 1e-9));
        } catch (const std::exception& e) {
          std::error_code ec;
          fs::remove_all(fs::path(s.ctx->cfg.checkpoint.dir) / (".tmp-" + name), ec);
          s.ctx->fail("checkpoint " + name + " could not be written (the previous checkpoints are "
                      "intact): " + e.what());
        }
        return rp;
      },
      [=](flush_atom) -> std::string { return self->state.last_published; },
  };
}

}  // namespace

checkpoint_actor spawn_checkpoint(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx) {
  return sys.spawn<caf::detached>(checkpoint_fn, std::move(ctx));
}

}  // namespace xy
