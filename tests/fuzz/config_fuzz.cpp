// libFuzzer target for the TOML job configuration (io/config.cpp: parse_config).
//
// Any input must either give a Config that passed validation or throw ConfigError (one line
// naming the key); anything else (a crash, a sanitizer report, another exception) is a finding.
// Built with clang and -DXY_FUZZ=ON; tests/fuzz/replay_main.cpp replays tests/fuzz/config_corpus
// through the same function in every build, and under ASan + UBSan (XY_SANITIZE, scripts/test.sh).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "io/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const xy::Config c = xy::parse_config(text, "<fuzz>");
    // What validation promises the engine.
    if (c.data.seq_len <= 0 || c.train.micro_batch <= 0 || c.topology.nodes.empty()) std::abort();
  } catch (const xy::ConfigError& e) {
    if (std::string(e.what()).find('\n') != std::string::npos) std::abort();  // one line
  }
  return 0;
}
