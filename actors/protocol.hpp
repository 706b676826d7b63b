// Every actor's message interface, in one place (see docs/ACTORS.md for the step's message flow).
//
// Payloads that hold tensors are local-only (shared memory within one process) and are marked
// unsafe below; everything that may cross the control plane is a plain struct with inspect().
//
//   node supervisor ── spawns ──> dataloader (node), watchdog (node), checkpoint (node),
//                                 and per rank: prefetcher, parameter-shard, optimizer-offload, trainer
//   trainer ── next ──────────> prefetcher ── next(rank) ──> dataloader
//   trainer ── gather/release/reduce/finish ──> parameter-shard ── collectives ──> Comm (Gloo/NCCL)
//   trainer ── step ──────────> optimizer-offload ── updated(unit, version) ──> parameter-shard
//   trainer ── save/flush ────> checkpoint
//   everyone ── OpRegistry (begin/end of in-flight operations) <── polled by ── watchdog
#pragma once

#include <ATen/ATen.h>
#include <caf/all.hpp>

#include "comm/device.hpp"
#include "optim/loss_scale.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace xy {

// ---- atoms -------------------------------------------------------------------------------------
using step_atom = caf::atom_constant<caf::atom("step")>;
using sync_atom = caf::atom_constant<caf::atom("sync")>;
using next_atom = caf::atom_constant<caf::atom("next")>;
using position_atom = caf::atom_constant<caf::atom("position")>;
using save_atom = caf::atom_constant<caf::atom("save")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;

// ---- payloads ----------------------------------------------------------------------------------

// One micro-batch. Local-only (tensors). From the dataloader: host tensors (pinned on a device
// rank). From the prefetcher on a device rank: device tensors whose copy up, issued on the rank's
// host-to-device stream, is complete at `ready` (the consumer's stream waits with wait_for, and
// the consumer calls record_stream for its stream); on a CPU rank host tensors and no event.
struct Batch {
  at::Tensor tokens;  // [micro_batch, seq_len + 1] int64; the inputs are tokens[:, :-1]
  at::Tensor labels;  // [micro_batch, seq_len] int64: tokens[:, 1:], -100 where masked out
  int64_t first_sample = 0;  // position of its first sample in the rank's sample stream
  DeviceEventPtr ready;      // device rank: the end of the copy up (null on CPU)
};

// A gathered unit: its full parameters, readable on the device once `ready` is waited for
// (a stream waits with ready->block(stream)). Local-only.
struct GatheredUnit {
  at::Tensor full;
  DeviceEventPtr ready;
  double waited_for_optimizer_s = 0;  // how long the request waited for the unit's update
};

// One unit's gradient from one micro-batch, complete on the device at `ready`. Local-only.
struct UnitGrad {
  int32_t unit = -1;
  at::Tensor grad;
  DeviceEventPtr ready;
  int64_t step = 0;  // the training step it belongs to
  bool last = false;  // of the step's last micro-batch (node sharding then all-reduces it between nodes)
};

// ---- the parameter-shard's messages: named fields rather than positional atom tuples ----------
// (The gradient of `reduce` is a UnitGrad, above.)

// The full parameters of `unit` at version >= `version`; then prefetch the next units in
// direction `dir` (+1 forward, -1 backward, 0 none).
struct GatherRequest {
  int32_t unit = -1;
  int32_t dir = +1;
  int64_t version = 0;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, GatherRequest& x) {
  return f(caf::meta::type_name("GatherRequest"), x.unit, x.dir, x.version);
}

// The caller no longer uses the gathered `unit`.
struct ReleaseRequest {
  int32_t unit = -1;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ReleaseRequest& x) {
  return f(caf::meta::type_name("ReleaseRequest"), x.unit);
}

// The end of the step's backward. Local-only (a tensor).
struct FinishRequest {
  // This rank's micro-batches' mean losses, each times its micro_batch, summed (0-d double, on the
  // device), and the samples they count (micro-batches x micro_batch): the step's loss is the
  // global sum over the global count, each sample weighing the same with mixed micro-batches.
  at::Tensor loss_sum;
  int64_t samples = 0;
  bool want_checkpoint = false;   // ask for a checkpoint after this step (ORed over ranks)
  // This rank's compute seconds per sample in this step: with several nodes, each node's local
  // rank 0 reports its node's (StepFacts::node_compute), whence node 0 proposes a balanced split.
  double compute_per_sample = 0;
};

// An evaluation's sums, all-reduced in the collective order (a 1-d double tensor on the rank's
// device). Local-only (a tensor).
struct SumRequest {
  at::Tensor values;
};

// From the optimizer: `unit`'s shard now holds `version`, on the device after `uploaded` (null on
// CPU). Local-only (a device event).
struct UnitUpdated {
  int32_t unit = -1;
  int64_t version = 0;
  DeviceEventPtr uploaded;
};

// The step's global facts, the same on every rank after finish.
struct StepFacts {
  double grad_norm = 0;   // global L2 norm of the (unclipped) gradient, still times the loss scale
  double loss = 0;        // mean loss over the step's samples on all ranks
  bool finite = true;     // false if any gradient was inf/nan (the step is skipped)
  std::vector<int32_t> overflow_units;  // units whose gradient was inf/nan on some rank
  bool checkpoint = false;  // some rank asked for a checkpoint after this step (time cadence)
  std::vector<double> node_compute;  // several nodes: per node, compute seconds per sample
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, StepFacts& x) {
  return f(caf::meta::type_name("StepFacts"), x.grad_norm, x.loss, x.finite, x.overflow_units,
           x.checkpoint, x.node_compute);
}

// What the optimizer applies at the end of a step (the same on every rank).
struct StepOrder {
  int64_t step = 0;        // 1-based; the units' version after this step
  int64_t adam_step = 0;   // Adam's step count (does not advance on skipped steps)
  double lr = 0;
  double grad_scale = 1;   // clip coefficient / (loss scale)
  bool skip = false;       // skip the update (overflow) but still publish the version
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, StepOrder& x) {
  return f(caf::meta::type_name("StepOrder"), x.step, x.adam_step, x.lr, x.grad_scale, x.skip);
}

// LossScalerState (optim/loss_scale.hpp) is saved in checkpoints.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, LossScalerState& x) {
  return f(caf::meta::type_name("LossScalerState"), x.scale, x.iter, x.last_overflow, x.cur_hysteresis);
}

// What a checkpoint records besides the shards.
struct CheckpointInfo {
  int64_t step = 0;
  int64_t adam_step = 0;
  int64_t samples_per_rank = 0;  // data position: samples each rank has consumed
  double loss = 0;
  LossScalerState scaler;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, CheckpointInfo& x) {
  return f(caf::meta::type_name("CheckpointInfo"), x.step, x.adam_step, x.samples_per_rank, x.loss,
           x.scaler);
}

// ---- actor interfaces ----------------------------------------------------------------------------

// Node-level: owns the token samples and their order.
using dataloader_actor = caf::typed_actor<
    // The next micro-batch of data-parallel rank `rank` in its deterministic sample stream.
    caf::replies_to<next_atom, int32_t>::with<Batch>>;

// Per rank: keeps the next K micro-batches ready (on a device rank, already copied up).
using prefetcher_actor = caf::typed_actor<
    // The next micro-batch (already fetched, and on a device already on it, if the prefetcher
    // kept up).
    caf::replies_to<next_atom>::with<Batch>>;

// Per rank: owns the rank's shards of every unit; gathers, releases, reduce-scatters.
using param_shard_actor = caf::typed_actor<
    // The full parameters of `unit` at version >= `version` (waits for the optimizer if needed);
    // then prefetches the next units in direction `dir` (+1 forward, -1 backward).
    caf::replies_to<GatherRequest>::with<GatheredUnit>,
    // The caller no longer uses the gathered `unit` (on a device it has recorded its stream's use
    // of the tensor with record_stream, so the memory is not reused too early).
    caf::reacts_to<ReleaseRequest>,
    // This rank's gradient of the full unit: reduce-scatter it and accumulate into the shard.
    caf::reacts_to<UnitGrad>,
    // End of the step's backward: wait for all reductions; all-reduce the squared norm and the
    // loss (sum over this rank's micro-batches as a 0-d tensor, count of micro-batches). Replies
    // the global facts (with the OR over ranks of want_checkpoint).
    caf::replies_to<FinishRequest>::with<StepFacts>,
    // An evaluation's values summed over every rank, in turn with the other collectives.
    caf::replies_to<SumRequest>::with<std::vector<double>>,
    // From the optimizer: `unit`'s shard now holds version `version`, on the device after the
    // event (null on CPU).
    caf::reacts_to<UnitUpdated>>;

// Per rank: fp32 master, m and v of the rank's shards; CPU AdamW.
using optimizer_actor = caf::typed_actor<
    // Step every unit, first unit first, telling the parameter-shard after each.
    caf::reacts_to<step_atom, StepOrder>,
    // Replies when every step ordered so far is applied; the current version.
    caf::replies_to<sync_atom>::with<int64_t>>;

// Node-level: snapshots shards to host memory and writes them in the background.
using checkpoint_actor = caf::typed_actor<
    // Snapshot now (replies when the snapshot is taken; the write continues in the background).
    caf::replies_to<save_atom, CheckpointInfo>::with<std::string>,
    // Replies when every write has been published (the directory of the last one, or "").
    caf::replies_to<flush_atom>::with<std::string>>;

}  // namespace xy

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(at::Tensor)  // local-only: shares memory, never serialised
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(xy::Batch)   // local-only: holds a tensor
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(xy::GatheredUnit)    // local-only: tensor and device event
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(xy::UnitGrad)        // local-only: tensor and device event
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(xy::DeviceEventPtr)  // local-only: a device event
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(xy::FinishRequest)   // local-only: a tensor
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(xy::SumRequest)      // local-only: a tensor
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(xy::UnitUpdated)     // local-only: a device event
