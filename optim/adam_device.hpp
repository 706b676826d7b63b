// The fused device AdamW (CUDA build only): the CPU kernel's semantics (optim/adam.hpp) on a flat
// range of device memory, in one CUDA kernel that reads the gradient, master, m and v once and
// writes master, m, v and the working copy once (28-30 bytes an element).
//
// Same math and the same fp32 constants (AdamConsts, computed on the host) as the CPU kernel, with
// every operation an explicitly rounded intrinsic in the CPU's vector paths' order (the same fused
// multiply-adds, IEEE division and square root; nothing left for the compiler to contract): the
// result is bit for bit the AVX2 / AVX-512 paths' result. The CPU's scalar path (machines without
// AVX2, and the last < 8 or 16 elements of each CPU call) has no FMA and differs in the last bit.
//
// Weight decay per element: one call covers a flat range (a rank's shard of a unit, or the part of
// it on the device) and takes the list of its no-decay ranges, instead of one call per parameter.
//
// A skipped step (fp16 overflow) does not call the kernel: the caller recasts the working copy
// from the master, as the CPU path does (actors/optimizer_offload.cpp), with recast_device().
//
// Two forms: raw device pointers (adam_device.cu, LibTorch-free, so that nvcc never compiles
// LibTorch's headers) and tensors (adam_device.cpp: checks, device guard, c10 stream).
#pragma once

#include <cstdint>
#include <vector>

#include "optim/adam.hpp"

// cudaStream_t exactly as the CUDA runtime declares it, so that this header needs no CUDA headers.
typedef struct CUstream_st* cudaStream_t;

namespace at {
class Tensor;
}
namespace c10 {
class Stream;
}

namespace xy {

// [begin, end) in elements, relative to the start of the range a call updates.
struct ElemRange {
  int64_t begin = 0, end = 0;
};

// Updates n elements on `stream` (enqueued; the host does not wait). p, m, v: fp32 device
// pointers; g: the gradient (g_type); out: the working copy (out_type; null with kNone).
// no_decay: host array of `ranges` sorted, disjoint, non-empty ranges inside [0, n) that get no
// weight decay (checked). Throws std::invalid_argument for bad ranges, std::runtime_error for a
// failed launch.
void adamw_device(float* p, float* m, float* v, const void* g, int64_t n, const AdamHyper& h,
                  const ElemRange* no_decay, int64_t ranges, void* out, WorkingType out_type,
                  GradType g_type, cudaStream_t stream);

// The working copy of n elements recast from the fp32 master on `stream` (a skipped step), rounded
// as the CPU does (c10's round to nearest even; bf16 NaN is 0x7FC0).
void recast_device(const float* master, void* out, int64_t n, WorkingType out_type,
                   cudaStream_t stream);

// The tensor forms: contiguous tensors of one CUDA device; master, m, v fp32 of n elements; grad
// fp32, bf16 or fp16 of n elements; working fp32, bf16 or fp16 of n elements, or undefined (none).
// `stream` is a CUDA stream of that device. A wrong tensor throws std::invalid_argument naming it.
void adamw_device(at::Tensor& master, at::Tensor& m, at::Tensor& v, const at::Tensor& grad,
                  at::Tensor& working, const AdamHyper& h, const std::vector<ElemRange>& no_decay,
                  const c10::Stream& stream);
void recast_device(const at::Tensor& master, at::Tensor& working, const c10::Stream& stream);

}  // namespace xy
