// The server of xy's TCP store (comm/net_store.hpp): the accept loop, the handshake's server side,
// one thread per connection serving its requests, and the refusals it logs. The wire format is in
// net_store_wire.hpp.
#include "comm/net_store.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "comm/net_store_wire.hpp"

namespace xy {

using namespace store_wire;

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
    record_refusal(r);
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

}  // namespace xy
