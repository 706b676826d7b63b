// A reduce-scatter over a ProcessGroupGloo's point-to-point send/recv (LibTorch 1.13's Gloo process
// group has none): each rank sends every other rank that rank's slice of its buffer, directly, in
// the buffer's own precision, and sums the slices it receives for its own slice. Each rank sends
// and receives (world - 1) / world of the buffer, the textbook volume (half of what an all-reduce
// of the full buffer moves), and 16-bit gradients travel as 16 bits.
//
// Summation (the same on every run, whatever the timing): rank r's slice is summed in round order,
// its own contribution first, then rank r-1's, r-2's, ... (mod world), each received into a buffer
// of its own and added only when its round comes; 16-bit values are widened to fp32 (fp64 stays
// fp64) and accumulated there, and the sum is rounded once, when it is written to the shard (an
// fp32 shard of an fp32 buffer is the accumulator itself: no rounding beyond fp32's adds).
//
// Why direct sends rather than a ring: a ring forwards partial sums, so with 16 bits on the wire a
// partial sum would be rounded at every hop (or travel as fp32, doubling the bytes). The direct
// exchange moves the same bytes per rank and rounds once. Across two nodes with several ranks each
// it moves more over the link between the nodes than a ring would (every rank pair crosses once):
// equal with one rank per node, 4/3 with two (docs/CLUSTER.md).
//
// Asynchronous: start() queues the operation on the communicator's reduce-scatter thread (one per
// communicator, operations run in the order they were started: the collective order) and returns
// at once; the CommOp's wait() blocks until the shard is written.
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <memory>
#include <string>

#include "comm/comm.hpp"

namespace xy {

class GlooReduceScatter {
 public:
  // Starts the thread when the group has more than one rank (std::system_error if refused).
  explicit GlooReduceScatter(c10::intrusive_ptr<c10d::ProcessGroupGloo> pg);
  // Operations started and not yet running fail ("the communicator was closed"); the running one
  // is finished (or fails at the process group's timeout) first.
  ~GlooReduceScatter();

  // shard = the sum over ranks of their full[rank*n : (rank+1)*n]; both contiguous CPU tensors of
  // fp32, fp64, bf16 or fp16, full.numel() == n * world (checked by the caller). `full` and `shard`
  // are kept alive by the operation; neither may be touched before wait(). `what` names the
  // operation in errors ("reduce-scatter #12": wait() throws "gloo reduce-scatter #12 failed: ...").
  std::unique_ptr<CommOp> start(const at::Tensor& full, const at::Tensor& shard, std::string what);

  struct Worker;

 private:
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  std::shared_ptr<Worker> worker_;  // null for one rank
  uint64_t started_ = 0;            // operations started: their point-to-point tag
};

}  // namespace xy
