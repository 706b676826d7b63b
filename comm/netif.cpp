#include "comm/netif.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdlib>
#include <cstring>

namespace xy {
namespace {

bool same_address(const sockaddr* a, const sockaddr* b) {
  if (a->sa_family != b->sa_family) return false;
  if (a->sa_family == AF_INET)
    return std::memcmp(&reinterpret_cast<const sockaddr_in*>(a)->sin_addr,
                       &reinterpret_cast<const sockaddr_in*>(b)->sin_addr, sizeof(in_addr)) == 0;
  if (a->sa_family == AF_INET6)
    return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr,
                       &reinterpret_cast<const sockaddr_in6*>(b)->sin6_addr, sizeof(in6_addr)) == 0;
  return false;
}

std::string text_of(const sockaddr* a) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (a->sa_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a)->sin_addr, buf, sizeof buf);
  else if (a->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr, buf, sizeof buf);
  return buf;
}

}  // namespace

std::string interface_owning(const std::string& host, std::vector<std::string>* interfaces) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return "";
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) {
    freeaddrinfo(res);
    return "";
  }
  std::string found;
  for (ifaddrs* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6)) continue;
    if (interfaces) interfaces->push_back(std::string(i->ifa_name) + " " + text_of(i->ifa_addr));
    for (addrinfo* r = res; r && found.empty(); r = r->ai_next)
      if (same_address(r->ai_addr, i->ifa_addr)) found = i->ifa_name;
  }
  freeifaddrs(ifs);
  freeaddrinfo(res);
  return found;
}

std::string choose_socket_interface(const std::string& host, const std::string& what) {
  const char* nccl = std::getenv("NCCL_SOCKET_IFNAME");
  const char* gloo = std::getenv("GLOO_SOCKET_IFNAME");
  std::vector<std::string> seen;
  const std::string name = interface_owning(host, &seen);
  if (name.empty()) {
    std::string list;
    for (const auto& s : seen) list += (list.empty() ? "" : ", ") + s;
    return "warning: no interface of this machine owns " + host + " (" + what +
           "); NCCL and Gloo choose their own (interfaces: " + list + ")";
  }
  std::string line = "network interface " + name + " owns " + host + " (" + what + "):";
  if (nccl && *nccl) {
    line += std::string(" NCCL_SOCKET_IFNAME=") + nccl + " as set";
  } else {
    setenv("NCCL_SOCKET_IFNAME", name.c_str(), 1);
    line += " NCCL_SOCKET_IFNAME=" + name;
  }
  if (gloo && *gloo) {
    line += std::string(", GLOO_SOCKET_IFNAME=") + gloo + " as set";
  } else {
    setenv("GLOO_SOCKET_IFNAME", name.c_str(), 1);
    line += ", GLOO_SOCKET_IFNAME=" + name;
  }
  return line;
}

}  // namespace xy
