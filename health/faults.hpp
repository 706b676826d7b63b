// Fault injection for tests and drills (docs/OPERATIONS.md, "Fault injection"): the actors call
// fault::maybe() at a few marked points; with no fault configured each call is one load and a
// branch. Faults come from the XY_FAULT environment variable (read once) or fault::configure().
//
//   XY_FAULT="<fault>[:key=value,...][;<fault>...]"   e.g.  XY_FAULT="sleep-compute:rank=1,step=3"
//
// | fault            | point      | what happens (keys left out match anything)                    |
// |------------------|------------|----------------------------------------------------------------|
// | skip-collective  | collective | rank `rank` never issues collective #`seq` (its queue stops)   |
// | reorder          | collective | rank `rank` issues the collective after #`seq` in its place     |
// |                  |            | (registered as #`seq`), then waits as a mismatched NCCL would  |
// | sleep-compute    | compute    | rank sleeps `seconds` in forward/backward of `unit` at `step`  |
// | block-batch      | batch      | the dataloader blocks on rank's batch of `step`                |
// | block-adam       | adam       | CPU Adam of rank's `unit` at `step` blocks                     |
// | block-checkpoint | checkpoint | the checkpoint write of `step` blocks                          |
// | stop-node        | step       | the node running `rank` SIGSTOPs itself at the start of `step` |
// | kill-node        | step       | the node running `rank` SIGKILLs itself at the start of `step` |
// | block-watchdog   | watchdog   | the watchdog's own thread blocks (tests the watchdog's watcher) |
// | overflow         | gradient   | rank's gradient of `unit` at `step` becomes inf (fp16 loss     |
// |                  |            | scaling drills); without `step` it fires at every step         |
//
// `seconds` defaults to forever. Each fault fires once (the first matching call).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace xy::fault {

namespace detail {
extern std::atomic<bool> any;  // true once a fault is configured
bool maybe_slow(const char* point, int rank, int64_t step, int unit, uint64_t seq);
}  // namespace detail

// Parses and installs `spec` (the XY_FAULT syntax), replacing any earlier one; "" clears.
// Throws std::invalid_argument naming the bad part and the valid faults and keys.
void configure(const std::string& spec);
// Reads XY_FAULT once (idempotent); returns a one-line description of the active faults, or "".
// Throws std::invalid_argument as configure().
std::string configure_from_env();

// The hook: if a configured fault matches this point, does what it says (sleeps, blocks, signals)
// and returns true; otherwise returns false at once. `point` is one of: collective, compute,
// batch, adam, checkpoint, step, watchdog.
inline bool maybe(const char* point, int rank, int64_t step, int unit = -1, uint64_t seq = 0) {
  if (!detail::any.load(std::memory_order_relaxed)) return false;
  return detail::maybe_slow(point, rank, step, unit, seq);
}

// For the `reorder` fault only: true if rank `rank` should issue the collective queued after #seq
// in its place. Does not block; the caller registers the swapped collective and then calls
// block_forever().
bool reorder(int rank, uint64_t seq);
[[noreturn]] void block_forever();

}  // namespace xy::fault
