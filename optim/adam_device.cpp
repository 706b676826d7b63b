// The tensor forms of the device AdamW (see adam_device.hpp): check the tensors, make their device
// the current one, and enqueue the kernel (adam_device.cu) on the given stream. CUDA build only.
#include "optim/adam_device.hpp"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/Stream.h>
#include <c10/cuda/CUDAStream.h>

#include <stdexcept>
#include <string>

namespace xy {
namespace {

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument(what); }

// `t` is a contiguous tensor of n elements on `dev`, of one of `types` (names for the message).
void check(const at::Tensor& t, const char* name, const c10::Device& dev, int64_t n,
           std::initializer_list<at::ScalarType> types) {
  if (!t.defined()) bad(std::string("device AdamW: tensor ") + name + " is undefined");
  if (t.device() != dev)
    bad(std::string("device AdamW: tensor ") + name + " is on " + t.device().str() + ", not " + dev.str());
  if (!t.is_contiguous()) bad(std::string("device AdamW: tensor ") + name + " is not contiguous");
  if (t.numel() != n)
    bad(std::string("device AdamW: tensor ") + name + " has " + std::to_string(t.numel()) +
        " elements, not " + std::to_string(n));
  for (at::ScalarType s : types)
    if (t.scalar_type() == s) return;
  bad(std::string("device AdamW: tensor ") + name + " has dtype " + c10::toString(t.scalar_type()) +
      ", which the kernel does not take");
}

// The master's device, which must be a CUDA device, and the stream on it.
c10::Device device_of(const at::Tensor& master, const c10::Stream& stream) {
  if (!master.defined() || !master.is_cuda())
    bad("device AdamW: tensor master is " +
        (master.defined() ? "on " + master.device().str() : std::string("undefined")) +
        ", not on a CUDA device");
  if (stream.device() != master.device())
    bad("device AdamW: the stream is on " + stream.device().str() + ", the tensors on " +
        master.device().str());
  return master.device();
}

WorkingType working_type_of(const at::Tensor& t) {
  if (!t.defined()) return WorkingType::kNone;
  switch (t.scalar_type()) {
    case at::kFloat: return WorkingType::kFloat32;
    case at::kBFloat16: return WorkingType::kBFloat16;
    default: return WorkingType::kFloat16;  // checked to be one of the three
  }
}

cudaStream_t cuda_stream(const c10::Stream& s) { return c10::cuda::CUDAStream(s).stream(); }

}  // namespace

void adamw_device(at::Tensor& master, at::Tensor& m, at::Tensor& v, const at::Tensor& grad,
                  at::Tensor& working, const AdamHyper& h, const std::vector<ElemRange>& no_decay,
                  const c10::Stream& stream) {
  const c10::Device dev = device_of(master, stream);
  const int64_t n = master.numel();
  check(master, "master", dev, n, {at::kFloat});
  check(m, "m", dev, n, {at::kFloat});
  check(v, "v", dev, n, {at::kFloat});
  check(grad, "grad", dev, n, {at::kFloat, at::kBFloat16, at::kHalf});
  if (working.defined()) check(working, "working", dev, n, {at::kFloat, at::kBFloat16, at::kHalf});
  const GradType gt = grad.scalar_type() == at::kBFloat16 ? GradType::kBFloat16
                      : grad.scalar_type() == at::kHalf   ? GradType::kFloat16
                                                          : GradType::kFloat32;
  c10::DeviceGuard guard(dev);
  adamw_device(master.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), grad.data_ptr(),
               n, h, no_decay.data(), static_cast<int64_t>(no_decay.size()),
               working.defined() ? working.data_ptr() : nullptr, working_type_of(working), gt,
               cuda_stream(stream));
}

void recast_device(const at::Tensor& master, at::Tensor& working, const c10::Stream& stream) {
  const c10::Device dev = device_of(master, stream);
  const int64_t n = master.numel();
  check(master, "master", dev, n, {at::kFloat});
  check(working, "working", dev, n, {at::kFloat, at::kBFloat16, at::kHalf});
  c10::DeviceGuard guard(dev);
  recast_device(master.data_ptr<float>(), working.data_ptr(), n, working_type_of(working),
                cuda_stream(stream));
}

}  // namespace xy
