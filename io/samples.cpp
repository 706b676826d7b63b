// Samples and their order (see samples.hpp).
#include "io/samples.hpp"

#include <algorithm>
#include <random>
#include <string>

namespace xy {

TokenSamples::TokenSamples(std::vector<int32_t> tokens, int64_t seq_len, int64_t vocab)
    : tokens_(std::move(tokens)), seq_len_(seq_len), vocab_(vocab) {
  if (seq_len <= 0) throw std::invalid_argument("seq_len must be positive");
  count_ = tokens_.empty() ? 0 : (static_cast<int64_t>(tokens_.size()) - 1) / seq_len;
}

void TokenSamples::copy_sample(int64_t i, int64_t* out) const {
  if (i < 0 || i >= count_) throw std::out_of_range("sample " + std::to_string(i) + " of " +
                                                    std::to_string(count_));
  const int32_t* src = tokens_.data() + i * seq_len_;
  for (int64_t k = 0; k <= seq_len_; ++k) out[k] = src[k];
}

void IndexedSamples::copy_sample(int64_t i, int64_t* out) const {
  if (i < 0 || i >= size()) throw std::out_of_range("sample " + std::to_string(i) + " of " +
                                                    std::to_string(size()));
  base_->copy_sample(indices_[i], out);
}

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
}  // namespace

DocumentSplit split_by_document(const std::shared_ptr<const SampleSource>& all, int32_t eos,
                                double fraction, uint64_t seed) {
  const int64_t len = all->seq_len();
  const uint64_t threshold = static_cast<uint64_t>(fraction * 1e9);
  auto held = [&](int64_t d) { return splitmix64(seed ^ (static_cast<uint64_t>(d) * 0x2545F4914F6CDD1DULL)) % 1000000000 < threshold; };
  std::vector<int64_t> train, heldout;
  std::vector<int64_t> buf(len + 1);
  int64_t doc = 0;  // the document of the sample's first token
  DocumentSplit out;
  for (int64_t i = 0; i < all->size(); ++i) {
    all->copy_sample(i, buf.data());
    int64_t d = doc, next = doc;
    bool any_held = false, any_kept = false;
    for (int64_t k = 0; k <= len; ++k) {  // token i*len + k belongs to document d
      if (k == len) next = d;             // where sample i + 1 starts
      (held(d) ? any_held : any_kept) = true;
      if (k < len && buf[k] == eos) ++d;  // the next token starts a new document
    }
    doc = next;
    if (any_held && any_kept) ++out.dropped_samples;
    else (any_held ? heldout : train).push_back(i);
  }
  out.documents = doc + 1;
  for (int64_t d = 0; d < out.documents; ++d) out.held_documents += held(d) ? 1 : 0;
  out.train = std::make_shared<IndexedSamples>(all, std::move(train));
  out.heldout = std::make_shared<IndexedSamples>(all, std::move(heldout));
  return out;
}

SampleOrder::SampleOrder(int64_t samples, int world, uint64_t seed)
    : SampleOrder(samples, std::vector<int64_t>(world < 1 ? 0 : world, 1), seed) {}

SampleOrder::SampleOrder(int64_t samples, const std::vector<int64_t>& per_step, uint64_t seed)
    : samples_(samples), world_(static_cast<int>(per_step.size())), seed_(seed) {
  if (world_ < 1) throw std::invalid_argument("world size must be >= 1");
  int64_t total = 0, most = 0;
  for (int64_t c : per_step) {
    if (c < 1) throw std::invalid_argument("samples per step must be >= 1, not " + std::to_string(c));
    equal_ = equal_ && c == per_step[0];
    total += c;
    most = std::max(most, c);
  }
  if (equal_) {
    per_epoch_ = samples - samples % world_;
    if (per_epoch_ <= 0)
      throw std::invalid_argument("the data has " + std::to_string(samples) +
                                  " samples, fewer than the " + std::to_string(world_) +
                                  " data-parallel ranks; add data or shorten data.seq_len");
    return;
  }
  step_ = total;
  counts_ = per_step;
  per_epoch_ = samples - samples % total;
  if (per_epoch_ <= 0)
    throw std::invalid_argument("the data has " + std::to_string(samples) + " samples, fewer than the " +
                                std::to_string(total) + " of one step (the ranks' micro_batch x grad_accum "
                                "added up); add data or shorten data.seq_len");
  // Deal the step's block round-robin: round i gives one sample to each rank with more than i.
  first_.resize(world_);
  for (int r = 1; r < world_; ++r) first_[r] = first_[r - 1] + counts_[r - 1];
  deal_.resize(total);
  int64_t next = 0;
  for (int64_t i = 0; i < most; ++i)
    for (int r = 0; r < world_; ++r)
      if (counts_[r] > i) deal_[first_[r] + i] = next++;
}

const std::vector<int64_t>& SampleOrder::permutation(int64_t epoch) const {
  if (epoch != cached_epoch_) {
    perm_.resize(samples_);
    for (int64_t i = 0; i < samples_; ++i) perm_[i] = i;
    // Fisher-Yates with a fixed engine: identical on every platform and run.
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch));
    for (int64_t i = samples_ - 1; i > 0; --i) {
      const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
      std::swap(perm_[i], perm_[j]);
    }
    cached_epoch_ = epoch;
  }
  return perm_;
}

int64_t SampleOrder::at(int rank, int64_t pos) const {
  int64_t e;  // position in the global stream
  if (equal_) {
    e = pos * world_ + rank;
  } else {
    const int64_t c = counts_[rank];
    e = pos / c * step_ + deal_[first_[rank] + pos % c];
  }
  const int64_t epoch = e / per_epoch_;
  return permutation(epoch)[e % per_epoch_];
}

}  // namespace xy
