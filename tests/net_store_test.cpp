// xy's TCP store (comm/net_store.hpp): the c10d::Store operations, a Gloo rendezvous over it, and
// the open door it closes: it binds only the address it is given, and with a secret no one who has
// not proven it can read or write a key (a wrong or missing secret, c10d's own protocol, a raw
// socket, a forged or replayed frame, garbage, oversized frames), while the server logs the peer
// and keeps serving.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <chrono>
#include <cstring>
#include <thread>

#include "comm/c10d_store.hpp"
#include "comm/net_store.hpp"

namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

c10::intrusive_ptr<xy::NetStore> client(int port, const std::string& secret,
                                        std::chrono::milliseconds timeout = 5000ms,
                                        const std::string& label = "test") {
  return c10::make_intrusive<xy::NetStore>("127.0.0.1", port, xy::StoreCredentials{secret, label}, timeout);
}
std::vector<uint8_t> vec(const std::string& s) { return {s.begin(), s.end()}; }
std::string str(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

// A plain TCP connection to ip:port; -1 if refused.
int raw_connect(const char* ip, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, ip, &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}
void raw_send(int fd, const std::string& b) { ASSERT_EQ(::send(fd, b.data(), b.size(), MSG_NOSIGNAL), (ssize_t)b.size()); }
// Reads up to n bytes within `wait`; fewer if the peer closes or the time is up.
std::string raw_recv(int fd, size_t n, std::chrono::milliseconds wait = 3000ms) {
  std::string out;
  const auto until = Steady::now() + wait;
  while (out.size() < n && Steady::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buf[4096];
    const ssize_t r = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}
// True if the peer closes the connection within `wait`.
bool closed_by_peer(int fd, std::chrono::milliseconds wait = 3000ms) {
  const auto until = Steady::now() + wait;
  while (Steady::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buf[256];
    const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r <= 0) return true;
  }
  return false;
}
std::string u32(uint32_t v) {
  std::string s;
  for (int i = 3; i >= 0; --i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}
std::string frame(const std::string& payload) { return u32(static_cast<uint32_t>(payload.size())) + payload; }
// The store's hello without a secret (flag 0), as a stranger would send it.
std::string hello(const std::string& label, bool claims_secret = false) {
  return std::string("XYS1") + static_cast<char>(claims_secret ? 1 : 0) + std::string(32, 'n') +
         static_cast<char>(label.size()) + label;
}
// c10d's TCPStore (LibTorch 1.13) request add("/xy/stall", 1): what once ended a job.
std::string c10d_add_stall() {
  std::string q(1, '\x03');  // QueryType::ADD
  const std::string key = "/xy/stall";
  const uint64_t n = key.size();
  q.append(reinterpret_cast<const char*>(&n), 8);
  q += key;
  const int64_t one = 1;
  q.append(reinterpret_cast<const char*>(&one), 8);
  return q;
}
template <class F>
bool eventually(F f, std::chrono::milliseconds wait = 3000ms) {
  const auto until = Steady::now() + wait;
  while (Steady::now() < until) {
    if (f()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return f();
}

TEST(NetStore, Operations) {
  xy::NetStoreServer server("127.0.0.1", 0, "s3cret");
  auto c = client(server.port(), "s3cret");
  auto d = client(server.port(), "s3cret");
  c->set("a", vec("hello"));
  EXPECT_EQ(str(d->get("a")), "hello");
  EXPECT_EQ(c->add("n", 5), 5);
  EXPECT_EQ(d->add("n", 2), 7);
  EXPECT_EQ(d->add("n", 0), 7);
  EXPECT_EQ(str(c->get("n")), "7");
  EXPECT_THROW(c->add("a", 1), std::runtime_error);  // not an integer: an error, not a crash
  EXPECT_TRUE(d->check({"a", "n"}));
  EXPECT_FALSE(d->check({"a", "missing"}));
  EXPECT_EQ(c->getNumKeys(), 2);
  EXPECT_TRUE(c->deleteKey("a"));
  EXPECT_FALSE(c->deleteKey("a"));
  EXPECT_FALSE(d->check({"a"}));
  // compareSet as c10d's: a missing key is created only when the expected value is empty.
  EXPECT_EQ(str(c->compareSet("cs", {}, vec("x"))), "x");
  EXPECT_EQ(str(c->compareSet("cs", vec("y"), vec("z"))), "x");
  EXPECT_EQ(str(d->compareSet("cs", vec("x"), vec("z"))), "z");
  EXPECT_EQ(str(c->compareSet("absent", vec("q"), vec("r"))), "q");
  EXPECT_FALSE(c->check({"absent"}));
  // A 1 MiB value both ways.
  std::string big(1 << 20, 'v');
  big[12345] = 'w';
  c->set("big", vec(big));
  EXPECT_EQ(str(d->get("big")), big);
  // A clone is a connection of its own to the same store.
  auto e = c->clone();
  EXPECT_EQ(str(e->get("cs")), "z");
  // Limits are checked before anything is sent.
  EXPECT_THROW(c->set(std::string(5000, 'k'), vec("v")), std::invalid_argument);
}

TEST(NetStore, BlockingGetAndWaitTimeOut) {
  xy::NetStoreServer server("127.0.0.1", 0, "");
  auto c = client(server.port(), "", 300ms);
  auto t0 = Steady::now();
  try {
    c->get("never");
    FAIL() << "get of a missing key returned";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("timed out after 300 ms waiting for key 'never'"), std::string::npos) << e.what();
  }
  double s = std::chrono::duration<double>(Steady::now() - t0).count();
  EXPECT_GE(s, 0.25);
  EXPECT_LT(s, 3.0);
  EXPECT_THROW(c->wait({"never"}, 200ms), std::runtime_error);
  // The connection is still good after a time-out.
  c->set("k", vec("v"));
  EXPECT_EQ(str(c->get("k")), "v");
  // A get blocks until another client sets the key.
  auto d = client(server.port(), "");
  auto w = client(server.port(), "", 5000ms);
  std::thread later([&] {
    std::this_thread::sleep_for(200ms);
    d->set("late", vec("here"));
  });
  t0 = Steady::now();
  EXPECT_EQ(str(w->get("late")), "here");
  w->wait({"late", "k"});
  later.join();
  s = std::chrono::duration<double>(Steady::now() - t0).count();
  EXPECT_GE(s, 0.15);
}

TEST(NetStore, GlooRendezvousOfThreeRanks) {
  xy::NetStoreServer server("127.0.0.1", 0, "gloo-secret");
  const int world = 3;
  std::vector<float> sums(world, -1);
  std::vector<std::string> errors(world);
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r)
    ranks.emplace_back([&, r] {
      try {
        auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(20000));
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        auto store = c10::make_intrusive<c10d::PrefixStore>(
            "gloo", client(server.port(), "gloo-secret", 20000ms, "rank " + std::to_string(r)));
        auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, r, world, opts);
        std::vector<at::Tensor> t{at::full({4}, static_cast<float>(r + 1))};
        pg->allreduce(t)->wait();
        sums[r] = t[0][3].item<float>();
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : ranks) t.join();
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(errors[r], "");
    EXPECT_EQ(sums[r], 6.0f) << "rank " << r;
  }
  EXPECT_TRUE(server.refusals().empty());
}

TEST(NetStore, WrongOrMissingSecretIsRefusedAndLogged) {
  xy::NetStoreServer server("127.0.0.1", 0, "the-right-secret");
  auto good = client(server.port(), "the-right-secret");
  good->set("xy/hb/0", vec("1"));
  testing::internal::CaptureStderr();
  try {
    client(server.port(), "a-wrong-secret", 3000ms, "node 1");
    FAIL() << "a wrong secret was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("does not know this job's secret"), std::string::npos) << e.what();
  }
  try {
    client(server.port(), "", 3000ms, "node 1");
    FAIL() << "a missing secret was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("refused this node: wrong or missing job secret"), std::string::npos)
        << e.what();
  }
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("xy: store: refused a connection from 127.0.0.1:"), std::string::npos) << log;
  EXPECT_NE(log.find("(says it is node 1): wrong or missing job secret"), std::string::npos) << log;
  EXPECT_EQ(log.find("the-right-secret"), std::string::npos);
  EXPECT_EQ(log.find("a-wrong-secret"), std::string::npos);
  const auto refused = server.refusals();
  ASSERT_EQ(refused.size(), 2u);
  for (const auto& r : refused) {
    EXPECT_EQ(r.label, "node 1");
    EXPECT_EQ(r.peer_host, "127.0.0.1");
    EXPECT_TRUE(r.secret_mismatch);
  }
  EXPECT_GE(xy::store_refusals().size(), 2u);
  // The server goes on: the authenticated connection and a new one still work.
  EXPECT_EQ(str(good->get("xy/hb/0")), "1");
  EXPECT_EQ(client(server.port(), "the-right-secret")->add("xy/hb/0", 1), 2);

  // A store without a secret refuses a client that has one (the two disagree on the job).
  xy::NetStoreServer open_server("127.0.0.1", 0, "");
  testing::internal::CaptureStderr();
  EXPECT_THROW(client(open_server.port(), "the-right-secret", 3000ms), std::runtime_error);
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(open_server.refusals().size(), 1u);
}

TEST(NetStore, StrangersCannotReadOrWrite) {
  xy::NetStoreServer server("127.0.0.1", 0, "job-secret");
  auto good = client(server.port(), "job-secret");
  good->set("ckpt/list", vec("step-3"));
  testing::internal::CaptureStderr();
  // 1. c10d's own protocol (what wrote /xy/stall through c10d's TCPStore).
  int fd = raw_connect("127.0.0.1", server.port());
  ASSERT_GE(fd, 0);
  raw_send(fd, c10d_add_stall());
  EXPECT_TRUE(closed_by_peer(fd));
  ::close(fd);
  // 2. xy's protocol without a secret, then a plain frame anyway.
  fd = raw_connect("127.0.0.1", server.port());
  raw_send(fd, hello("node 1"));
  const std::string reply = raw_recv(fd, 4 + 1 + 32 + 32);
  ASSERT_EQ(reply.size(), 69u);
  EXPECT_EQ(reply.substr(0, 4), "XYS1");
  EXPECT_EQ(reply[4], 1);  // the server has a secret
  raw_send(fd, std::string(32, '\0'));
  EXPECT_EQ(raw_recv(fd, 1), "R");
  std::string set_stall(1, '\x01');
  set_stall += u32(8) + "xy/stall" + u32(1) + "1";
  ::send(fd, frame(set_stall).data(), frame(set_stall).size(), MSG_NOSIGNAL);
  EXPECT_TRUE(closed_by_peer(fd));
  ::close(fd);
  // 3. Claims a secret, proves nothing.
  fd = raw_connect("127.0.0.1", server.port());
  raw_send(fd, hello("node 0", true));
  EXPECT_EQ(raw_recv(fd, 69).size(), 69u);
  raw_send(fd, std::string(32, 'p'));
  EXPECT_EQ(raw_recv(fd, 1), "R");
  EXPECT_TRUE(closed_by_peer(fd));
  ::close(fd);
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("refused a connection from 127.0.0.1:"), std::string::npos) << log;
  EXPECT_NE(log.find("not an xy store client"), std::string::npos) << log;
  EXPECT_EQ(server.refusals().size(), 3u);
  // Nothing of theirs is visible; the store goes on.
  EXPECT_FALSE(good->check({"xy/stall"}));
  EXPECT_FALSE(good->check({"/xy/stall"}));
  EXPECT_EQ(good->getNumKeys(), 1);
  EXPECT_EQ(str(client(server.port(), "job-secret")->get("ckpt/list")), "step-3");
}

TEST(NetStore, ForgedOrReplayedFramesDropTheConnection) {
  xy::NetStoreServer server("127.0.0.1", 0, "job-secret");
  auto other = client(server.port(), "job-secret");
  testing::internal::CaptureStderr();
  // A frame altered after its MAC was computed: dropped before it is applied.
  auto c = client(server.port(), "job-secret", 3000ms, "node 1");
  c->set("before", vec("1"));
  c->tamper_next_request_for_test(xy::NetStore::Tamper::kFlipBit);
  EXPECT_THROW(c->set("forged", vec("payload")), std::runtime_error);
  EXPECT_TRUE(eventually([&] { return server.dropped() == 1; }));
  EXPECT_FALSE(other->check({"forged"}));
  EXPECT_THROW(c->get("before"), std::runtime_error);  // the connection is gone
  // A frame sent twice: the first counts, the replay is dropped.
  auto r = client(server.port(), "job-secret", 3000ms, "node 1");
  r->tamper_next_request_for_test(xy::NetStore::Tamper::kReplay);
  EXPECT_EQ(r->add("ctr", 1), 1);
  EXPECT_TRUE(eventually([&] { return server.dropped() == 2; }));
  EXPECT_EQ(str(other->get("ctr")), "1");
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("xy: store: dropped the connection from 127.0.0.1:"), std::string::npos) << log;
  EXPECT_NE(log.find("failed its MAC"), std::string::npos) << log;
  EXPECT_EQ(str(other->get("before")), "1");
}

TEST(NetStore, GarbageAndOversizedFramesDropOnlyTheirConnection) {
  // Without a secret a stranger gets past the handshake: the frames themselves must be checked.
  xy::NetStoreServer server("127.0.0.1", 0, "");
  testing::internal::CaptureStderr();
  auto accepted = [&] {
    const int fd = raw_connect("127.0.0.1", server.port());
    raw_send(fd, hello("fuzz"));
    EXPECT_EQ(raw_recv(fd, 69).size(), 69u);
    raw_send(fd, std::string(32, '\0'));
    EXPECT_EQ(raw_recv(fd, 1), "A");
    return fd;
  };
  // The test's own encoding is right: a well-formed SET is answered.
  int fd = accepted();
  std::string ok_set(1, '\x01');
  ok_set += u32(2) + "ok" + u32(1) + "1";
  raw_send(fd, frame(ok_set));
  EXPECT_EQ(raw_recv(fd, 5), u32(1) + std::string(1, '\0'));
  ::close(fd);
  std::vector<std::string> bad = {
      u32(0xffffffffu),                                               // a 4 GiB frame
      u32(200u << 20),                                                // over the frame limit
      frame(std::string(1, '\x01') + u32(0xfffffff0u)),               // a key longer than the frame
      frame(std::string(1, '\x01') + u32(5000) + std::string(5000, 'k') + u32(0)),  // a key over 4 KiB
      frame(std::string(1, '\x63')),                                  // an unknown op
      frame(std::string(1, '\x04') + u32(1000000)),                   // a million keys to check
      frame(ok_set + "trailing"),                                     // trailing bytes
      frame(""),                                                      // an empty request
  };
  for (const auto& b : bad) {
    fd = accepted();
    raw_send(fd, b);
    EXPECT_TRUE(closed_by_peer(fd)) << "frame of " << b.size() << " bytes";
    ::close(fd);
  }
  // Pure garbage before the handshake, and a frame cut short.
  fd = raw_connect("127.0.0.1", server.port());
  raw_send(fd, std::string(100, '\xa5'));
  EXPECT_TRUE(closed_by_peer(fd));
  ::close(fd);
  fd = accepted();
  raw_send(fd, u32(100) + "short");
  ::close(fd);
  EXPECT_TRUE(eventually([&] { return server.dropped() == static_cast<int>(bad.size()); }))
      << server.dropped();
  testing::internal::GetCapturedStderr();
  // Still serving.
  auto c = client(server.port(), "");
  EXPECT_EQ(str(c->get("ok")), "1");
  EXPECT_EQ(c->getNumKeys(), 1);
}

TEST(NetStore, TheJobStoreListensOnlyOnItsAddress) {
  // A free port on 127.0.0.2 (every 127.0.0.0/8 address is loopback on Linux).
  const int probe = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.2", &a.sin_addr);
  ASSERT_EQ(::bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  getsockname(probe, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  ::close(probe);
  auto served = xy::tcp_store("127.0.0.2", port, /*is_server=*/true, 5, {"s", "node 0"});
  auto joined = xy::tcp_store("127.0.0.2", port, /*is_server=*/false, 5, {"s", "node 1"});
  joined->set("k", vec("v"));
  EXPECT_EQ(str(served->get("k")), "v");
  int fd = raw_connect("127.0.0.1", port);
  EXPECT_LT(fd, 0) << "the store answers on 127.0.0.1:" << port << " too";
  if (fd >= 0) ::close(fd);
  fd = raw_connect("127.0.0.2", port);
  EXPECT_GE(fd, 0);
  if (fd >= 0) ::close(fd);
}

}  // namespace
