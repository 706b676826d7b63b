// xy's TCP key-value store (see net_store.hpp; the design is in docs/OPERATIONS.md, "The job's
// secret").
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
#include "comm/net_store.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>

namespace xy {
namespace {

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

void put_u32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s += static_cast<char>((v >> (8 * i)) & 0xff);
}
void put_u64(std::string& s, uint64_t v) {
  for (int i = 7; i >= 0; --i) s += static_cast<char>((v >> (8 * i)) & 0xff);
}
void put_bytes(std::string& s, const std::string& b) {
  put_u32(s, static_cast<uint32_t>(b.size()));
  s += b;
}
uint32_t get_u32(const unsigned char* p) {
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

// One side of an established connection: frames with (optionally) a MAC each.
struct Channel {
  int fd = -1;
  bool auth = false;
  Key session{};
  char send_dir = 'C', recv_dir = 'S';
  uint64_t send_seq = 0, recv_seq = 0;

  // The frame as it goes on the wire (length | payload | MAC).
  std::string frame(const std::string& payload) {
    std::string m;
    m.reserve(13 + payload.size() + kMac);
    m += send_dir;
    put_u64(m, send_seq++);
    put_u32(m, static_cast<uint32_t>(payload.size()));
    m += payload;
    if (auth) m += as_string(hmac(session, m));
    return m.substr(9);
  }
  void send(const std::string& payload, Clock::time_point deadline) {
    const std::string f = frame(payload);
    write_all(fd, f.data(), f.size(), deadline);
  }
  std::string recv(Clock::time_point deadline) {
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
};

std::string sanitize_label(const std::string& s) {
  std::string out;
  for (char c : s.substr(0, kMaxLabel))
    out += (std::isalnum(static_cast<unsigned char>(c)) || (c != '\0' && std::strchr(" _-./:", c))) ? c : '?';
  return out;
}

// The process's credentials and the refusals of the stores it serves. Never destroyed: a server
// thread may still refuse a connection while the process exits.
std::mutex& g_mu = *new std::mutex;
StoreCredentials& g_creds = *new StoreCredentials;
std::vector<StoreRefusal>& g_refusals = *new std::vector<StoreRefusal>;

void close_fd(int fd) {
  if (fd >= 0) ::close(fd);
}

}  // namespace

void set_store_credentials(StoreCredentials c) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_creds = std::move(c);
}

StoreCredentials store_credentials() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_creds;
}

std::vector<StoreRefusal> store_refusals() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_refusals;
}

// ---------------------------------------------------------------------------------------------
// Server

struct NetStoreServer::Impl : std::enable_shared_from_this<Impl> {
  std::string host;
  int port = 0;
  std::string secret;
  Key key{};
  int listen_fd = -1;
  std::atomic<bool> stopping{false};

  std::mutex mu;  // the data
  std::condition_variable cv;
  std::unordered_map<std::string, std::string> data;

  std::mutex conn_mu;  // connections and threads
  std::condition_variable conn_cv;
  std::set<int> fds;
  int threads = 0, pending = 0;

  mutable std::mutex log_mu;
  std::vector<StoreRefusal> refused;
  std::atomic<int> dropped{0};
  Clock::time_point log_window{};
  int logged = 0, unlogged = 0;

  void log_line(const std::string& line) {
    std::lock_guard<std::mutex> lock(log_mu);
    const auto now = Clock::now();
    if (now - log_window > std::chrono::seconds(10)) {
      if (unlogged > 0)
        std::fprintf(stderr, "xy: store: %d more refused or dropped connections were not logged\n",
                     unlogged);
      log_window = now;
      logged = unlogged = 0;
    }
    if (logged < 20) {  // a flood of strangers does not flood the log
      ++logged;
      std::fprintf(stderr, "%s\n", line.c_str());
      std::fflush(stderr);
    } else {
      ++unlogged;
    }
  }

  static std::string who(const std::string& peer, const std::string& label) {
    return peer + (label.empty() ? "" : " (says it is " + label + ")");
  }

  void refuse(const std::string& peer, const std::string& peer_host, const std::string& label,
              const std::string& reason, bool mismatch) {
    StoreRefusal r{peer, peer_host, label, reason, mismatch, Clock::now()};
    {
      std::lock_guard<std::mutex> lock(log_mu);
      refused.push_back(r);
    }
    {
      std::lock_guard<std::mutex> lock(g_mu);
      g_refusals.push_back(r);
    }
    log_line("xy: store: refused a connection from " + who(peer, label) + ": " + reason);
  }

  void accept_loop() {
    while (!stopping) {
      pollfd p{listen_fd, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      sockaddr_storage sa{};
      socklen_t len = sizeof sa;
      const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&sa), &len,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      char h[NI_MAXHOST] = "?", s[NI_MAXSERV] = "?";
      getnameinfo(reinterpret_cast<sockaddr*>(&sa), len, h, sizeof h, s, sizeof s,
                  NI_NUMERICHOST | NI_NUMERICSERV);
      const std::string peer_host = h;
      const std::string peer = (sa.ss_family == AF_INET6 ? "[" + peer_host + "]" : peer_host) + ":" + s;
      {
        std::lock_guard<std::mutex> lock(conn_mu);
        if (stopping || pending >= kMaxPending) {
          close_fd(fd);
          if (!stopping) refuse(peer, peer_host, "", "too many connections in their handshake", false);
          continue;
        }
        fds.insert(fd);
        ++threads;
        ++pending;
      }
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::thread([self = shared_from_this(), fd, peer, peer_host] {
        self->serve(fd, peer, peer_host);
        std::lock_guard<std::mutex> lock(self->conn_mu);
        self->fds.erase(fd);
        close_fd(fd);
        --self->threads;
        self->conn_cv.notify_all();
      }).detach();
    }
    std::lock_guard<std::mutex> lock(conn_mu);
    --threads;
    conn_cv.notify_all();
  }

  // The handshake; true if the connection may go on (ch set up), false if refused.
  bool handshake(int fd, const std::string& peer, const std::string& peer_host, Channel& ch,
                 std::string& label) {
    const auto deadline = Clock::now() + kHandshakeTime;
    try {
      unsigned char hello[4 + 1 + kNonce + 1];
      read_exact(fd, hello, 4, deadline);  // the magic first: anything else is refused at once
      if (std::memcmp(hello, kMagic, 4) != 0) {
        refuse(peer, peer_host, "", "not an xy store client (it does not speak this store's protocol)", false);
        return false;
      }
      read_exact(fd, hello + 4, sizeof hello - 4, deadline);
      const bool client_secret = hello[4] & 1;
      const size_t label_len = hello[4 + 1 + kNonce];
      if (label_len > kMaxLabel) {
        refuse(peer, peer_host, "", "malformed handshake (a label of " + std::to_string(label_len) + " bytes)", false);
        return false;
      }
      std::string raw_label(label_len, '\0');
      read_exact(fd, raw_label.data(), label_len, deadline);
      label = sanitize_label(raw_label);
      const bool have_secret = !secret.empty();
      std::string t(reinterpret_cast<const char*>(hello), sizeof hello);
      t += raw_label;
      t.append(kMagic, 4);
      t += static_cast<char>(have_secret ? 1 : 0);
      t += random_bytes(kNonce);
      std::string reply = t.substr(t.size() - (4 + 1 + kNonce));
      reply += have_secret ? as_string(hmac(key, "server" + t)) : std::string(kMac, '\0');
      write_all(fd, reply.data(), reply.size(), deadline);
      std::string proof(kMac, '\0');
      read_exact(fd, proof.data(), kMac, deadline);
      std::string why;
      if (have_secret && !client_secret) why = "wrong or missing job secret (it has none)";
      else if (have_secret && !same_mac(proof, hmac(key, "client" + t))) why = "wrong or missing job secret";
      else if (!have_secret && client_secret) why = "it has a job secret and this store has none";
      // Logged before the verdict goes out: by the time the refused peer knows, node 0 has said so.
      if (!why.empty()) {
        refuse(peer, peer_host, label, why, /*mismatch=*/true);
        const char no = 'R';
        ::send(fd, &no, 1, MSG_NOSIGNAL);  // best effort: the peer may be gone already
        return false;
      }
      const char yes = 'A';
      write_all(fd, &yes, 1, deadline);
      ch.fd = fd;
      ch.auth = have_secret;
      if (have_secret) ch.session = hmac(key, "session" + t);
      ch.send_dir = 'S';
      ch.recv_dir = 'C';
      return true;
    } catch (const IoError& e) {
      if (!stopping) refuse(peer, peer_host, label, std::string("no complete handshake (") + e.what() + ")", false);
      return false;
    }
  }

  void serve(int fd, const std::string& peer, const std::string& peer_host) {
    Channel ch;
    std::string label;
    const bool ok = handshake(fd, peer, peer_host, ch, label);
    {
      std::lock_guard<std::mutex> lock(conn_mu);
      --pending;
    }
    if (!ok) return;
    try {
      for (;;) {
        const std::string req = ch.recv(kNever);
        const std::string resp = handle(req);
        ch.send(resp, Clock::now() + std::chrono::minutes(5));
      }
    } catch (const ProtocolError& e) {
      ++dropped;
      log_line("xy: store: dropped the connection from " + who(peer, label) + ": " + e.what());
    } catch (const IoError&) {
      // The client went away (or the server is stopping).
    } catch (const std::exception& e) {  // e.g. std::bad_alloc
      ++dropped;
      log_line("xy: store: dropped the connection from " + who(peer, label) + ": " + e.what());
    }
  }

  // Waits until every key exists; false on timeout (ms <= 0: no timeout) or when stopping.
  bool wait_keys(std::unique_lock<std::mutex>& lock, const std::vector<std::string>& keys, int64_t ms) {
    auto ready = [&] {
      if (stopping) return true;
      for (const auto& k : keys)
        if (!data.count(k)) return false;
      return true;
    };
    if (ms <= 0) cv.wait(lock, ready);
    else cv.wait_for(lock, std::chrono::milliseconds(std::min<int64_t>(ms, int64_t{1} << 40)), ready);
    if (stopping) return false;
    for (const auto& k : keys)
      if (!data.count(k)) return false;
    return true;
  }

  std::string handle(const std::string& req) {
    Reader r{req};
    std::string w;
    const uint8_t op = r.u8();
    switch (op) {
      case kSet: {
        std::string k = r.key(), v = r.value();
        r.done();
        {
          std::lock_guard<std::mutex> lock(mu);
          data[std::move(k)] = std::move(v);
        }
        cv.notify_all();
        w += static_cast<char>(kOk);
        break;
      }
      case kGet: {
        const std::string k = r.key();
        const int64_t ms = r.i64();
        r.done();
        std::unique_lock<std::mutex> lock(mu);
        if (!wait_keys(lock, {k}, ms)) {
          w += static_cast<char>(kTimedOut);
          break;
        }
        w += static_cast<char>(kOk);
        put_bytes(w, data[k]);
        break;
      }
      case kAdd: {
        const std::string k = r.key();
        const int64_t delta = r.i64();
        r.done();
        std::lock_guard<std::mutex> lock(mu);
        int64_t v = 0;
        auto it = data.find(k);
        if (it != data.end()) {
          const std::string& s = it->second;
          const auto res = std::from_chars(s.data(), s.data() + s.size(), v);
          if (res.ec != std::errc() || res.ptr != s.data() + s.size()) {
            w += static_cast<char>(kError);
            put_bytes(w, "add: the value of key '" + k.substr(0, 200) + "' is not an integer");
            break;
          }
        }
        if (__builtin_add_overflow(v, delta, &v)) {
          w += static_cast<char>(kError);
          put_bytes(w, "add: key '" + k.substr(0, 200) + "' would overflow");
          break;
        }
        data[k] = std::to_string(v);
        cv.notify_all();
        w += static_cast<char>(kOk);
        put_u64(w, static_cast<uint64_t>(v));
        break;
      }
      case kCheck: {
        const auto keys = r.keys();
        r.done();
        std::lock_guard<std::mutex> lock(mu);
        bool all = true;
        for (const auto& k : keys) all = all && data.count(k) > 0;
        w += static_cast<char>(kOk);
        w += static_cast<char>(all ? 1 : 0);
        break;
      }
      case kDelete: {
        const std::string k = r.key();
        r.done();
        std::lock_guard<std::mutex> lock(mu);
        w += static_cast<char>(kOk);
        w += static_cast<char>(data.erase(k) > 0 ? 1 : 0);
        break;
      }
      case kNumKeys: {
        r.done();
        std::lock_guard<std::mutex> lock(mu);
        w += static_cast<char>(kOk);
        put_u64(w, data.size());
        break;
      }
      case kWait: {
        const auto keys = r.keys();
        const int64_t ms = r.i64();
        r.done();
        std::unique_lock<std::mutex> lock(mu);
        w += static_cast<char>(wait_keys(lock, keys, ms) ? kOk : kTimedOut);
        break;
      }
      case kCompareSet: {
        std::string k = r.key(), expected = r.value(), desired = r.value();
        r.done();
        std::lock_guard<std::mutex> lock(mu);
        auto it = data.find(k);
        w += static_cast<char>(kOk);
        if (it == data.end()) {
          if (expected.empty()) {
            data[k] = desired;
            cv.notify_all();
            put_bytes(w, desired);
          } else {
            put_bytes(w, expected);
          }
        } else {
          if (it->second == expected) {
            it->second = std::move(desired);
            cv.notify_all();
          }
          put_bytes(w, it->second);
        }
        break;
      }
      default:
        throw ProtocolError("unknown request " + std::to_string(op));
    }
    return w;
  }

  void stop() {
    stopping = true;
    {
      std::lock_guard<std::mutex> lock(mu);
    }
    cv.notify_all();
    {
      std::lock_guard<std::mutex> lock(conn_mu);
      for (int fd : fds) ::shutdown(fd, SHUT_RDWR);
    }
    std::unique_lock<std::mutex> lock(conn_mu);
    conn_cv.wait_for(lock, std::chrono::seconds(2), [&] { return threads == 0; });
    if (threads == 0) {
      close_fd(listen_fd);
      listen_fd = -1;
    }  // else a thread is stuck in a send: leave the socket to the process's end
  }
};

NetStoreServer::NetStoreServer(const std::string& host, int port, std::string secret)
    : impl_(std::make_shared<Impl>()) {
  impl_->host = host;
  impl_->secret = std::move(secret);
  if (!impl_->secret.empty()) impl_->key = derive_key(impl_->secret);
  const std::string where = host + ":" + std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port_s = std::to_string(port);
  if (const int rc = getaddrinfo(host.c_str(), port_s.c_str(), &hints, &res); rc != 0)
    throw std::runtime_error("cannot serve the job's store at " + where + ": " + gai_strerror(rc));
  std::string err = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      err = std::strerror(errno);
      continue;
    }
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
      err = std::strerror(errno);
      ::close(fd);
      continue;
    }
    impl_->listen_fd = fd;
    break;
  }
  freeaddrinfo(res);
  if (impl_->listen_fd < 0) throw std::runtime_error("cannot serve the job's store at " + where + ": " + err);
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  getsockname(impl_->listen_fd, reinterpret_cast<sockaddr*>(&sa), &len);
  impl_->port = ntohs(sa.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port
                                               : reinterpret_cast<sockaddr_in*>(&sa)->sin_port);
  impl_->threads = 1;
  std::thread([self = impl_] { self->accept_loop(); }).detach();
}

NetStoreServer::~NetStoreServer() { impl_->stop(); }

int NetStoreServer::port() const { return impl_->port; }

std::vector<StoreRefusal> NetStoreServer::refusals() const {
  std::lock_guard<std::mutex> lock(impl_->log_mu);
  return impl_->refused;
}

int NetStoreServer::dropped() const { return impl_->dropped; }

// ---------------------------------------------------------------------------------------------
// Client

struct NetStore::Conn {
  Channel ch;
  std::string last_frame;  // for Tamper::kReplay
  ~Conn() { close_fd(ch.fd); }
};

namespace {

// Connects to host:port before `deadline`, retrying while nothing listens there yet.
int connect_to(const std::string& host, int port, Clock::time_point deadline) {
  std::string err = "no address";
  auto pause = std::chrono::milliseconds(50);
  for (;;) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const std::string port_s = std::to_string(port);
    if (const int rc = getaddrinfo(host.c_str(), port_s.c_str(), &hints, &res); rc != 0) {
      err = gai_strerror(rc);
      res = nullptr;
    }
    for (addrinfo* a = res; a; a = a->ai_next) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) {
        err = std::strerror(errno);
        continue;
      }
      int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
      if (rc != 0 && errno == EINPROGRESS) {
        try {
          wait_fd(fd, POLLOUT, std::min(deadline, Clock::now() + std::chrono::seconds(5)));
          int so = 0;
          socklen_t sl = sizeof so;
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl);
          rc = so == 0 ? 0 : -1;
          errno = so;
        } catch (const IoError&) {
          rc = -1;
          errno = ETIMEDOUT;
        }
      }
      if (rc == 0) {
        freeaddrinfo(res);
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return fd;
      }
      err = std::strerror(errno);
      ::close(fd);
    }
    if (res) freeaddrinfo(res);
    if (Clock::now() + pause >= deadline) throw IoError(err);
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(1000));
  }
}

// A refusal in the handshake: final, not retried.
struct Refused : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* kFix =
    "every node must be given the same secret (XY_SECRET in the environment or control.secret in "
    "the config)";

}  // namespace

NetStore::NetStore(std::string host, int port, StoreCredentials creds, std::chrono::milliseconds timeout,
                   std::shared_ptr<NetStoreServer> server)
    : c10d::Store(timeout), host_(std::move(host)), port_(port), creds_(std::move(creds)),
      server_(std::move(server)) {
  where_ = host_ + ":" + std::to_string(port_);
  const bool have_secret = !creds_.secret.empty();
  const Key key = have_secret ? derive_key(creds_.secret) : Key{};
  const auto deadline = timeout.count() > 0 ? Clock::now() + timeout : kNever;
  std::string last_error;
  for (;;) {
    std::unique_ptr<Conn> c(new Conn);
    try {
      c->ch.fd = connect_to(host_, port_, deadline);
      const auto hs_deadline = std::min(deadline, Clock::now() + kHandshakeTime);
      const std::string label = creds_.label.substr(0, kMaxLabel);
      std::string t(kMagic, 4);
      t += static_cast<char>(have_secret ? 1 : 0);
      t += random_bytes(kNonce);
      t += static_cast<char>(label.size());
      t += label;
      write_all(c->ch.fd, t.data(), t.size(), hs_deadline);
      unsigned char reply[4 + 1 + kNonce + kMac];
      read_exact(c->ch.fd, reply, sizeof reply, hs_deadline);
      if (std::memcmp(reply, kMagic, 4) != 0)
        throw Refused("the job's store at " + where_ + " does not speak xy's store protocol");
      const bool server_secret = reply[4] & 1;
      t.append(reinterpret_cast<const char*>(reply), 4 + 1 + kNonce);
      const std::string server_proof(reinterpret_cast<const char*>(reply) + 4 + 1 + kNonce, kMac);
      const bool server_ok = !have_secret || (server_secret && same_mac(server_proof, hmac(key, "server" + t)));
      // The proof goes out even to a server that failed its own, so that node 0 can name this
      // node as refused (a proof over both fresh nonces is of no use to anyone else).
      const std::string proof = have_secret ? as_string(hmac(key, "client" + t)) : std::string(kMac, '\0');
      write_all(c->ch.fd, proof.data(), proof.size(), hs_deadline);
      char verdict = 0;
      read_exact(c->ch.fd, &verdict, 1, hs_deadline);
      if (have_secret && !server_secret)
        throw Refused("the job's store at " + where_ + " (node 0) has no job secret but this node has "
                      "one: node 0 does not know this job's secret: refusing to join it; " + kFix);
      if (!server_ok)
        throw Refused("node 0 (the job's store at " + where_ + ") does not know this job's secret: "
                      "refusing to join it; " + std::string(kFix));
      if (verdict != 'A')
        throw Refused("node 0 (the job's store at " + where_ + ") refused this node: wrong or missing "
                      "job secret; " + std::string(kFix));
      c->ch.auth = have_secret;
      if (have_secret) c->ch.session = hmac(key, "session" + t);
      c->ch.send_dir = 'C';
      c->ch.recv_dir = 'S';
      conn_ = std::move(c);
      return;
    } catch (const Refused& e) {
      throw std::runtime_error(e.what());
    } catch (const IoError& e) {
      // Nothing listens yet, or the server closed the handshake (busy): again until the deadline.
      last_error = e.what();
      if (Clock::now() >= deadline)
        throw std::runtime_error("cannot reach the job's store at " + where_ + " within " +
                                 std::to_string(timeout.count()) + " ms: " + last_error);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

NetStore::~NetStore() = default;

std::string NetStore::call(const std::string& request, std::chrono::milliseconds server_wait) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!broken_.empty())
    throw std::runtime_error("the connection to the job's store at " + where_ + " was lost: " + broken_);
  const auto budget = std::max(server_wait, timeout_);
  const auto deadline = budget.count() > 0 ? Clock::now() + budget + kReplyMargin : kNever;
  try {
    std::string f = conn_->ch.frame(request);
    const Tamper t = std::exchange(tamper_, Tamper::kNone);
    // The payload's last byte, after the MAC was computed.
    if (t == Tamper::kFlipBit) f[f.size() - (conn_->ch.auth ? kMac : 0) - 1] ^= 1;
    write_all(conn_->ch.fd, f.data(), f.size(), deadline);
    if (t == Tamper::kReplay) write_all(conn_->ch.fd, f.data(), f.size(), deadline);
    return conn_->ch.recv(deadline);
  } catch (const std::exception& e) {
    broken_ = e.what();
    throw std::runtime_error("the job's store at " + where_ + ": " + broken_);
  }
}

namespace {

// The answer's fields after its status; a time-out or an error is thrown.
Reader answer(const std::string& resp, const std::string& what, const std::string& where) {
  Reader r{resp};
  const uint8_t s = r.u8();
  if (s == kTimedOut) throw std::runtime_error("timed out " + what + " in the job's store at " + where);
  if (s == kError) throw std::runtime_error("the job's store at " + where + ": " + r.bytes(4096, "an error"));
  if (s != kOk) throw std::runtime_error("the job's store at " + where + " answered nonsense");
  return r;
}

std::string bytes_of(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }
std::vector<uint8_t> vec_of(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

void check_key(const std::string& k) {
  if (k.size() > kMaxKey)
    throw std::invalid_argument("store: a key of " + std::to_string(k.size()) + " bytes (at most " +
                                std::to_string(kMaxKey) + ")");
}
void check_value(size_t n) {
  if (n > kMaxValue)
    throw std::invalid_argument("store: a value of " + std::to_string(n) + " bytes (at most " +
                                std::to_string(kMaxValue) + ")");
}
std::string key_list(const std::vector<std::string>& keys) {
  std::string s;
  for (const auto& k : keys) s += (s.empty() ? "'" : ", '") + k + "'";
  return s;
}

}  // namespace

void NetStore::set(const std::string& key, const std::vector<uint8_t>& value) {
  check_key(key);
  check_value(value.size());
  std::string q(1, static_cast<char>(kSet));
  put_bytes(q, key);
  put_bytes(q, bytes_of(value));
  answer(call(q, {}), "", where_).done();
}

std::vector<uint8_t> NetStore::compareSet(const std::string& key, const std::vector<uint8_t>& currentValue,
                                          const std::vector<uint8_t>& newValue) {
  check_key(key);
  check_value(currentValue.size());
  check_value(newValue.size());
  std::string q(1, static_cast<char>(kCompareSet));
  put_bytes(q, key);
  put_bytes(q, bytes_of(currentValue));
  put_bytes(q, bytes_of(newValue));
  const std::string resp = call(q, {});
  Reader r = answer(resp, "", where_);
  std::string v = r.value();
  r.done();
  return vec_of(v);
}

std::vector<uint8_t> NetStore::get(const std::string& key) {
  check_key(key);
  std::string q(1, static_cast<char>(kGet));
  put_bytes(q, key);
  put_u64(q, static_cast<uint64_t>(timeout_.count()));
  const std::string resp = call(q, timeout_);
  Reader r = answer(resp, "after " + std::to_string(timeout_.count()) + " ms waiting for key '" + key + "'", where_);
  std::string v = r.value();
  r.done();
  return vec_of(v);
}

int64_t NetStore::add(const std::string& key, int64_t value) {
  check_key(key);
  std::string q(1, static_cast<char>(kAdd));
  put_bytes(q, key);
  put_u64(q, static_cast<uint64_t>(value));
  const std::string resp = call(q, {});
  Reader r = answer(resp, "", where_);
  const int64_t v = r.i64();
  r.done();
  return v;
}

bool NetStore::deleteKey(const std::string& key) {
  check_key(key);
  std::string q(1, static_cast<char>(kDelete));
  put_bytes(q, key);
  const std::string resp = call(q, {});
  Reader r = answer(resp, "", where_);
  const bool v = r.u8() != 0;
  r.done();
  return v;
}

bool NetStore::check(const std::vector<std::string>& keys) {
  if (keys.size() > kMaxKeys) throw std::invalid_argument("store: more than 4096 keys in one check");
  std::string q(1, static_cast<char>(kCheck));
  put_u32(q, static_cast<uint32_t>(keys.size()));
  for (const auto& k : keys) {
    check_key(k);
    put_bytes(q, k);
  }
  const std::string resp = call(q, {});
  Reader r = answer(resp, "", where_);
  const bool v = r.u8() != 0;
  r.done();
  return v;
}

int64_t NetStore::getNumKeys() {
  const std::string resp = call(std::string(1, static_cast<char>(kNumKeys)), {});
  Reader r = answer(resp, "", where_);
  const int64_t v = r.i64();
  r.done();
  return v;
}

void NetStore::wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }

void NetStore::wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) {
  if (keys.size() > kMaxKeys) throw std::invalid_argument("store: more than 4096 keys in one wait");
  std::string q(1, static_cast<char>(kWait));
  put_u32(q, static_cast<uint32_t>(keys.size()));
  for (const auto& k : keys) {
    check_key(k);
    put_bytes(q, k);
  }
  put_u64(q, static_cast<uint64_t>(timeout.count()));
  const std::string resp = call(q, timeout);
  answer(resp, "after " + std::to_string(timeout.count()) + " ms waiting for keys " + key_list(keys), where_).done();
}

c10::intrusive_ptr<c10d::Store> NetStore::clone() {
  return c10::make_intrusive<NetStore>(host_, port_, creds_, timeout_, server_);
}

}  // namespace xy
