#include "ops/moe/quantize_fp4.hpp"

#include <fmt/format.h>

#include "driver/stream_allocation.hpp"
#include "ops/dispatch.hpp"
#include "ops/tensor_checks.hpp"

namespace kjit::ops {
namespace {

const TensorChecks kQuantizeCheck("moe quantize fp4");

bool nvfp4(const MoeQuantizeFp4::Problem& p) {
  return p.block == 16;
}

}  // namespace

void MoeQuantizeFp4::check(const Problem& p) {
  if (p.dtype != DType::BFloat16 && p.dtype != DType::Float16)
    kQuantizeCheck.fail(fmt::format("w must be bf16 or fp16, got {}", dtype_name(p.dtype)));
  if (p.block != 16 && p.block != 32)
    kQuantizeCheck.fail(fmt::format("block must be 16 (NVFP4) or 32 (MXFP4), got {}", p.block));
  if (p.rows < 0 || p.cols < 0 || p.cols % p.block != 0) {
    kQuantizeCheck.fail(fmt::format("w's {} columns must be whole blocks of {} ({})", p.cols,
                                    p.block, nvfp4(p) ? "NVFP4" : "MXFP4"));
  }
  if (p.rows > (1ll << 31) - 1 || p.cols > (1ll << 31) - 1)
    kQuantizeCheck.fail(fmt::format("w's {} x {}: at most 2^31 - 1 each", p.rows, p.cols));
}

KernelSpec MoeQuantizeFp4::spec(const Config&, const Problem& p, const Arch& arch) {
  const char* t = cxx_type(p.dtype);
  std::vector<std::string> names{fmt::format("kjit::moe::moe_fp4_quantize<{}, {}>", t, p.block)};
  if (nvfp4(p)) names.push_back(fmt::format("kjit::moe::moe_fp4_amax<{}>", t));
  KernelSpec s(sources()[0], names);
  s.arch = arch.name();
  return s;
}

void MoeQuantizeFp4::launch(const Program& program, const Config& c, const Problem& p,
                            const Args& call_args, StreamHandle stream) {
  Args args = call_args;
  driver::StreamAllocation amax(nvfp4(p) ? 4 : 0, stream);
  args.amax = static_cast<float*>(amax.data());
  if (nvfp4(p)) program.kernel_at(1).launch({{1}, {1024}, 0, stream, {}}, args);
  // At least one block, so that the tensor scale is written for an empty tensor too.
  const std::int64_t blocks = std::max<std::int64_t>(1, p.rows * (p.cols / p.block));
  program.kernel_at(0).launch({{static_cast<unsigned>((blocks + c.threads - 1) / c.threads)},
                               {static_cast<unsigned>(c.threads)},
                               0,
                               stream,
                               {}},
                              args);
}

std::vector<MoeQuantizeFp4::Problem> MoeQuantizeFp4::shipped(const Arch&) {
  return {{DType::BFloat16, 1, 2048, 16}, {DType::BFloat16, 1, 2048, 32}};
}

std::vector<TensorSpec> MoeQuantizeFp4::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  return {{"w", p.dtype, {p.rows, p.cols}},
          {"codes", DType::UInt8, {p.rows, p.cols / 2}, Role::Scratch},
          {"scales", DType::UInt8, {p.rows, p.cols / p.block}, Role::Scratch},
          {"tensor_scale", DType::Float32, {1}, Role::Output}};
}

MoeQuantizeFp4::Args MoeQuantizeFp4::args(const Problem& p, const std::vector<TensorView>& t) {
  return validate(t.at(0), nvfp4(p) ? moe::Fp4Format::kNvFp4 : moe::Fp4Format::kMxFp4, t.at(1),
                  t.at(2), t.at(3))
      .args;
}

std::vector<Preset<MoeQuantizeFp4::Problem>> MoeQuantizeFp4::presets() {
  Preset<Problem> glm{"glm-4.7-flash-quantize-fp4", {}};
  for (std::int64_t block : {16, 32}) {
    glm.problems.push_back({DType::BFloat16, 64 * 3072, 2048, block});
    glm.problems.push_back({DType::BFloat16, 64 * 2048, 1536, block});
  }
  return {glm};
}

Call<MoeQuantizeFp4> MoeQuantizeFp4::validate(const TensorView& w, moe::Fp4Format format,
                                              const TensorView& codes, const TensorView& scales,
                                              const TensorView& tensor_scale) {
  kQuantizeCheck.ndim(w, "w", 2, "[rows, cols]");
  Call<MoeQuantizeFp4> call{};
  Problem& p = call.problem;
  p = {w.dtype, w.size(0), w.size(1), moe::fp4_scale_block(format)};
  check(p);
  kQuantizeCheck.matrix(w, "w", "[rows, cols]", p.dtype, p.rows, p.cols);
  kQuantizeCheck.matrix(codes, "codes", "[rows, cols]", DType::UInt8, p.rows, p.cols / 2);
  kQuantizeCheck.matrix(scales, "scales", "[rows, cols]", DType::UInt8, p.rows, p.cols / p.block);
  kQuantizeCheck.vector(tensor_scale, "tensor_scale", DType::Float32, 1);
  Args& a = call.args;
  a.w = w.data;
  a.codes = static_cast<unsigned char*>(codes.data);
  a.scales = static_cast<unsigned char*>(scales.data);
  a.tensor_scale = static_cast<float*>(tensor_scale.data);
  a.w_stride = w.stride(0);
  a.codes_stride = codes.stride(0);
  a.scales_stride = scales.stride(0);
  a.rows = static_cast<int>(p.rows);
  a.cols = static_cast<int>(p.cols);
  return call;
}

}  // namespace kjit::ops

namespace kjit::moe {

void quantize_fp4(const TensorView& w, Fp4Format format, const TensorView& codes,
                  const TensorView& scales, const TensorView& tensor_scale, StreamHandle stream) {
  ops::run(ops::MoeQuantizeFp4::validate(w, format, codes, scales, tensor_scale), stream);
}

}  // namespace kjit::moe
