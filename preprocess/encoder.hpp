// The encoding side of `xy-node preprocess` (see pipeline.hpp): worker threads that check each
// line of a chunk (UTF-8, JSON object, text field) and tokenize the documents.
#pragma once

#include <string>

#include "preprocess/pipeline.hpp"

namespace xy {
namespace pp {

// Checks and encodes one chunk: each line becomes a document (BOS ids EOS, BOS/EOS left out if
// the tokenizer has none) or a problem; the chunk's text is freed. Any thread.
Result encode_chunk(Chunk& c, const Tokenizer& tok, const std::string& field);

// An encoding thread's body: encodes chunks from `pipe` until none is left or the run stops.
// Throws what encode_chunk throws.
void encode_chunks(const Tokenizer& tok, const std::string& field, Pipeline& pipe);

}  // namespace pp
}  // namespace xy
