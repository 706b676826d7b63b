// Spawn functions of every actor (their message interfaces are in protocol.hpp). Each lives in the
// .cpp of the same name; blocking work runs in detached actors (own thread), never in the
// cooperative scheduler.
#pragma once

#include <memory>
#include <vector>

#include "actors/engine.hpp"
#include "health/faults.hpp"
#include "actors/protocol.hpp"

namespace xy {

// Node: serves micro-batches from ctx->data in the deterministic order; starts each rank at
// `start_positions[local rank]` samples.
dataloader_actor spawn_dataloader(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx,
                                  std::vector<int64_t> start_positions);
// Rank: keeps cfg.actors.prefetch_batches micro-batches ready.
prefetcher_actor spawn_prefetcher(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx,
                                  int local_rank, dataloader_actor dataloader);
// Rank (detached): gathers, releases, reduce-scatters (actors/param_shard.cpp).
param_shard_actor spawn_param_shard(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx,
                                    int local_rank);
// Rank (detached): CPU AdamW on the rank's shards (actors/optimizer_offload.cpp).
optimizer_actor spawn_optimizer(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx,
                                int local_rank, param_shard_actor shard);
// Node (detached): snapshots and writes checkpoints (ckpt/checkpoint.cpp).
checkpoint_actor spawn_checkpoint(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx);
// Node: polls the registry; on a missed deadline writes the stall report and ends the process.
// Several nodes: also runs the control plane (heartbeats, job-wide stall reports; control.hpp).
caf::actor spawn_watchdog(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx);
// After a failure on a job of several nodes: waits up to control.heartbeat_s + 1.5 s for the
// control plane to tell whether a peer is lost, and if so ends the process with kExitPeerLost and
// the peer's name (a killed peer first shows as a failed collective).
void await_peer_verdict(const NodeContext& ctx);
// Rank (detached, blocking): runs the step schedule (actors/trainer.cpp). Local rank 0 also
// takes the periodic checkpoints, after syncing every local optimizer in `node_optimizers`.
caf::actor spawn_trainer(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx, int local_rank,
                         prefetcher_actor prefetcher, param_shard_actor shard,
                         optimizer_actor optimizer, checkpoint_actor checkpoint,
                         std::vector<optimizer_actor> node_optimizers);

}  // namespace xy
