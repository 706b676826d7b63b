// The node's context (actors/engine.hpp's NodeContext), built before any actor starts: see
// context.cpp. run_training (node.cpp) calls build_context, then spawns the actors over it.
#pragma once

#include "actors/engine.hpp"

namespace xy {

// Fills `ctx` for this node: identity, communicators, agreed precision, model, every local rank's
// shards (fresh, from model.init_from, or from opts.resume). Throws std::invalid_argument for a
// set-up that cannot run, CheckpointError for a bad checkpoint, ThreadStartError.
void build_context(NodeContext& ctx, const Config& cfg, const RunOptions& opts);

// This process's resident memory, GiB.
double rss_gib();

}  // namespace xy
