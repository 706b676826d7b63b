// xy's TCP key-value store (see net_store.hpp; the design is in docs/OPERATIONS.md, "The job's
// secret").
// This file: the client (NetStore) and the process's store credentials; the server is in
// net_store_server.cpp, the wire format and its code in net_store_wire.{hpp,cpp}.
#include "comm/net_store.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "comm/net_store_wire.hpp"

namespace xy {

using namespace store_wire;

namespace {

// The process's credentials and the refusals of the stores it serves. Never destroyed: a server
// thread may still refuse a connection while the process exits.
std::mutex& g_mu = *new std::mutex;
StoreCredentials& g_creds = *new StoreCredentials;
std::vector<StoreRefusal>& g_refusals = *new std::vector<StoreRefusal>;

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

void store_wire::record_refusal(const StoreRefusal& r) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_refusals.push_back(r);
}

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
