// The wire of xy's TCP store: framing, socket I/O with deadlines and the crypto (the format is
// described in net_store_wire.hpp).
#include "comm/net_store_wire.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>

namespace xy {
namespace store_wire {

void wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    int ms = -1;
    if (deadline != kNever) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) throw IoError("timed out");
      ms = static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30));
    }
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, ms);
    if (r > 0) return;  // ready, or an error / hang-up that the next recv/send reports
    if (r < 0 && errno != EINTR) throw IoError(std::string("poll: ") + std::strerror(errno));
  }
}

void read_exact(int fd, void* buf, size_t n, Clock::time_point deadline) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    wait_fd(fd, POLLIN, deadline);
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r == 0) throw IoError("connection closed");
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      throw IoError(std::strerror(errno));
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
}

void write_all(int fd, const void* buf, size_t n, Clock::time_point deadline) {
  const auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    wait_fd(fd, POLLOUT, deadline);
    const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      throw IoError(std::strerror(errno));
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
}

Key hmac(const unsigned char* key, size_t key_len, const std::string& msg) {
  Key out{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), key, static_cast<int>(key_len), reinterpret_cast<const unsigned char*>(msg.data()),
       msg.size(), out.data(), &len);
  return out;
}
Key hmac(const Key& key, const std::string& msg) { return hmac(key.data(), key.size(), msg); }
std::string as_string(const Key& k) { return std::string(reinterpret_cast<const char*>(k.data()), k.size()); }

// K: PBKDF2 makes every guess at a weak secret from a recorded handshake cost 100k HMACs. Derived
// once per secret and process.
Key derive_key(const std::string& secret) {
  static std::mutex& mu = *new std::mutex;  // never destroyed (threads may outlive main)
  static std::map<std::string, Key>& cache = *new std::map<std::string, Key>;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(secret);
  if (it != cache.end()) return it->second;
  Key k{};
  static const char salt[] = "xy-node job store v1";
  if (PKCS5_PBKDF2_HMAC(secret.data(), static_cast<int>(secret.size()),
                        reinterpret_cast<const unsigned char*>(salt), sizeof salt - 1, 100000,
                        EVP_sha256(), static_cast<int>(k.size()), k.data()) != 1)
    throw std::runtime_error("OpenSSL: PKCS5_PBKDF2_HMAC failed");
  cache.emplace(secret, k);
  return k;
}

std::string random_bytes(size_t n) {
  std::string s(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(s.data()), static_cast<int>(n)) != 1)
    throw std::runtime_error("OpenSSL: RAND_bytes failed");
  return s;
}

bool same_mac(const std::string& a, const Key& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), b.size()) == 0;
}

// The frame as it goes on the wire (length | payload | MAC).
std::string Channel::frame(const std::string& payload) {
  std::string m;
  m.reserve(13 + payload.size() + kMac);
  m += send_dir;
  put_u64(m, send_seq++);
  put_u32(m, static_cast<uint32_t>(payload.size()));
  m += payload;
  if (auth) m += as_string(hmac(session, m));
  return m.substr(9);
}

void Channel::send(const std::string& payload, Clock::time_point deadline) {
  const std::string f = frame(payload);
  write_all(fd, f.data(), f.size(), deadline);
}

std::string Channel::recv(Clock::time_point deadline) {
  unsigned char len_bytes[4];
  read_exact(fd, len_bytes, 4, deadline);
  const uint32_t n = get_u32(len_bytes);
  if (n > kMaxFrame)
    throw ProtocolError("a frame of " + std::to_string(n) + " bytes (at most " +
                        std::to_string(kMaxFrame) + ")");
  std::string m;
  m += recv_dir;
  put_u64(m, recv_seq++);
  m.append(reinterpret_cast<const char*>(len_bytes), 4);
  // Grown as the bytes arrive: a length alone never makes this allocate.
  size_t got = 0;
  while (got < n) {
    const size_t chunk = std::min<size_t>(n - got, 1 << 20);
    m.resize(13 + got + chunk);
    read_exact(fd, m.data() + 13 + got, chunk, deadline);
    got += chunk;
  }
  if (auth) {
    std::string mac(kMac, '\0');
    read_exact(fd, mac.data(), kMac, deadline);
    if (!same_mac(mac, hmac(session, m)))
      throw ProtocolError("a frame failed its MAC (forged, replayed or altered)");
  }
  return m.substr(13);
}

std::string sanitize_label(const std::string& s) {
  std::string out;
  for (char c : s.substr(0, kMaxLabel))
    out += (std::isalnum(static_cast<unsigned char>(c)) || (c != '\0' && std::strchr(" _-./:", c))) ? c : '?';
  return out;
}

void close_fd(int fd) {
  if (fd >= 0) ::close(fd);
}

}  // namespace store_wire
}  // namespace xy
