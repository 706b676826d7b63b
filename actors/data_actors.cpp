// The dataloader (node) and prefetcher (rank) actors.
//
// The dataloader owns the samples and their deterministic order (io/samples.hpp) and each local
// rank's position; it copies a micro-batch into a fresh tensor per request (cheap next to a step;
// pinned on device ranks, and never written again once handed out).
// The prefetcher keeps cfg.actors.prefetch_batches micro-batches requested ahead, so the trainer
// normally finds the next one ready. On a device rank it copies each batch up as soon as it
// arrives (non-blocking, from pinned memory, on the rank's host-to-device stream) and hands the
// trainer device tensors with the copy's event; on a CPU rank it hands the host batch as it is.
#include <deque>
#include <functional>

#include "actors/actors.hpp"

namespace xy {
namespace {

struct DataloaderState {
  std::shared_ptr<NodeContext> ctx;
  std::unique_ptr<SampleOrder> order;
  std::vector<int64_t> position;  // per local rank: samples handed out
  static inline const char* name = "dataloader";
};

dataloader_actor::behavior_type dataloader_fn(
    dataloader_actor::stateful_pointer<DataloaderState> self, std::shared_ptr<NodeContext> ctx,
    std::vector<int64_t> start) {
  auto& s = self->state;
  s.ctx = ctx;
  // Mixed GPUs: each rank takes its node's micro_batch x grad_accum samples of every step's block.
  s.order = std::make_unique<SampleOrder>(ctx->data->size(), rank_step_samples(ctx->cfg), ctx->cfg.data.seed);
  s.position = std::move(start);
  s.position.resize(ctx->local_ranks, 0);
  return {
      [=](next_atom, int32_t local) -> caf::result<Batch> {
        auto& s = self->state;
        const int64_t mb = node_micro_batch(s.ctx->cfg, s.ctx->node_index), len = s.ctx->data->seq_len();
        Batch b;
        b.first_sample = s.position[local];
        // Pinned when training on a device, so the copy up can be asynchronous.
        b.tokens = at::empty({mb, len + 1}, at::TensorOptions(at::kLong).pinned_memory(s.ctx->on_device));
        int64_t* out = b.tokens.data_ptr<int64_t>();
        const int rank = s.ctx->first_rank + local;
        const int64_t step = b.first_sample / (mb * node_grad_accum(s.ctx->cfg, s.ctx->node_index)) + 1;
        OpScope read(&s.ctx->registry, "batch-read", rank, -1, 0, step, s.ctx->cfg.deadlines.batch_s);
        fault::maybe("batch", rank, step);  // fault injection (health/faults.hpp)
        for (int64_t i = 0; i < mb; ++i)
          s.ctx->data->copy_sample(s.order->at(rank, s.position[local] + i), out + i * (len + 1));
        s.position[local] += mb;
        b.labels = at::empty({mb, len}, at::TensorOptions(at::kLong).pinned_memory(s.ctx->on_device));
        b.labels.copy_(b.tokens.narrow(1, 1, len));
        if (const int32_t masked = s.ctx->data->masked_label(); masked >= 0)
          b.labels.masked_fill_(b.labels == masked, -100);  // cross-entropy's ignore_index
        return b;
      },
  };
}

// The pinned source of one copy up, kept until the copy is done.
struct HostCopy {
  at::Tensor tokens, labels;
  DeviceEventPtr done;
};

struct PrefetcherState {
  std::shared_ptr<NodeContext> ctx;
  int local = 0;
  RankStreams st;
  dataloader_actor dataloader;
  std::deque<Batch> ready;
  std::deque<caf::typed_response_promise<Batch>> waiting;
  int in_flight = 0;
  std::deque<HostCopy> uploading;  // device rank: sources of the last copies up, oldest first
  std::function<void()> refill;  // tops up the requests in flight
  static inline const char* name = "prefetcher";
};

// Device rank: starts copying `b` up and replaces its tensors by the device ones, complete at
// b.ready. The device tensors are allocated on the host-to-device stream (the caching allocator
// ties them to it; the trainer adds its compute stream with record_stream). The pinned sources are
// kept until their copy is done: the last prefetch_batches + 2 are held, and the oldest is dropped
// only after the host waits for its copy's event (by then long complete, so no wait in practice:
// at most prefetch_batches batches are ready, so the trainer has taken that one before). The
// caching host allocator would also keep freed pinned memory until the copy ends; this does not
// rely on it.
void upload(PrefetcherState& s, Batch& b) {
  if (!s.st.on_device()) return;
  HostCopy h{b.tokens, b.labels, nullptr};
  {
    c10::StreamGuard guard(s.st.h2d);  // current device and stream for allocation and copies
    b.tokens = h.tokens.to(s.st.device, /*non_blocking=*/true);
    b.labels = h.labels.to(s.st.device, /*non_blocking=*/true);
    h.done = b.ready = DeviceEvent::record(s.st.h2d);
  }
  s.uploading.push_back(std::move(h));
  while (static_cast<int>(s.uploading.size()) > s.ctx->cfg.actors.prefetch_batches + 2) {
    s.uploading.front().done->synchronize();
    s.uploading.pop_front();
  }
}

prefetcher_actor::behavior_type prefetcher_fn(
    prefetcher_actor::stateful_pointer<PrefetcherState> self, std::shared_ptr<NodeContext> ctx,
    int local, dataloader_actor dataloader) {
  auto& s = self->state;
  s.ctx = ctx;
  s.local = local;
  s.st = ctx->streams[local];
  s.dataloader = dataloader;
  // Keeps `prefetch_batches` batches ready or in flight (on a device rank a ready batch is on the
  // device or being copied there). Requests are answered in order because one dataloader serves
  // them in mailbox order.
  s.refill = [self] {
    auto& s = self->state;
    while (static_cast<int>(s.ready.size()) + s.in_flight < s.ctx->cfg.actors.prefetch_batches) {
      ++s.in_flight;
      self->request(s.dataloader, caf::infinite, next_atom::value, static_cast<int32_t>(s.local))
          .then(
              [self](Batch& b) {
                auto& s = self->state;
                --s.in_flight;
                try {
                  upload(s, b);
                } catch (const std::exception& e) {
                  const std::string what = "prefetcher of local rank " + std::to_string(s.local) +
                                           ": copy to the device: " + e.what();
                  s.ctx->fail(what);
                  // The trainer waiting for this batch gets the error instead of waiting forever.
                  if (!s.waiting.empty()) {
                    s.waiting.front().deliver(caf::make_error(caf::sec::runtime_error, what));
                    s.waiting.pop_front();
                  }
                  return;
                }
                if (!s.waiting.empty()) {
                  s.waiting.front().deliver(std::move(b));
                  s.waiting.pop_front();
                } else {
                  s.ready.push_back(std::move(b));
                }
                s.refill();
              },
              [self](caf::error& e) {
                self->state.ctx->fail("prefetcher of local rank " +
                                      std::to_string(self->state.local) + ": " + to_string(e));
              });
    }
  };
  s.refill();
  return {
      [=](next_atom) -> caf::typed_response_promise<Batch> {
        auto& s = self->state;
        auto rp = self->make_response_promise<Batch>();
        if (!s.ready.empty()) {
          rp.deliver(std::move(s.ready.front()));
          s.ready.pop_front();
        } else {
          s.waiting.push_back(rp);
        }
        s.refill();
        return rp;
      },
  };
}

}  // namespace

dataloader_actor spawn_dataloader(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx,
                                  std::vector<int64_t> start_positions) {
  return sys.spawn(dataloader_fn, std::move(ctx), std::move(start_positions));
}

prefetcher_actor spawn_prefetcher(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx,
                                  int local_rank, dataloader_actor dataloader) {
  return sys.spawn(prefetcher_fn, std::move(ctx), local_rank, std::move(dataloader));
}

}  // namespace xy
