// The wire of xy's TCP store (comm/net_store.hpp), shared by the client (net_store.cpp) and the
// server (net_store_server.cpp): the limits and op codes, the framing, socket I/O with deadlines,
// the HMAC/PBKDF2 crypto, the Channel and the Reader. Internal to comm/net_store*.cpp; the design
// is in docs/OPERATIONS.md, "The job's secret".
//
// Wire format. Handshake (fixed layout, before any frame):
//   client -> server  "XYS1" | flags (bit 0: has a secret) | client nonce (32) | label length (1) | label
//   server -> client  "XYS1" | flags | server nonce (32) | server proof (32)
//   client -> server  client proof (32)
//   server -> client  verdict: 'A' (accepted) or 'R' (refused; the server then closes)
// With T = everything above up to the server nonce and K = PBKDF2-HMAC-SHA256(secret): the server
// proof is HMAC(K, "server" | T), the client's HMAC(K, "client" | T), the session key
// HMAC(K, "session" | T). Without a secret on both sides the proofs are zeros and unchecked.
// Frames after the handshake: length (4, big-endian) | payload | MAC (32, only with a secret), the
// MAC being HMAC(session key, direction 'C' or 'S' | sequence number (8) | length | payload); each
// direction counts its own frames from 0. A request payload is an op byte and its fields; strings
// are length (4) | bytes, integers big-endian.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/store_auth.hpp"

namespace xy {
namespace store_wire {

using Clock = std::chrono::steady_clock;
using Key = std::array<unsigned char, 32>;

constexpr uint32_t kMaxKey = 4096;
constexpr uint32_t kMaxValue = 64u << 20;
constexpr uint32_t kMaxKeys = 4096;                                // per check / wait
constexpr uint32_t kMaxFrame = 2 * kMaxValue + 2 * kMaxKey + 64;  // compareSet carries two values
constexpr size_t kNonce = 32, kMac = 32, kMaxLabel = 64;
constexpr char kMagic[4] = {'X', 'Y', 'S', '1'};
constexpr auto kHandshakeTime = std::chrono::seconds(10);  // a stranger may not hold a thread longer
constexpr int kMaxPending = 256;  // connections in their handshake at once; more are closed at once
constexpr auto kReplyMargin = std::chrono::seconds(10);  // beyond the server-side wait

enum Op : uint8_t { kSet = 1, kGet, kAdd, kCheck, kDelete, kNumKeys, kWait, kCompareSet };
enum Status : uint8_t { kOk = 0, kTimedOut = 1, kError = 2 };

// The socket was closed, failed, or the deadline passed: the peer is gone or silent.
struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The peer sent something this protocol does not allow (malformed, oversized, or a bad MAC).
struct ProtocolError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr Clock::time_point kNever = Clock::time_point::max();

// Waits until fd is ready for `events` (POLLIN / POLLOUT) or throws IoError at the deadline.
void wait_fd(int fd, short events, Clock::time_point deadline);
void read_exact(int fd, void* buf, size_t n, Clock::time_point deadline);
void write_all(int fd, const void* buf, size_t n, Clock::time_point deadline);

inline void put_u32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s += static_cast<char>((v >> (8 * i)) & 0xff);
}
inline void put_u64(std::string& s, uint64_t v) {
  for (int i = 7; i >= 0; --i) s += static_cast<char>((v >> (8 * i)) & 0xff);
}
inline void put_bytes(std::string& s, const std::string& b) {
  put_u32(s, static_cast<uint32_t>(b.size()));
  s += b;
}
inline uint32_t get_u32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Reads the fields of a payload, checking every length against what is there and the limits.
struct Reader {
  const std::string& s;
  size_t at = 0;
  void need(size_t n) const {
    if (s.size() - at < n) throw ProtocolError("truncated message");
  }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(s[at++]);
  }
  uint32_t u32() {
    need(4);
    const uint32_t v = get_u32(reinterpret_cast<const unsigned char*>(s.data() + at));
    at += 4;
    return v;
  }
  int64_t i64() {
    const uint64_t hi = u32(), lo = u32();
    return static_cast<int64_t>((hi << 32) | lo);
  }
  std::string bytes(uint32_t max, const char* what) {
    const uint32_t n = u32();
    if (n > max)
      throw ProtocolError(std::string(what) + " of " + std::to_string(n) + " bytes (at most " +
                          std::to_string(max) + ")");
    need(n);
    std::string b = s.substr(at, n);
    at += n;
    return b;
  }
  std::string key() { return bytes(kMaxKey, "a key"); }
  std::string value() { return bytes(kMaxValue, "a value"); }
  std::vector<std::string> keys() {
    const uint32_t n = u32();
    if (n > kMaxKeys) throw ProtocolError(std::to_string(n) + " keys in one request");
    std::vector<std::string> k;
    for (uint32_t i = 0; i < n; ++i) k.push_back(key());
    return k;
  }
  void done() const {
    if (at != s.size()) throw ProtocolError("trailing bytes in a message");
  }
};

Key hmac(const unsigned char* key, size_t key_len, const std::string& msg);
Key hmac(const Key& key, const std::string& msg);
std::string as_string(const Key& k);

// K of the wire format: PBKDF2-HMAC-SHA256 of the secret, cached per secret and process.
Key derive_key(const std::string& secret);

std::string random_bytes(size_t n);

// Compares a received MAC with the expected one in constant time (CRYPTO_memcmp).
bool same_mac(const std::string& a, const Key& b);

// One side of an established connection: frames with (optionally) a MAC each.
struct Channel {
  int fd = -1;
  bool auth = false;
  Key session{};
  char send_dir = 'C', recv_dir = 'S';
  uint64_t send_seq = 0, recv_seq = 0;

  // The frame as it goes on the wire (length | payload | MAC).
  std::string frame(const std::string& payload);
  void send(const std::string& payload, Clock::time_point deadline);
  // The next frame's payload; ProtocolError for an oversized frame or one that fails its MAC.
  std::string recv(Clock::time_point deadline);
};

// The label a peer sent, cut to kMaxLabel and with anything unprintable as '?', for the log.
std::string sanitize_label(const std::string& s);

void close_fd(int fd);

// Adds a connection refused by a store this process serves to the process's list
// (store_refusals(); kept in net_store.cpp with the credentials).
void record_refusal(const StoreRefusal& r);

}  // namespace store_wire
}  // namespace xy
