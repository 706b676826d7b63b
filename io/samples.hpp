// Fixed-length samples over a packed token stream, and their deterministic order across
// data-parallel ranks.
//
// Sample i is tokens[i*L, i*L + L + 1) for L = seq_len (inputs and next-token labels overlap by
// one). Each epoch visits a seeded permutation of all samples, cut to a multiple of the world size
// so that no rank is starved; rank r takes every world-th sample of the epoch's stream, starting at
// r. A rank's position is the count of samples it has consumed (saved in checkpoints).
//
// Mixed GPUs: ranks may take different numbers of samples per optimizer step (c_r = its node's
// micro_batch x grad_accum; T = their sum). Step s then reads the block [s*T, s*T + T) of the same
// stream, dealt round-robin: the i-th sample of rank r's step is the block's
// sum_q min(c_q, i) + #{q < r : c_q > i}-th. With equal counts this is the rule above exactly;
// with unequal ones an epoch is cut to a multiple of T, so that no step straddles two epochs.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

namespace xy {

// Where samples come from: anything that can copy sample i. Implementations: TokenSamples (an
// in-memory token stream) and the memory-mapped token shards of `xy-node preprocess`.
// copy_sample may be called from several threads at once.
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  virtual int64_t size() const = 0;     // number of samples
  virtual int64_t seq_len() const = 0;  // the model sees seq_len tokens and predicts the next
  virtual int64_t vocab() const = 0;    // every token id is < vocab
  // Copies sample i (seq_len + 1 tokens) into out. Throws std::out_of_range for a bad i.
  virtual void copy_sample(int64_t i, int64_t* out) const = 0;
  // Token id whose label positions are masked out of the loss (llm-code packing), or -1.
  virtual int32_t masked_label() const { return -1; }
};

// Sample i is tokens[i*L, i*L + L + 1) of one in-memory token stream.
class TokenSamples : public SampleSource {
 public:
  TokenSamples(std::vector<int32_t> tokens, int64_t seq_len, int64_t vocab);
  int64_t size() const override { return count_; }
  int64_t seq_len() const override { return seq_len_; }
  int64_t vocab() const override { return vocab_; }
  void copy_sample(int64_t i, int64_t* out) const override;

 private:
  std::vector<int32_t> tokens_;
  int64_t seq_len_, vocab_, count_;
};

// The samples of `base` listed in `indices` (in that order).
class IndexedSamples : public SampleSource {
 public:
  IndexedSamples(std::shared_ptr<const SampleSource> base, std::vector<int64_t> indices)
      : base_(std::move(base)), indices_(std::move(indices)) {}
  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  int64_t seq_len() const override { return base_->seq_len(); }
  int64_t vocab() const override { return base_->vocab(); }
  void copy_sample(int64_t i, int64_t* out) const override;
  int32_t masked_label() const override { return base_->masked_label(); }

 private:
  std::shared_ptr<const SampleSource> base_;
  std::vector<int64_t> indices_;
};

// A fixed split of a packed token stream by document (eval.holdout): the documents end with
// `eos`; document d is held out when a hash of (seed, d) falls below `fraction`. A sample whose
// tokens (inputs and labels) all lie in held-out documents is held out, one whose tokens all lie
// in kept documents trains, and one that straddles both is dropped, so no held-out text is
// trained on. Reads the whole stream once.
struct DocumentSplit {
  std::shared_ptr<const SampleSource> train, heldout;
  int64_t documents = 0, held_documents = 0, dropped_samples = 0;
};
DocumentSplit split_by_document(const std::shared_ptr<const SampleSource>& all, int32_t eos,
                                double fraction, uint64_t seed);

class SampleOrder {
 public:
  // Throws std::invalid_argument if there are fewer samples than ranks.
  SampleOrder(int64_t samples, int world, uint64_t seed);
  // Samples per step of each rank (all >= 1). Equal counts give the order of SampleOrder(samples,
  // world, seed). Throws std::invalid_argument if there are fewer samples than ranks, or, for
  // unequal counts, than one step's.
  SampleOrder(int64_t samples, const std::vector<int64_t>& per_step, uint64_t seed);
  // The sample index that rank `rank` reads at its position `pos` (0-based, across epochs).
  int64_t at(int rank, int64_t pos) const;
  int64_t per_rank_per_epoch(int rank = 0) const {
    return equal_ ? per_epoch_ / world_ : per_epoch_ / step_ * counts_[rank];
  }

 private:
  const std::vector<int64_t>& permutation(int64_t epoch) const;

  int64_t samples_, per_epoch_;
  int world_;
  bool equal_ = true;            // every rank takes as many samples per step
  int64_t step_ = 0;             // unequal: T, the samples of one step
  std::vector<int64_t> counts_;  // unequal: c_r
  std::vector<int64_t> first_;   // unequal: rank r's entries of deal_ start at first_[r]
  std::vector<int64_t> deal_;    // unequal: the block offset of rank r's i-th sample of a step
  uint64_t seed_;
  mutable int64_t cached_epoch_ = -1;  // one epoch's permutation is cached (not thread-safe)
  mutable std::vector<int64_t> perm_;
};

}  // namespace xy
