// Shared helpers of the config loader's tests (config_test.cpp, config_errors_test.cpp): the
// message a text is refused with, and a check that a message says what it should.
#pragma once

#include <gtest/gtest.h>

#include <iostream>
#include <string>

#include "io/config.hpp"

namespace xy::test {

// The ConfigError message parse_config gives for `text` (named test.toml), printed; a test
// failure if it accepts the text.
inline std::string error_of(const std::string& text) {
  try {
    parse_config(text, "test.toml");
  } catch (const ConfigError& e) {
    std::cout << "    message: " << e.what() << "\n";
    return e.what();
  }
  ADD_FAILURE() << "parse_config accepted:\n" << text;
  return "";
}

inline ::testing::AssertionResult Has(const std::string& message, const std::string& part) {
  if (message.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "message\n  " << message << "\nlacks\n  " << part;
}

}  // namespace xy::test
