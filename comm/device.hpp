// Device-generic streams and events (c10's virtual guard interface, so the same code serves the
// CPU build and the CUDA build): on CPU every call is a no-op and work is ordered by program order;
// on CUDA each rank has compute, gather, reduce and host-to-device streams ordered by events,
// never by device-wide synchronisation.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <torch/version.h>

#include <memory>
#include <thread>

namespace xy {

// The streams of one rank. On CPU all are the CPU's default stream.
struct RankStreams {
  c10::Device device{c10::kCPU};
  c10::Stream compute{c10::Stream::DEFAULT, c10::Device(c10::kCPU)};
  c10::Stream gather{c10::Stream::DEFAULT, c10::Device(c10::kCPU)};
  c10::Stream reduce{c10::Stream::DEFAULT, c10::Device(c10::kCPU)};
  c10::Stream h2d{c10::Stream::DEFAULT, c10::Device(c10::kCPU)};

  static RankStreams for_device(c10::Device d) {
    RankStreams s;
    s.device = d;
    if (d.is_cpu()) return s;
    c10::impl::VirtualGuardImpl impl(d.type());
    s.compute = impl.getStreamFromGlobalPool(d, /*isHighPriority=*/false);
    s.gather = impl.getStreamFromGlobalPool(d, /*isHighPriority=*/true);
    s.reduce = impl.getStreamFromGlobalPool(d, /*isHighPriority=*/true);
    s.h2d = impl.getStreamFromGlobalPool(d, /*isHighPriority=*/false);
    return s;
  }
  bool on_device() const { return !device.is_cpu(); }
};

// A point in a stream's work. Recording on a CPU stream makes an event that is always complete.
// Shared between actors (shared_ptr); record() by the producer before the consumer sees it.
class DeviceEvent {
 public:
  // Records the current end of `stream`'s work.
  static std::shared_ptr<DeviceEvent> record(const c10::Stream& stream) {
    auto e = std::make_shared<DeviceEvent>();
    if (stream.device_type() != c10::kCPU) {
      e->event_ = std::make_unique<c10::Event>(stream.device_type());
      e->event_->record(stream);
    }
    return e;
  }
  // Makes `stream` wait for this event (on the device; the host does not wait).
  void block(const c10::Stream& stream) const {
    if (event_) event_->block(stream);
  }
  // Makes the host wait for this event.
  void synchronize() const {
    if (!event_) return;
#if TORCH_VERSION_MAJOR >= 2
    event_->synchronize();
#else
    while (!event_->query()) std::this_thread::yield();  // 1.13's c10::Event cannot block
#endif
  }

 private:
  std::unique_ptr<c10::Event> event_;
};

using DeviceEventPtr = std::shared_ptr<DeviceEvent>;

// Makes `s` wait for `e` if there is one.
inline void wait_for(const DeviceEventPtr& e, const c10::Stream& s) {
  if (e) e->block(s);
}

}  // namespace xy
