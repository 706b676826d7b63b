// The dataloader (node) and prefetcher (rank) actors.
//
// The dataloader owns the samples and their deterministic order (io/samples.hpp) and each local
// rank's position; it copies a micro-batch into a fresh tensor per request (cheap next to a step).
// The prefetcher keeps cfg.actors.prefetch_batches micro-batches requested ahead, so the trainer
// normally finds the next one ready.
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
  s.order = std::make_unique<SampleOrder>(ctx->data->size(), ctx->world, ctx->cfg.data.seed);
  s.position = std::move(start);
  s.position.resize(ctx->local_ranks, 0);
  return {
      [=](next_atom, int32_t local) -> caf::result<Batch> {
        auto& s = self->state;
        const int64_t mb = s.ctx->cfg.train.micro_batch, len = s.ctx->data->seq_len();
        Batch b;
        b.first_sample = s.position[local];
        // Pinned when training on a device, so the copy up can be asynchronous.
        b.tokens = at::empty({mb, len + 1}, at::TensorOptions(at::kLong).pinned_memory(s.ctx->on_device));
        int64_t* out = b.tokens.data_ptr<int64_t>();
        const int rank = s.ctx->first_rank + local;
        const int64_t step = b.first_sample / (mb * s.ctx->cfg.train.grad_accum) + 1;
        OpScope read(&s.ctx->registry, "batch-read", rank, -1, 0, step, s.ctx->cfg.deadlines.batch_s);
        fault::maybe("batch", rank, step);  // fault injection (actors/faults.hpp)
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

struct PrefetcherState {
  std::shared_ptr<NodeContext> ctx;
  int local = 0;
  dataloader_actor dataloader;
  std::deque<Batch> ready;
  std::deque<caf::typed_response_promise<Batch>> waiting;
  int in_flight = 0;
  std::function<void()> refill;  // tops up the requests in flight
  static inline const char* name = "prefetcher";
};

prefetcher_actor::behavior_type prefetcher_fn(
    prefetcher_actor::stateful_pointer<PrefetcherState> self, std::shared_ptr<NodeContext> ctx,
    int local, dataloader_actor dataloader) {
  auto& s = self->state;
  s.ctx = ctx;
  s.local = local;
  s.dataloader = dataloader;
  // Keeps `prefetch_batches` batches ready or in flight. Requests are answered in order because
  // one dataloader serves them in mailbox order.
  s.refill = [self] {
    auto& s = self->state;
    while (static_cast<int>(s.ready.size()) + s.in_flight < s.ctx->cfg.actors.prefetch_batches) {
      ++s.in_flight;
      self->request(s.dataloader, caf::infinite, next_atom::value, static_cast<int32_t>(s.local))
          .then(
              [self](Batch& b) {
                auto& s = self->state;
                --s.in_flight;
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
