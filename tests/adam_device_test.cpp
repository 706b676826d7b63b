// The fused device AdamW (optim/adam_device.*) against the CPU kernel (optim/adam.*), the reference
// the optimizer actor runs today: random data of odd lengths (1, 7, 4097, 2^20 + 3), no-decay ranges
// (more than one launch takes, in one case), grad_scale != 1, five consecutive steps (adam_step
// 1..5, a new lr each), working copies fp32 / bf16 / fp16 / none, gradients fp32 / bf16 / fp16.
//
// What must hold, and is printed:
// - master, m and v within 1e-6 relative (max |device - CPU| / max |CPU|) of both CPU paths, the
//   best one here (AVX-512 / AVX2: FMA) and the scalar one (no FMA);
// - bit for bit the CPU's vector path wherever that path computed (the device kernel performs its
//   operations in the same order, each rounded once); the CPU's scalar tails (the last < 16 or 8
//   elements of each CPU call) may differ in the last bit;
// - the working copy: exactly the device master rounded (c10's conversion), and against the CPU's
//   working copy bitwise where the masters agree bitwise, else within one ulp;
// - a skipped step's recast: c10's conversion of the master, special values included.
// Labelled gpu (CUDA build only).
#include <gtest/gtest.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "optim/adam.hpp"
#include "optim/adam_device.hpp"
#include "test_util.hpp"

using namespace xy;

namespace {

const at::Device kCuda(at::kCUDA, 0);

struct Types {
  WorkingType wt;
  at::ScalarType wdtype;  // undefined working copy for kNone
  const char* wname;
};
const Types kWorking[] = {{WorkingType::kFloat32, at::kFloat, "fp32"},
                          {WorkingType::kBFloat16, at::kBFloat16, "bf16"},
                          {WorkingType::kFloat16, at::kHalf, "fp16"},
                          {WorkingType::kNone, at::kFloat, "none"}};
struct GTypes {
  GradType gt;
  at::ScalarType dtype;
  const char* name;
};
const GTypes kGrads[] = {{GradType::kFloat32, at::kFloat, "fp32"},
                         {GradType::kBFloat16, at::kBFloat16, "bf16"},
                         {GradType::kFloat16, at::kHalf, "fp16"}};

// No-decay ranges of each length: the whole of one element, one inside, 40 (more than the 32 one
// launch takes), and three large ones at both ends and inside.
std::vector<ElemRange> ranges_for(int64_t n) {
  if (n == 1) return {{0, 1}};
  if (n == 7) return {{2, 5}};
  if (n == 4097) {
    std::vector<ElemRange> r;
    for (int64_t k = 0; k < 40; ++k) r.push_back({3 + 97 * k, 3 + 97 * k + 5});
    return r;
  }
  return {{0, 4096}, {n / 2, n / 2 + 3}, {n - 1000, n}};
}

// The CPU path the way the optimizer actor runs it: one kernel call per run of elements with the
// same decay. `body` (optional) marks the elements the CPU's vector path computed: all but the
// last (len % width) of each call.
void cpu_step(at::Tensor& p, at::Tensor& m, at::Tensor& v, const at::Tensor& g, at::Tensor& out,
              const AdamHyper& h, const std::vector<ElemRange>& nd, WorkingType wt, GradType gt,
              AdamIsa isa, at::Tensor* body) {
  const int64_t n = p.numel();
  const size_t gsize = g.element_size(), osize = out.defined() ? out.element_size() : 0;
  const int64_t width = isa == AdamIsa::kAvx512 ? 16 : isa == AdamIsa::kAvx2 ? 8 : 0;
  auto call = [&](int64_t b, int64_t e, bool decay) {
    if (b >= e) return;
    adamw_fused(p.data_ptr<float>() + b, m.data_ptr<float>() + b, v.data_ptr<float>() + b,
                static_cast<const char*>(g.data_ptr()) + b * gsize, e - b, h, decay,
                out.defined() ? static_cast<char*>(out.data_ptr()) + b * osize : nullptr, wt, isa, gt);
    if (body && width > 0) body->narrow(0, b, (e - b) - (e - b) % width).fill_(true);
  };
  int64_t pos = 0;
  for (const ElemRange& r : nd) {
    call(pos, r.begin, true);
    call(r.begin, r.end, false);
    pos = r.end;
  }
  call(pos, n, true);
}

// Sign-magnitude 16-bit patterns as ordered integers: adjacent values differ by 1 (+0 = -0 = 0).
at::Tensor ordered16(const at::Tensor& t) {
  const at::Tensor bits = t.contiguous().view(at::kShort).to(at::kInt);
  const at::Tensor mag = at::bitwise_and(bits, 0x7FFF);
  return at::where(bits.lt(0), -mag, mag);
}
at::Tensor same_bits32(const at::Tensor& a, const at::Tensor& b) {
  return a.contiguous().view(at::kInt).eq(b.contiguous().view(at::kInt));
}

struct Outcome {
  bool ok = true;
};

void check_case(int64_t n, const Types& w, const GTypes& gty, Outcome& all) {
  const std::vector<ElemRange> nd = ranges_for(n);
  const AdamIsa best = adam_best_isa();
  at::manual_seed(1000 + n);
  const at::Tensor p0 = at::randn({n});
  at::Tensor p = p0.clone(), m = at::zeros({n}), v = at::zeros({n});          // CPU, best path
  at::Tensor ps = p0.clone(), ms = at::zeros({n}), vs = at::zeros({n});       // CPU, scalar path
  at::Tensor dp = p0.to(kCuda), dm = at::zeros({n}, at::TensorOptions(kCuda)), dv = dm.clone();
  const bool has_out = w.wt != WorkingType::kNone;
  at::Tensor out = has_out ? at::empty({n}, w.wdtype) : at::Tensor();
  at::Tensor outs = has_out ? at::empty({n}, w.wdtype) : at::Tensor();
  at::Tensor dout = has_out ? at::empty({n}, at::TensorOptions(kCuda).dtype(w.wdtype)) : at::Tensor();
  at::Tensor body = at::zeros({n}, at::kBool);
  const c10::Stream stream = c10::cuda::getCurrentCUDAStream(0).unwrap();

  AdamHyper h;
  h.beta1 = 0.9;
  h.beta2 = 0.95;
  h.eps = 1e-8;
  h.weight_decay = 0.1;
  h.grad_scale = 0.3;  // clipping and 1/loss scale, folded
  for (int64_t step = 1; step <= 5; ++step) {
    h.step = step;
    h.lr = 1e-2 / static_cast<double>(step);
    const at::Tensor g = (at::randn({n}) * 4).to(gty.dtype);
    body.zero_();
    cpu_step(p, m, v, g, out, h, nd, w.wt, gty.gt, best, &body);
    cpu_step(ps, ms, vs, g, outs, h, nd, w.wt, gty.gt, AdamIsa::kScalar, nullptr);
    adamw_device(dp, dm, dv, g.to(kCuda), dout, h, nd, stream);
  }
  const at::Tensor hp = dp.cpu(), hm = dm.cpu(), hv = dv.cpu();  // (synchronises the stream)
  const double err[3] = {test::rel_err(hp, p), test::rel_err(hm, m), test::rel_err(hv, v)};
  const double err_scalar[3] = {test::rel_err(hp, ps), test::rel_err(hm, ms), test::rel_err(hv, vs)};
  double worst = 0;
  for (int k = 0; k < 3; ++k) worst = std::max({worst, err[k], err_scalar[k]});
  // Bitwise agreement with the CPU's vector path where it computed.
  const at::Tensor same_p = same_bits32(hp, p);
  const at::Tensor all_same = same_p & same_bits32(hm, m) & same_bits32(hv, v);
  const int64_t in_body = body.sum().item<int64_t>();
  const int64_t body_differs = (body & ~all_same).sum().item<int64_t>();
  const int64_t same_total = all_same.sum().item<int64_t>();
  std::printf("n=%-8lld working %s grad %s: worst relative error %.3g (vs %s: p %.3g m %.3g v %.3g; "
              "vs scalar: p %.3g m %.3g v %.3g); master/m/v bitwise equal on %lld of %lld, "
              "differing on %lld of the %lld the %s path computed\n",
              static_cast<long long>(n), w.wname, gty.name, worst, adam_isa_name(best), err[0], err[1],
              err[2], err_scalar[0], err_scalar[1], err_scalar[2], static_cast<long long>(same_total),
              static_cast<long long>(n), static_cast<long long>(body_differs),
              static_cast<long long>(in_body), adam_isa_name(best));
  bool ok = worst <= 1e-6 && body_differs == 0;
  EXPECT_LE(worst, 1e-6);
  EXPECT_EQ(body_differs, 0) << "the device kernel should repeat the CPU's vector path bit for bit";
  if (has_out) {
    const at::Tensor hout = dout.cpu();
    if (w.wt == WorkingType::kFloat32) {
      const bool own = same_bits32(hout, hp).all().item<bool>();
      const bool cpu = (same_bits32(hout, out) | ~same_p).all().item<bool>();
      std::printf("  working fp32: the device master exactly: %s; the CPU's where the masters agree: %s\n",
                  own ? "yes" : "NO", cpu ? "yes" : "NO");
      EXPECT_TRUE(own);
      EXPECT_TRUE(cpu);
      ok = ok && own && cpu;
    } else {
      // The device master rounded by c10 (the CPU kernel's rounding is checked against c10's in
      // adam_test): bitwise.
      const bool own = ordered16(hout).eq(ordered16(hp.to(w.wdtype))).all().item<bool>();
      const at::Tensor ulps = (ordered16(hout) - ordered16(out)).abs();
      const int64_t equal = ulps.eq(0).sum().item<int64_t>(), one = ulps.eq(1).sum().item<int64_t>();
      const int64_t more = n - equal - one;
      const int64_t unequal_where_same = (ulps.ne(0) & same_p).sum().item<int64_t>();
      std::printf("  working %s: the device master rounded exactly: %s; vs the CPU's: %lld bitwise "
                  "equal, %lld one ulp apart, %lld more (%lld unequal where the masters agree)\n",
                  w.wname, own ? "yes" : "NO", static_cast<long long>(equal),
                  static_cast<long long>(one), static_cast<long long>(more),
                  static_cast<long long>(unequal_where_same));
      EXPECT_TRUE(own);
      EXPECT_EQ(more, 0);
      EXPECT_EQ(unequal_where_same, 0);
      ok = ok && own && more == 0 && unequal_where_same == 0;
    }
  }
  all.ok = all.ok && ok;
}

}  // namespace

TEST(DeviceAdam, MatchesTheCpuKernel) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  // A stream of the pool, current for the whole test: the copies and the kernels are ordered on it.
  c10::cuda::CUDAStreamGuard guard(c10::cuda::getStreamFromPool(false, 0));
  Outcome all;
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{4097}, (int64_t{1} << 20) + 3})
    for (const Types& w : kWorking)
      for (const GTypes& g : kGrads) check_case(n, w, g, all);
  std::printf("device AdamW vs the CPU kernel over all cases: %s\n", all.ok ? "agree" : "DISAGREE");
}

// A skipped step recasts the working copy from the master: c10's conversion, bit for bit (NaN as a
// NaN), overflow to infinity, subnormals and signed zeros included.
TEST(DeviceAdam, RecastIsC10sConversion) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const float special[] = {0.0f, -0.0f, 1e-8f, -3e-5f, 6e-8f, 65504.0f, 65519.0f, 65520.0f, -7e4f,
                           1e6f, 3.0e38f, std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(), 1e-40f, 1.00390625f, 1.01171875f};
  at::manual_seed(5);
  at::Tensor master = at::randn({4099}) * 100;
  for (size_t i = 0; i < sizeof(special) / sizeof(float); ++i) master[static_cast<int64_t>(i)] = special[i];
  const c10::Stream stream = c10::cuda::getCurrentCUDAStream(0).unwrap();
  for (at::ScalarType dt : {at::kBFloat16, at::kHalf, at::kFloat}) {
    at::Tensor dw = at::zeros({master.numel()}, at::TensorOptions(kCuda).dtype(dt));
    recast_device(master.to(kCuda), dw, stream);
    const at::Tensor got = dw.cpu(), want = master.to(dt);
    const at::Tensor nan = want.isnan();
    const bool nan_same = at::equal(got.isnan(), nan);
    const bool bits_same =
        dt == at::kFloat
            ? (same_bits32(got, want) | nan).all().item<bool>()
            : (got.view(at::kShort).eq(want.view(at::kShort)) | nan).all().item<bool>();
    std::printf("recast to %s: c10's conversion bit for bit (NaN as NaN): %s\n", c10::toString(dt),
                nan_same && bits_same ? "yes" : "NO");
    EXPECT_TRUE(nan_same);
    EXPECT_TRUE(bits_same);
  }
}

// A wrong tensor or range is one line naming it, before anything is launched.
TEST(DeviceAdam, BadInputIsNamed) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const c10::Stream stream = c10::cuda::getCurrentCUDAStream(0).unwrap();
  const auto opts = at::TensorOptions(kCuda);
  at::Tensor p = at::zeros({10}, opts), m = at::zeros({10}, opts), v = at::zeros({10}, opts);
  at::Tensor w = at::zeros({10}, opts.dtype(at::kBFloat16));
  AdamHyper h;
  auto message = [&](auto&& f) -> std::string {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "(nothing thrown)";
  };
  const std::string cpu_master = message([&] {
    at::Tensor hp = at::zeros({10});
    adamw_device(hp, m, v, at::zeros({10}, opts), w, h, {}, stream);
  });
  const std::string short_grad = message([&] { adamw_device(p, m, v, at::zeros({9}, opts), w, h, {}, stream); });
  const std::string int_grad =
      message([&] { adamw_device(p, m, v, at::zeros({10}, opts.dtype(at::kInt)), w, h, {}, stream); });
  const std::string overlap = message(
      [&] { adamw_device(p, m, v, at::zeros({10}, opts), w, h, {{0, 4}, {3, 6}}, stream); });
  const std::string outside = message(
      [&] { adamw_device(p, m, v, at::zeros({10}, opts), w, h, {{8, 11}}, stream); });
  for (const std::string* s : {&cpu_master, &short_grad, &int_grad, &overlap, &outside})
    std::printf("error: %s\n", s->c_str());
  EXPECT_NE(cpu_master.find("tensor master is on cpu"), std::string::npos);
  EXPECT_NE(short_grad.find("tensor grad has 9 elements, not 10"), std::string::npos);
  EXPECT_NE(int_grad.find("tensor grad has dtype Int"), std::string::npos);
  EXPECT_NE(overlap.find("no-decay range 1 [3, 6)"), std::string::npos);
  EXPECT_NE(outside.find("no-decay range 0 [8, 11)"), std::string::npos);
  EXPECT_TRUE(at::equal(p.cpu(), at::zeros({10})));  // nothing ran
}
