// xy::BpeTokenizer's encoder (see bpe_tokenizer.hpp): added tokens, NFC, the pre-tokenizer regexes
// (PCRE2), BPE merges by rank, and the per-thread cache of pre-token results.
#include <utf8proc.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "io/bpe_impl.hpp"

namespace xy {
namespace bpe {

const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

// Oniguruma's \s for Unicode text (what `tokenizers` runs): White_Space = tab..CR, NEL and the
// separators (Z). PCRE2's \s also matches U+180E, which left White_Space in Unicode 6.3.
constexpr const char* kOnigSpaceClass = R"(\t-\r\x{20}\x{85}\p{Z})";

// The code point at s[i] (valid UTF-8) and its length.
inline uint32_t decode_at(std::string_view s, size_t i, size_t* len) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return *len = 1, c;
  if (c < 0xE0) return *len = 2, ((c & 0x1Fu) << 6) | (s[i + 1] & 0x3F);
  if (c < 0xF0) return *len = 3, ((c & 0x0Fu) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
  *len = 4;
  return ((c & 0x07u) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
}

// Rust's char::is_whitespace (what the added tokens' lstrip/rstrip regexes \s*$ and ^\s* match).
inline bool is_white_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Whether NFC leaves the code point alone whatever its neighbours: combining class 0, not the
// second of any canonical composition, and its own NFC. A string of such code points is NFC.
std::vector<uint64_t> make_inert_table() {
  std::vector<uint64_t> bits(0x110000 / 64, 0);
  for (utf8proc_int32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    const utf8proc_property_t* p = utf8proc_get_property(cp);
    if (p->combining_class != 0) continue;
    if (p->comb_index != UINT16_MAX && (p->comb_index & 0x8000)) continue;  // a second
    if ((cp >= 0x1161 && cp <= 0x1175) || (cp >= 0x11A8 && cp <= 0x11C2)) continue;  // Hangul V, T
    if (p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0) {
      // A canonical decomposition: inert only if NFC composes it back.
      utf8proc_uint8_t in[4];
      const utf8proc_ssize_t n = utf8proc_encode_char(cp, in);
      utf8proc_uint8_t* out = nullptr;
      const utf8proc_ssize_t m = utf8proc_map(in, n, &out, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
      const bool same = m == n && out != nullptr && std::memcmp(out, in, static_cast<size_t>(n)) == 0;
      std::free(out);
      if (!same) continue;
    }
    bits[static_cast<size_t>(cp) / 64] |= uint64_t{1} << (cp % 64);
  }
  return bits;
}

const std::vector<uint64_t>& inert_table() {
  static const std::vector<uint64_t> t = make_inert_table();
  return t;
}

// Pre-token results of one thread for one tokenizer: open addressing over byte strings, emptied
// when half full (a corpus's frequent words come back at once).
class WordCache {
 public:
  static constexpr size_t kMaxKey = 255;  // longer pre-tokens are not cached (`tokenizers`: 256)

  WordCache() : table_(kSlots) {}
  bool find(std::string_view key, uint64_t h, std::vector<int32_t>& out) const {
    for (size_t i = h & (kSlots - 1);; i = (i + 1) & (kSlots - 1)) {
      const Entry& e = table_[i];
      if (e.hash == 0) return false;
      if (e.hash == h && e.key_len == key.size() && std::memcmp(keys_.data() + e.key_off, key.data(), key.size()) == 0) {
        out.insert(out.end(), ids_.begin() + e.ids_off, ids_.begin() + e.ids_off + e.ids_len);
        return true;
      }
    }
  }
  void insert(std::string_view key, uint64_t h, const int32_t* ids, size_t n) {
    if (used_ >= kSlots / 2) clear();
    size_t i = h & (kSlots - 1);
    while (table_[i].hash != 0) i = (i + 1) & (kSlots - 1);
    Entry& e = table_[i];
    e.hash = h;
    e.key_off = static_cast<uint32_t>(keys_.size());
    e.key_len = static_cast<uint16_t>(key.size());
    e.ids_off = static_cast<uint32_t>(ids_.size());
    e.ids_len = static_cast<uint16_t>(n);
    keys_.append(key.data(), key.size());
    ids_.insert(ids_.end(), ids, ids + n);
    ++used_;
  }
  void clear() {
    std::fill(table_.begin(), table_.end(), Entry{});
    keys_.clear();
    ids_.clear();
    used_ = 0;
  }
  static uint64_t hash(std::string_view key) { return std::hash<std::string_view>()(key) | 1; }

 private:
  static constexpr size_t kSlots = size_t{1} << 16;
  struct Entry {
    uint64_t hash = 0;  // 0: empty (real hashes have the low bit set)
    uint32_t key_off = 0, ids_off = 0;
    uint16_t key_len = 0, ids_len = 0;
  };
  std::vector<Entry> table_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t used_ = 0;
};

struct Symbol {
  int32_t id;
  int32_t prev, next;  // -1: none
  bool live;
};
struct Candidate {
  uint32_t rank;
  uint32_t pos;
  int32_t merged;
};
// std heap functions build a max-heap: "less" is the later merge (higher rank, then further right).
struct LaterMerge {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  }
};

// What one thread needs to encode: PCRE2's match data and JIT stack, BPE buffers, the cache.
struct Scratch {
  uint64_t owner = 0;  // the tokenizer instance the cache holds results of
  WordCache cache;
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mc = nullptr;
  pcre2_jit_stack* js = nullptr;
  std::vector<int32_t> ids, merged;
  std::vector<uint32_t> ranks;
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;

  Scratch() {
    md = pcre2_match_data_create(1, nullptr);
    mc = pcre2_match_context_create(nullptr);
    js = pcre2_jit_stack_create(32 << 10, 8 << 20, nullptr);
    if (mc != nullptr && js != nullptr) pcre2_jit_stack_assign(mc, nullptr, js);
  }
  ~Scratch() {
    if (md) pcre2_match_data_free(md);
    if (mc) pcre2_match_context_free(mc);
    if (js) pcre2_jit_stack_free(js);
  }
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// Words of up to this many bytes are merged by scanning for the lowest-ranked pair, longer ones
// with a heap; both merge the lowest rank first, the leftmost of equal ranks (`tokenizers`).
constexpr size_t kScanMax = 48;

// One encode call.
class Encoder {
 public:
  Encoder(const BpeTokenizer::Impl& t, Scratch& s, std::vector<int32_t>& out) : t_(t), s_(s), out_(out) {}

  void run(std::string_view text) {
    split_added(text, t_.raw_added, [&](std::string_view seg) { segment(seg); });
  }

 private:
  // Cuts the added tokens of `set` out of `s` (find_matches of `tokenizers`' AddedVocabulary):
  // pushes their ids and gives the text between them to `rest`.
  template <typename Rest>
  void split_added(std::string_view s, const AddedSet& set, Rest&& rest) {
    if (set.empty) {
      if (!s.empty()) rest(s);
      return;
    }
    size_t start_offset = 0, pos = 0;
    for (;;) {
      int found = -1;
      size_t start = pos;
      for (; start < s.size(); ++start) {
        for (int k : set.by_first[static_cast<unsigned char>(s[start])]) {
          const std::string& c = t_.added[static_cast<size_t>(k)].match;
          if (s.size() - start >= c.size() && std::memcmp(s.data() + start, c.data(), c.size()) == 0) {
            found = k;
            break;
          }
        }
        if (found >= 0) break;
      }
      if (found < 0) break;
      const AddedToken& tok = t_.added[static_cast<size_t>(found)];
      size_t stop = start + tok.match.size();
      pos = stop;  // the automaton goes on after the match itself, whatever rstrip takes
      if (tok.lstrip) {
        size_t b = start;
        while (b > start_offset) {
          size_t p = b - 1;
          while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
          size_t len;
          if (!is_white_space(decode_at(s, p, &len))) break;
          b = p;
        }
        start = b;
      }
      if (tok.rstrip) {
        size_t len;
        while (stop < s.size() && is_white_space(decode_at(s, stop, &len))) stop += len;
      }
      start = std::max(start, start_offset);
      if (start_offset < start) rest(s.substr(start_offset, start - start_offset));
      out_.push_back(tok.id);
      start_offset = std::max(stop, start_offset);
    }
    if (start_offset < s.size()) rest(s.substr(start_offset));
  }

  void segment(std::string_view seg) {
    if (t_.nfc && !nfc_is_identity(seg)) {
      const std::string n = nfc(seg);
      normalized(n);
    } else {
      normalized(seg);
    }
  }

  void normalized(std::string_view seg) {
    split_added(seg, t_.normalized_added, [&](std::string_view piece) { pre(piece, 0); });
  }

  void pre(std::string_view piece, size_t step) {
    const Step& st = t_.steps[step];
    if (!st.byte_level) {
      split_regex(piece, *st.regex, [&](std::string_view p) { pre(p, step + 1); });
      return;
    }
    if (st.add_prefix_space && piece[0] != ' ') {
      std::string spaced;
      spaced.reserve(piece.size() + 1);
      spaced += ' ';
      spaced.append(piece);
      byte_level(spaced, st);
    } else {
      byte_level(piece, st);
    }
  }

  void byte_level(std::string_view piece, const Step& st) {
    if (st.regex != nullptr)
      split_regex(piece, *st.regex, [&](std::string_view w) { word(w); });
    else
      word(piece);
  }

  // Split(Isolated): the matches and the text between them, in order, empty pieces dropped. The
  // iteration is that of the Rust onig crate's find_iter (an empty match right after the previous
  // match is skipped, and the search goes on one character later).
  template <typename F>
  void split_regex(std::string_view s, const Regex& re, F&& f) {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t prev = 0, last_end = 0;
    size_t last_match_end = SIZE_MAX;
    while (last_end <= s.size()) {
      const int rc = re.jit ? pcre2_jit_match(re.code, subject, s.size(), last_end, 0, s_.md, s_.mc)
                            : pcre2_match(re.code, subject, s.size(), last_end, PCRE2_NO_UTF_CHECK, s_.md, s_.mc);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        throw TokenizerError("encoding with '" + t_.file + "': the pre-tokenizer regex failed on a " +
                             std::to_string(s.size()) + "-byte piece: " + reinterpret_cast<const char*>(msg));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s_.md);
      const size_t ms = ov[0], me = ov[1];
      if (ms == me && last_match_end == me) {
        size_t len = 1;
        if (me < s.size()) decode_at(s, me, &len);
        last_end = me + len;
        continue;
      }
      last_end = last_match_end = me;
      if (prev < ms) f(s.substr(prev, ms - prev));
      if (ms < me) f(s.substr(ms, me - ms));
      prev = me;
    }
    if (prev < s.size()) f(s.substr(prev));
  }

  // One pre-token: from the cache, whole (ignore_merges), or merged.
  void word(std::string_view w) {
    const bool cacheable = w.size() <= WordCache::kMaxKey;
    uint64_t h = 0;
    if (cacheable) {
      h = WordCache::hash(w);
      if (s_.cache.find(w, h, out_)) return;
    }
    const size_t before = out_.size();
    auto whole = t_.ignore_merges ? t_.raw_vocab.find(w) : t_.raw_vocab.end();
    if (whole != t_.raw_vocab.end())
      out_.push_back(whole->second);
    else if (w.size() <= kScanMax)
      merge_scan(w);
    else
      merge_heap(w);
    if (cacheable) s_.cache.insert(w, h, out_.data() + before, out_.size() - before);
  }

  // Short words: rescan for the lowest (rank, position) after each merge.
  void merge_scan(std::string_view w) {
    const size_t n = w.size();
    int32_t sym[kScanMax], merged[kScanMax];
    uint32_t rank[kScanMax];
    for (size_t i = 0; i < n; ++i) sym[i] = t_.byte_id[static_cast<unsigned char>(w[i])];
    size_t m = n;
    for (size_t i = 0; i + 1 < m; ++i) rank[i] = t_.merges.get(sym[i], sym[i + 1], &merged[i]);
    while (m > 1) {
      size_t best = 0;
      for (size_t i = 1; i + 1 < m; ++i)
        if (rank[i] < rank[best]) best = i;
      if (rank[best] == UINT32_MAX) break;
      sym[best] = merged[best];
      for (size_t i = best + 1; i + 1 < m; ++i) sym[i] = sym[i + 1];
      for (size_t i = best + 1; i + 2 < m; ++i) {
        rank[i] = rank[i + 1];
        merged[i] = merged[i + 1];
      }
      --m;
      if (best > 0) rank[best - 1] = t_.merges.get(sym[best - 1], sym[best], &merged[best - 1]);
      if (best + 1 < m) rank[best] = t_.merges.get(sym[best], sym[best + 1], &merged[best]);
    }
    out_.insert(out_.end(), sym, sym + m);
  }

  // Long words: `tokenizers`' Word::merge_all, a heap of candidate merges checked when popped.
  void merge_heap(std::string_view w) {
    const size_t n = w.size();
    std::vector<Symbol>& sy = s_.symbols;
    std::vector<Candidate>& heap = s_.heap;
    sy.resize(n);
    heap.clear();
    for (size_t i = 0; i < n; ++i)
      sy[i] = Symbol{t_.byte_id[static_cast<unsigned char>(w[i])], static_cast<int32_t>(i) - 1,
                     i + 1 < n ? static_cast<int32_t>(i + 1) : -1, true};
    int32_t merged;
    for (size_t i = 0; i + 1 < n; ++i) {
      const uint32_t r = t_.merges.get(sy[i].id, sy[i + 1].id, &merged);
      if (r != UINT32_MAX) heap.push_back(Candidate{r, static_cast<uint32_t>(i), merged});
    }
    std::make_heap(heap.begin(), heap.end(), LaterMerge());
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), LaterMerge());
      const Candidate top = heap.back();
      heap.pop_back();
      Symbol& cur = sy[top.pos];
      if (!cur.live || cur.next < 0) continue;
      Symbol& right = sy[static_cast<size_t>(cur.next)];
      if (t_.merges.get(cur.id, right.id, &merged) == UINT32_MAX || merged != top.merged) continue;  // stale
      cur.id = top.merged;
      cur.next = right.next;
      right.live = false;
      if (cur.next >= 0) sy[static_cast<size_t>(cur.next)].prev = static_cast<int32_t>(top.pos);
      if (cur.prev >= 0) {
        const uint32_t r = t_.merges.get(sy[static_cast<size_t>(cur.prev)].id, cur.id, &merged);
        if (r != UINT32_MAX) {
          heap.push_back(Candidate{r, static_cast<uint32_t>(cur.prev), merged});
          std::push_heap(heap.begin(), heap.end(), LaterMerge());
        }
      }
      if (cur.next >= 0) {
        const uint32_t r = t_.merges.get(cur.id, sy[static_cast<size_t>(cur.next)].id, &merged);
        if (r != UINT32_MAX) {
          heap.push_back(Candidate{r, top.pos, merged});
          std::push_heap(heap.begin(), heap.end(), LaterMerge());
        }
      }
    }
    for (size_t i = 0; i < n; ++i)
      if (sy[i].live) out_.push_back(sy[i].id);
  }

  const BpeTokenizer::Impl& t_;
  Scratch& s_;
  std::vector<int32_t>& out_;
};

std::atomic<uint64_t> g_instances{0};

}  // namespace

uint64_t next_instance() { return ++g_instances; }

bool nfc_inert(uint32_t cp) {
  if (cp < 0x300) return true;
  if (cp >= 0x110000) return false;
  return (inert_table()[cp / 64] >> (cp % 64)) & 1;
}

bool nfc_is_identity(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0xCC) {  // below U+0300: ASCII, Latin-1, Latin Extended
      i += c < 0x80 ? 1 : 2;
      continue;
    }
    size_t len;
    if (!nfc_inert(decode_at(s, i, &len))) return false;
    i += len;
  }
  return true;
}

std::string nfc(std::string_view s) {
  if (nfc_is_identity(s)) return std::string(s);
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                          static_cast<utf8proc_ssize_t>(s.size()), &out,
                                          static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) {
    std::free(out);
    throw TokenizerError(std::string("NFC normalization failed: ") + utf8proc_errmsg(n));
  }
  std::string r(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return r;
}

std::string onig_to_pcre2(const std::string& p) {
  std::string r;
  r.reserve(p.size() + 32);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      ++i;
      if (e == 's') {
        r += in_class ? std::string(kOnigSpaceClass) : "[" + std::string(kOnigSpaceClass) + "]";
      } else if (e == 'S' && !in_class) {
        r += "[^" + std::string(kOnigSpaceClass) + "]";
      } else {
        r += c;
        r += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      r += c;
      // A ']' first in a class (after an optional '^') is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') r += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') r += p[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // [:alpha:]
      const size_t end = p.find(":]", i + 2);
      if (end != std::string::npos) {
        r.append(p, i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    r += c;
  }
  return r;
}

std::unique_ptr<Regex> compile_regex(const std::string& pattern, std::string* error) {
  auto re = std::make_unique<Regex>();
  re->source = pattern;
  const std::string pcre = onig_to_pcre2(pattern);
  int code = 0;
  PCRE2_SIZE at = 0;
  re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pcre.data()), pcre.size(), PCRE2_UTF | PCRE2_UCP,
                           &code, &at, nullptr);
  if (re->code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(code, msg, sizeof(msg));
    *error = std::string("does not compile (PCRE2: ") + reinterpret_cast<const char*>(msg) + " at offset " +
             std::to_string(at) + " of " + pcre + ")";
    return nullptr;
  }
  re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
  return re;
}

void MergeTable::reserve(size_t pairs) {
  size_t cap = 16;
  while (cap < pairs * 2) cap <<= 1;
  slots_.assign(cap, Slot{kEmpty, 0, 0});
  mask_ = cap - 1;
  used_ = 0;
}

void MergeTable::put(int32_t a, int32_t b, uint32_t rank, int32_t merged) {
  const uint64_t key = pair_key(a, b);
  for (uint64_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.key == key || s.key == kEmpty) {
      if (s.key == kEmpty) ++used_;
      s = Slot{key, rank, merged};
      return;
    }
  }
}

void AddedSet::build(const std::vector<AddedToken>& tokens, bool normalized) {
  by_first.assign(256, {});
  empty = true;
  for (size_t k = 0; k < tokens.size(); ++k) {
    if (tokens[k].normalized != normalized || tokens[k].match.empty()) continue;
    by_first[static_cast<unsigned char>(tokens[k].match[0])].push_back(static_cast<int>(k));
    empty = false;
  }
  for (auto& list : by_first)
    std::stable_sort(list.begin(), list.end(), [&](int a, int b) {
      return tokens[static_cast<size_t>(a)].match.size() > tokens[static_cast<size_t>(b)].match.size();
    });
}

}  // namespace bpe

void BpeTokenizer::Impl::encode(std::string_view text, std::vector<int32_t>& out) const {
  bpe::Scratch& s = bpe::scratch();
  if (s.owner != instance) {
    s.cache.clear();
    s.owner = instance;
  }
  bpe::Encoder(*this, s, out).run(text);
}

}  // namespace xy
