#include "ops/moe/grouped_gemm.hpp"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "driver/arch.hpp"
#include "driver/tensor_map.hpp"
#include "ops/dispatch.hpp"
#include "ops/tensor_checks.hpp"

namespace kjit::ops {
namespace {

const TensorChecks kGemmCheck("moe grouped gemm");
constexpr std::int64_t kBlockK = 64;

void check_operand(const TensorView& t, const char* name, int ndim, const char* layout,
                   DType dtype) {
  kGemmCheck.strided(t, name, ndim, layout);
  if (t.dtype != dtype)
    kGemmCheck.fail(fmt::format("{} must be {}, got {}", name, dtype_name(dtype), t.describe()));
  kGemmCheck.aligned(t, name, 16);
}

// An FP4 format's K elements a scale byte covers.
std::int64_t scale_block(std::int64_t weights) {
  return moe::fp4_scale_block(weights == MoeGemm::kNvFp4 ? moe::Fp4Format::kNvFp4
                                                         : moe::Fp4Format::kMxFp4);
}

// FP4: bytes between two weight rows' scales in the kernel's shared memory, the row's K / block
// scale bytes rounded up to a whole number of words, and to an odd one, so that the 8 rows a warp
// reads at once fall in 8 banks.
std::int64_t fp4_scale_pitch(const MoeGemm::Problem& p) {
  const std::int64_t words = (p.k / scale_block(p.weights) + 3) / 4;
  return 4 * (words | 1);
}

// The operands' pointers, strides and sizes, shared by both layouts.
void set_operands(MoeGemm::Args& a, const MoeGemm::Problem& p, const TensorView& x,
                  std::int64_t x_row_stride, std::int64_t x_expert_stride,
                  const MoeGemm::Weights& weights, const TensorView& y, std::int64_t y_row_stride,
                  std::int64_t y_expert_stride) {
  const TensorView& w = weights.codes;
  a.x = x.data;
  a.w = w.data;
  a.y = y.data;
  a.x_row_stride = x_row_stride;
  a.x_expert_stride = x_expert_stride;
  a.w_expert_stride = w.stride(0);
  a.w_row_stride = w.stride(1);
  a.y_row_stride = y_row_stride;
  a.y_expert_stride = y_expert_stride;
  a.rows = static_cast<int>(p.rows);
  a.n = static_cast<int>(p.n);
  a.k = static_cast<int>(p.k);
  a.experts = static_cast<int>(p.experts);
  if (p.weights != MoeGemm::kSameAsX) {
    a.w_scales = static_cast<const unsigned char*>(weights.scales.data);
    a.scale_expert_stride = weights.scales.stride(0);
    a.scale_row_stride = weights.scales.stride(1);
    a.tensor_scale = static_cast<const float*>(weights.tensor_scale.data);
    a.tensor_scale_stride =
        weights.tensor_scale.numel() > 1 ? static_cast<int>(weights.tensor_scale.stride(0)) : 0;
    a.scale_pitch = static_cast<int>(fp4_scale_pitch(p));
  }
}

// The most pairs a contiguous layout of p.rows holds (moe::align_capacity inverted: each expert's
// first pair may open a block, every further block is full).
std::int64_t layout_pairs(const MoeGemm::Problem& p) {
  const std::int64_t blocks = p.rows / p.block_m;
  return blocks <= p.experts ? blocks : p.experts + (blocks - p.experts) * p.block_m;
}

// The most pairs a contiguous layout holds in decode: a quarter of a block an expert, less one
// (classify's bound).
std::int64_t decode_pairs(const MoeGemm::Problem& p) {
  return (p.experts * p.block_m + 3) / 4 - 1;
}

// The decode kernel's threads: two sets of 4 warps (decode 1) or one (decode 2).
std::int64_t decode_threads(const MoeGemm::Config& c) {
  return c.decode == 2 ? KJIT_MOE_DECODE_THREADS / 2 : KJIT_MOE_DECODE_THREADS;
}

// The non-persistent grid: a block per tile (columns, rows, the masked layout's experts).
Dim3 tile_grid(const MoeGemm::Config& c, const MoeGemm::Problem& p) {
  return {static_cast<unsigned>(p.n / c.block_n),
          static_cast<unsigned>((p.rows + p.block_m - 1) / p.block_m),
          static_cast<unsigned>(p.masked ? p.experts : 1)};
}

}  // namespace

void MoeGemm::check(const Problem& p) {
  if (p.dtype != DType::BFloat16 && p.dtype != DType::Float16)
    kGemmCheck.fail(fmt::format("x_sorted must be bf16 or fp16, got {}", dtype_name(p.dtype)));
  if (p.block_m != 64 && p.block_m != 128 && !(p.block_m == 256 && p.weights != kSameAsX)) {
    kGemmCheck.fail(fmt::format(
        "block (align's) must be 64 or 128 rows, or 256 with FP4 weights, got {}", p.block_m));
  }
  if (p.block_m == 256 && p.n % 128 != 0) {  // the kernel's 128 weight rows a block
    kGemmCheck.fail(
        fmt::format("blocks of 256 rows take N a multiple of 128 (FP4: 128 weight rows a block), "
                    "got N {}",
                    p.n));
  }
  if (p.rows < 0 || (!p.masked && p.rows % p.block_m != 0) || p.rows > (1ll << 31) - 1)
    kGemmCheck.fail(
        fmt::format("x_sorted's {} rows must be whole blocks of {}", p.rows, p.block_m));
  if ((p.rows + p.block_m - 1) / p.block_m > 65535) {  // the launch's y dimension
    kGemmCheck.fail(fmt::format("x's {} rows are more than 65535 blocks of {}", p.rows, p.block_m));
  }
  if (p.masked &&
      (p.experts > 65535 ||
       p.epilogue == static_cast<std::int64_t>(moe::GemmEpilogue::Kind::kRoutingWeights))) {
    kGemmCheck.fail(
        fmt::format("the masked layout takes at most 65535 experts (got {}) and no "
                    "routing-weight epilogue (apply the weights in the combine)",
                    p.experts));
  }
  if (p.k < kBlockK || p.k % kBlockK != 0 || p.k > (1ll << 31) - 1)
    kGemmCheck.fail(fmt::format("K must be a positive multiple of 64, got {}", p.k));
  if (p.n < 64 || p.n % 64 != 0 || p.n > (1ll << 31) - 1)
    kGemmCheck.fail(fmt::format("N must be a positive multiple of 64, got {}", p.n));
  if (p.experts < 1 || p.experts > (1ll << 31) - 1)
    kGemmCheck.fail(fmt::format("w must hold at least one expert, got {}", p.experts));
  if (p.epilogue < 0 || p.epilogue > 2)
    kGemmCheck.fail(fmt::format("unknown epilogue {}", p.epilogue));
  if (p.weights < kSameAsX || p.weights > kMxFp4)
    kGemmCheck.fail(fmt::format("unknown weight format {}", p.weights));
  if (p.decode != 0 && p.decode != 1)
    kGemmCheck.fail(fmt::format("decode must be 0 or 1, got {}", p.decode));
  if (p.weights != kSameAsX && p.dtype != DType::BFloat16) {
    kGemmCheck.fail(
        fmt::format("FP4 weights take bf16 activations (bf16 wgmma), got {}", dtype_name(p.dtype)));
  }
}

// Decode: experts holding a quarter of a block of rows or less (the pairs the layout's capacity
// is sized for, within a block, by moe::align_capacity's formula; or the masked layout's one
// block). From the exact rows: GLM-4.7-Flash at T k 256 (4288 rows of 64) shares the bucket of
// 8192 rows with T k 1024, and took the pipeline, 1.34-1.37x slower than the decode kernel at
// NVFP4 on the H100 (perf.md, bundle eed8fc6).
void MoeGemm::classify(Problem& p) {
  p.decode = p.masked ? p.rows <= p.block_m : layout_pairs(p) <= decode_pairs(p);
}

void MoeGemm::check_weights(Problem& p, const Weights& weights, std::int64_t experts) {
  const TensorView& w = weights.codes;
  const bool fp4 = weights.format != kSameAsX;
  const char* name = fp4 ? "w's codes" : "w";
  kGemmCheck.ndim(w, name, 3, fp4 ? "[E, N, K / 2]" : "[E, N, K]");
  p.experts = w.size(0);
  p.n = w.size(1);
  p.weights = weights.format;
  check(p);  // a card without wgmma: refused by the dispatch (no config runs)
  check_operand(w, name, 3, fp4 ? "[E, N, K / 2]" : "[E, N, K]", fp4 ? DType::UInt8 : p.dtype);
  const std::int64_t w_k = fp4 ? p.k / 2 : p.k;
  if (w.size(2) != w_k || (experts > 0 && w.size(0) != experts)) {
    kGemmCheck.fail(fmt::format("{} must be [{}, N, {}] (x's {}K{}), got {}", name,
                                experts > 0 ? std::to_string(experts) : "E", w_k,
                                experts > 0 ? "E and " : "", fp4 ? " / 2" : "", w.describe()));
  }
  if (!fp4) return;
  const std::int64_t block = scale_block(weights.format);
  const TensorView& scales = weights.scales;
  kGemmCheck.strided(scales, "w's scales", 3, "[E, N, K / block]");
  if (scales.dtype != DType::UInt8 || scales.size(0) != p.experts || scales.size(1) != p.n ||
      scales.size(2) != p.k / block) {
    kGemmCheck.fail(fmt::format("w's scales must be uint8 [{}, {}, {}] (E, N, K / {}), got {}",
                                p.experts, p.n, p.k / block, block, scales.describe()));
  }
  // A lane reads a k-block's scales of a row as one word: 4 bytes (NVFP4) or 2 (MXFP4).
  kGemmCheck.aligned(scales, "w's scales", static_cast<unsigned>(64 / block));
  if (weights.format != kNvFp4) return;
  // One per expert, or one for all: [1] or a scalar (torch.tensor(s), 0-d).
  const TensorView& tensor_scale = weights.tensor_scale;
  const bool one = tensor_scale.ndim <= 1 && tensor_scale.numel() == 1;
  const bool per_expert =
      tensor_scale.ndim == 1 && tensor_scale.size(0) == p.experts && tensor_scale.stride(0) >= 0;
  if (tensor_scale.data == nullptr || tensor_scale.dtype != DType::Float32 ||
      !(one || per_expert)) {
    kGemmCheck.fail(fmt::format(
        "NVFP4 w's tensor_scale must be fp32 [{}] (one per expert), [1] or a scalar, got {}",
        p.experts, tensor_scale.describe()));
  }
  kGemmCheck.aligned(tensor_scale, "w's tensor_scale", 4);
  kGemmCheck.data(tensor_scale, "w's tensor_scale");
}

unsigned MoeGemm::shared_bytes(const Config& c, const Problem& p) {
  // The decode kernel: 8 tokens' K (16-bit, rows 32 bytes apart beyond), its second set of
  // warps' sums (2 KB; kept, unused, with one set: the rings start past them) and its threads'
  // rings of `stages` slots.
  if (c.decode) {
    const std::int64_t slot =
        p.weights == kSameAsX ? KJIT_MOE_DECODE_16BIT_SLOT_BYTES : KJIT_MOE_DECODE_FP4_SLOT_BYTES;
    return static_cast<unsigned>(KJIT_MOE_DECODE_TOKENS * (2 * p.k + KJIT_MOE_DECODE_ROW_PAD) +
                                 KJIT_MOE_DECODE_SUM_BYTES + decode_threads(c) * c.stages * slot);
  }
  // 1024 bytes of slack to align the swizzled tiles, the stages' row and weight slices (FP4: half
  // a byte a weight), a full and an empty mbarrier a stage; FP4 also the block's scales for the
  // whole of K and their mbarrier.
  const bool fp4 = p.weights != kSameAsX;
  const std::int64_t weight_bytes = fp4 ? c.block_n * kBlockK / 2 : c.block_n * kBlockK * 2;
  const std::int64_t scales = fp4 ? c.block_n * fp4_scale_pitch(p) + 8 : 0;
  return static_cast<unsigned>(1024 + c.stages * (p.block_m * kBlockK * 2 + weight_bytes) + scales +
                               2 * c.stages * 8);
}

std::vector<MoeGemm::Config> MoeGemm::space(const Problem& p, const Arch& arch) {
  std::vector<Config> out;
  for (std::int64_t block_n : {64, 128, 256}) {
    for (std::int64_t stages = 2; stages <= 8; ++stages) {
      for (std::int64_t persistent : {0, 1}) {
        if (valid({block_n, stages, 0, persistent}, p, arch))
          out.push_back({block_n, stages, 0, persistent});
      }
    }
  }
  // The decode kernel where decode is what it is for (in prefill it would pass over the weights
  // once every 8 tokens).
  for (std::int64_t form : {1, 2}) {
    for (std::int64_t loads : {2, 4, 6}) {
      if (p.decode && valid({64, loads, form}, p, arch)) out.push_back({64, loads, form});
    }
  }
  return out;
}

bool MoeGemm::valid(const Config& c, const Problem& p, const Arch& arch) {
  const bool fits = shared_bytes(c, p) <= arch.max_shared_bytes();
  if (c.decode) {  // K in whole steps (FP4: of 128); sm_90a (FP4's bf16x2 multiply)
    return (c.decode == 1 || c.decode == 2) && c.persistent == 0 && arch.has_wgmma() &&
           p.block_m <= 128 && c.block_n == 64 && p.n % 64 == 0 &&
           p.k % (p.weights == kSameAsX ? 64 : 128) == 0 && c.stages >= 2 && c.stages <= 6 && fits;
  }
  // 256 columns: the 16-bit kernel's two consumers 128 columns each, the FP4 kernel's four 64.
  // Over 256 token rows (128 accumulators a consumer thread) the FP4 kernel's two consumers only.
  const bool columns =
      p.block_m == 256 ? c.block_n == 128 : c.block_n == 64 || c.block_n == 128 || c.block_n == 256;
  // Persistent: 16-bit weights, the tiles' count an int.
  const auto tiles_fit = [&] {
    const Dim3 tiles = tile_grid(c, p);
    return std::int64_t{tiles.x} * tiles.y * tiles.z <= std::numeric_limits<int>::max();
  };
  const bool persistent =
      c.persistent == 0 || (c.persistent == 1 && p.weights == kSameAsX && columns && tiles_fit());
  return arch.has_wgmma() && columns && persistent && p.n % c.block_n == 0 && c.stages >= 2 &&
         c.stages <= 8 && fits;
}

MoeGemm::Config MoeGemm::default_config(const Problem& p, const Arch& arch) {
  // 16-bit weights over more than 2^26 routed outputs (rows the layout holds pairs for, times N;
  // the rows are their bucket's, the next power of 2) take 256 columns: 4 stages, 3 past 2^27.
  // On the H100 (2026-12-06, bundles 2779003 and 507419f) that was 1.06x the 128 columns at GLM
  // gate/up over 16k rows and 1.19-1.36x at 64k rows and DeepGEMM's shape; below, the 128
  // columns were as fast or up to 9 % faster (GLM down over 16k rows: 222.7 against 224.9 us).
  // FP4 weights in prefill take 256 weight rows (four consumer warpgroups) past 2^25 outputs, 6
  // stages: on the H100 (2026-12-07, bundle 135bfe1 with the kernel as a host variant) 1.05x the
  // 128 rows at GLM gate/up and down over 16k rows (NVFP4 down: 251.2 against 261.5 us).
  const double outputs = static_cast<double>(p.masked ? p.rows * p.experts : layout_pairs(p)) *
                         static_cast<double>(p.n);
  const bool wide_fp4 = p.weights != kSameAsX && !p.decode && outputs > 0x1p25;
  if (p.n % 256 == 0 && (wide_fp4 || (p.weights == kSameAsX && outputs > 0x1p26))) {
    const Config wide =
        p.weights == kSameAsX ? Config{256, outputs > 0x1p27 ? 3 : 4} : Config{256, 6};
    if (valid(wide, p, arch)) return wide;
  }
  // Decode over the contiguous layout takes the decode kernel, 2 steps in flight a thread in its
  // ring. On the H100 (2026-12-07, bundle 00f19b5, `kjit_bench_moe_gemm decode`, GLM's gate/up
  // and down at T k 4 to 256) 2 steps were the fastest of 2, 4 and 6 for NVFP4 and MXFP4
  // (1.01-1.09x over 4; 6 leaves two blocks an SM), and with 16-bit weights 1.02-1.06x the
  // pipeline's default (gate/up at T k 64: 273.7 against 284.1 us, 97 % of the copy rate). The
  // masked layout's speed was not measured: it stays on the pipeline. FP4 weights with K under
  // 2048 (GLM's down: 12 steps of 128, 6 a set in two sets) take one set of warps over every
  // step: with padding rows left unwritten (2026-12-07, bundle e582e83) 1.05-1.08x at T k 16-256
  // (NVFP4 down at T k 64: 45.6 against 48.0 us), 0.87x at T k 4 (8.2 against 7.1 us); at K 2048
  // (gate/up) one set was 0.86-1.02x.
  if (!p.masked && p.decode) {
    const Config decode{64, 2, p.weights != kSameAsX && p.k < 2048 ? 2 : 1};
    if (valid(decode, p, arch)) return decode;
  }
  // Else 128 columns where N allows, and as many stages (up to 6) as shared memory holds; 64
  // columns where no stage count fits 128 (FP4's scales for a long K). FP4 in decode (p.decode)
  // takes 64 weight rows a block: twice the blocks, several an SM; but 128 over blocks of 256
  // rows, the only width they take.
  const bool narrow = p.n % 128 != 0 || (p.weights != kSameAsX && p.decode && p.block_m < 256);
  for (const std::int64_t block_n : {std::int64_t{narrow ? 64 : 128}, std::int64_t{64}}) {
    for (Config c{block_n, 6}; c.stages >= 2; --c.stages) {
      if (valid(c, p, arch)) return c;
    }
  }
  return {narrow ? 64 : 128, 6};  // none runs here: dispatch says so
}

KernelSpec MoeGemm::spec(const Config& c, const Problem& p, const Arch& arch) {
  const char* masked = p.masked ? "true" : "false";
  KernelSpec s =
      c.decode ? KernelSpec(
                     sources()[2],
                     {fmt::format("kjit::moe::moe_grouped_gemm_decode<{}, {}, {}, {}, {}, {}, {}>",
                                  cxx_type(p.dtype), p.weights, p.block_m, c.stages, p.epilogue,
                                  masked, decode_threads(c) / 128)})
      : p.weights == kSameAsX
          ? KernelSpec(sources()[0],
                       {fmt::format("kjit::moe::moe_grouped_gemm<{}, {}, {}, {}, {}, {}, {}>",
                                    cxx_type(p.dtype), p.block_m, c.block_n, c.stages, p.epilogue,
                                    masked, c.persistent ? "true" : "false")})
          : KernelSpec(sources()[1], {fmt::format("kjit::moe::moe_grouped_gemm_fp4<{}, "
                                                  "{}, {}, {}, {}, {}>",
                                                  p.weights, p.block_m, c.block_n, c.stages,
                                                  p.epilogue, masked)});
  s.arch = arch.name();
  return s;
}

void MoeGemm::launch(const Program& program, const Config& c, const Problem& p,
                     const Args& call_args, StreamHandle stream) {
  if (p.rows == 0) return;
  Dim3 grid = tile_grid(c, p);
  if (c.persistent) {  // one block an SM (the kernel's launch bounds), over every tile
    const std::int64_t tiles = std::int64_t{grid.x} * grid.y * grid.z;
    grid = {static_cast<unsigned>(std::min<std::int64_t>(tiles, arch::current_multiprocessors())),
            1, 1};
  }
  if (c.decode) {  // plain loads: no tensor maps
    program.kernel().launch(
        {grid, {static_cast<unsigned>(decode_threads(c))}, shared_bytes(c, p), stream, {}},
        call_args);
    return;
  }
  Args args = call_args;
  const auto u = [](std::int64_t v) { return static_cast<std::uint64_t>(v); };
  // x: [rows, k], or [experts, rows, k] masked (the expert the third coordinate).
  args.x_map =
      driver::tiled_map_16bit(args.x, {u(p.k), u(p.rows), u(p.masked ? p.experts : 1), 1},
                              {args.x_row_stride, args.x_expert_stride, args.x_expert_stride},
                              {64, static_cast<std::uint32_t>(p.block_m), 1, 1});
  const std::array<std::int64_t, 3> w_strides{args.w_row_stride, args.w_expert_stride,
                                              args.w_expert_stride};
  const auto block_n = static_cast<std::uint32_t>(c.block_n);
  const bool fp4 = p.weights != kSameAsX;
  // FP4: 32 code bytes (64 K) of block_n weight rows a stage, which the consumers split.
  // w's own experts (args.experts): fewer than p.experts when the weights are cache slots.
  args.w_map = fp4 ? driver::tiled_map_bytes(args.w, {u(p.k / 2), u(p.n), u(args.experts), 1},
                                             w_strides, {32, block_n, 1, 1})
                   : driver::tiled_map_16bit(args.w, {u(p.k), u(p.n), u(args.experts), 1},
                                             w_strides, {64, block_n, 1, 1});
  const std::int64_t consumers = (fp4 ? c.block_n : p.block_m) / 64;
  program.kernel().launch(
      {grid, {static_cast<unsigned>(128 * (1 + consumers))}, shared_bytes(c, p), stream, {}}, args);
}

std::vector<MoeGemm::Problem> MoeGemm::shipped(const Arch& arch) {
  if (!arch.has_wgmma()) return {};  // no mma.sync path yet
  const auto swiglu = static_cast<std::int64_t>(moe::GemmEpilogue::Kind::kSwiGLU),
             weighted = static_cast<std::int64_t>(moe::GemmEpilogue::Kind::kRoutingWeights);
  const std::int64_t t16384 = moe::align_capacity(16384 * 4, 64, 256);
  std::vector<Problem> out{{DType::BFloat16, 128, 3072, 2048, 64, 128, swiglu},
                           {DType::BFloat16, 128, 2048, 1536, 64, 128, weighted},
                           {DType::BFloat16, 128, 2048, 1536, 64, 128, 0},
                           {DType::BFloat16, 64, 3072, 2048, 64, 64, swiglu, 1},
                           {DType::BFloat16, 64, 2048, 1536, 64, 64, 0, 1},
                           {DType::BFloat16, 64, 3072, 2048, 64, 64, swiglu, 0, kNvFp4},
                           {DType::BFloat16, 64, 2048, 1536, 64, 64, weighted, 0, kNvFp4},
                           // FP4 prefill over 256 token rows (the layer's T 16384)
                           {DType::BFloat16, t16384, 3072, 2048, 64, 256, swiglu, 0, kNvFp4},
                           {DType::BFloat16, t16384, 2048, 1536, 64, 256, weighted, 0, kNvFp4}};
  for (Problem& p : out)
    classify(p);
  return out;
}

int MoeGemm::layout_block(std::int64_t pairs, std::int64_t experts, std::int64_t hidden,
                          std::int64_t inter, std::int64_t gate_up, std::int64_t down) {
  if (pairs <= 64 * experts) return 64;
  const bool wide = pairs >= 1024 * experts && takes_256_rows(gate_up, 2 * inter, hidden) &&
                    takes_256_rows(down, hidden, inter);
  return wide ? 256 : 128;
}

bool MoeGemm::takes_256_rows(std::int64_t weights, std::int64_t n, std::int64_t k) {
  static const Arch sm90a("sm_90a");  // the FP4 kernel's only arch
  const Problem p{DType::BFloat16, 256, n, k, 1, 256, 0, 0, weights};
  return weights != kSameAsX && valid({128, 2}, p, sm90a);  // valid: N a multiple of 128
}

std::int64_t MoeGemm::y_columns(const Problem& p) {
  return p.epilogue == static_cast<std::int64_t>(moe::GemmEpilogue::Kind::kSwiGLU) ? p.n / 2 : p.n;
}

std::vector<TensorSpec> MoeGemm::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  const std::int64_t y_cols = y_columns(p);
  const auto experts = static_cast<float>(p.experts), rows = static_cast<float>(p.rows);
  // FP4: random codes, scales near 1 (E4M3 0.25 to 1, E8M0 2^-4 to 2^0), a tensor scale near
  // 1/100; after the layout's tensors.
  const TensorSpec w =
      p.weights == kSameAsX
          ? TensorSpec{"w", p.dtype, {p.experts, p.n, p.k}, Role::Input, -0.1f, 0.1f}
          : TensorSpec{"w", DType::UInt8, {p.experts, p.n, p.k / 2}, Role::Input, 0.f, 256.f};
  std::vector<TensorSpec> t;
  if (p.masked) {  // every expert holding all its rows, so that every config's y is compared
    TensorSpec masked_m{"masked_m", DType::Int32, {p.experts}, Role::Input};
    masked_m.value = [rows](std::int64_t) { return rows; };
    t = {{"x", p.dtype, {p.experts, p.rows, p.k}, Role::Input, -0.1f, 0.1f},
         masked_m,
         w,
         {"y", p.dtype, {p.experts, p.rows, y_cols}, Role::Output}};
  } else {
    // As align and permute leave a layout of this size: the first `held` rows of each block hold
    // pairs (row r pair r, a weight a row), as many as the layout's size implies (decode: one or a
    // few; prefill: most), the rest padding (pair `rows`, none) with rows of zeros in x_sorted, so
    // that a kernel that skips the padding rows writes what one that multiplies them does. A
    // decode problem whose rows are a bucket's (a stored shape, the miss log's: 8192 rows hold
    // up to 4160 pairs) holds at most decode_pairs.
    const std::int64_t blocks = std::max<std::int64_t>(p.rows / p.block_m, 1),
                       pairs =
                           p.decode ? std::min(layout_pairs(p), decode_pairs(p)) : layout_pairs(p),
                       held = std::clamp<std::int64_t>((pairs + blocks - 1) / blocks, 1, p.block_m);
    const auto holds_pair = [held, block = p.block_m](std::int64_t row) {
      return row % block < held;
    };
    TensorSpec x{"x_sorted", p.dtype, {p.rows, p.k}, Role::Input};
    x.value = [holds_pair, k = p.k](std::int64_t i) {  // a fixed hash in [-0.1, 0.1]
      const auto h = static_cast<std::uint32_t>(i) * 2654435761u >> 16;
      return holds_pair(i / k) ? static_cast<float>(h % 2001) / 10000.f - 0.1f : 0.f;
    };
    TensorSpec sorted{"sorted", DType::Int32, {p.rows}, Role::Input};
    sorted.value = [holds_pair, rows](std::int64_t row) {
      return holds_pair(row) ? static_cast<float>(row) : rows;
    };
    t = {x,      {"block_expert", DType::Int32, {p.rows / p.block_m}, Role::Input, 0.f, experts},
         w,      {"y", p.dtype, {p.rows, y_cols}, Role::Output},
         sorted, {"weights", DType::Float32, {p.rows, 1}, Role::Input, 0.f, 1.f}};
  }
  if (p.weights != kSameAsX) {
    const bool nvfp4 = p.weights == kNvFp4;
    t.push_back({"scales",
                 DType::UInt8,
                 {p.experts, p.n, p.k / scale_block(p.weights)},
                 Role::Input,
                 nvfp4 ? 40.f : 123.f,
                 nvfp4 ? 57.f : 128.f});
    t.push_back({"tensor_scale", DType::Float32, {p.experts}, Role::Input, 0.005f, 0.02f});
  }
  return t;
}

MoeGemm::Args MoeGemm::args(const Problem& p, const std::vector<TensorView>& t) {
  const auto kind = static_cast<moe::GemmEpilogue::Kind>(p.epilogue);
  Weights w(t.at(2));
  if (p.weights != kSameAsX) {
    w.format = p.weights;
    w.scales = t.at(t.size() - 2);
    w.tensor_scale = t.back();
  }
  if (p.masked)
    return validate_masked(t.at(0), t.at(1), p.block_m == 64 ? 64 : 0, w, t.at(3), kind).args;
  // align's sorted with every epilogue, as the layer passes it (the FP4 kernels then multiply
  // a block's held rows only).
  moe::GemmEpilogue epilogue;
  epilogue.kind = kind;
  epilogue.sorted = t.at(4);
  epilogue.weights = t.at(5);
  return validate(t.at(0), t.at(1), static_cast<int>(p.block_m), w, t.at(3), epilogue).args;
}

std::vector<Preset<MoeGemm::Problem>> MoeGemm::presets() {
  Preset<Problem> glm{"glm-4.7-flash-moe-gemm", {}}, decode{"glm-4.7-flash-moe-decode", {}},
      nvfp4{"glm-4.7-flash-moe-gemm-nvfp4", {}};
  const auto swiglu = static_cast<std::int64_t>(moe::GemmEpilogue::Kind::kSwiGLU),
             weighted = static_cast<std::int64_t>(moe::GemmEpilogue::Kind::kRoutingWeights);
  for (std::int64_t t : {256, 1024, 4096, 16384}) {
    const std::int64_t rows = moe::align_capacity(t * 4, 64, 128);
    glm.problems.push_back({DType::BFloat16, rows, 3072, 2048, 64, 128, swiglu});
    glm.problems.push_back({DType::BFloat16, rows, 2048, 1536, 64, 128, weighted});
  }
  // NVFP4 weights, decode (T 1: 4 blocks; T 64: 64 + 3 blocks) to prefill, in the layer's blocks
  // (256 rows at T 16384).
  for (std::int64_t t : {1, 64, 1024, 4096, 16384}) {
    const int block = layout_block(t * 4, 64, 2048, 1536, kNvFp4, kNvFp4);
    const std::int64_t rows = moe::align_capacity(t * 4, 64, block);
    nvfp4.problems.push_back({DType::BFloat16, rows, 3072, 2048, 64, block, swiglu, 0, kNvFp4});
    nvfp4.problems.push_back({DType::BFloat16, rows, 2048, 1536, 64, block, weighted, 0, kNvFp4});
  }
  // Decode, masked: up to 64 rows an expert (T k / E of a few), gate/up with SwiGLU and down.
  for (std::int64_t m : {16, 64}) {
    decode.problems.push_back({DType::BFloat16, m, 3072, 2048, 64, 64, swiglu, 1});
    decode.problems.push_back({DType::BFloat16, m, 2048, 1536, 64, 64, 0, 1});
  }
  for (Preset<Problem>* preset : {&glm, &decode, &nvfp4}) {
    for (Problem& p : preset->problems)
      classify(p);
  }
  return {glm, decode, nvfp4};
}

void MoeGemm::choose_for_layout(Call<MoeGemm>& call, std::int64_t layout_experts) {
  if (call.problem.masked)
    kGemmCheck.fail("the masked layout's experts are its weights': no other count to choose for");
  if (layout_experts < call.problem.experts) {
    kGemmCheck.fail(fmt::format("a layout of {} experts over weights of {}", layout_experts,
                                call.problem.experts));
  }
  call.problem.experts = layout_experts;  // the kernel keeps w's count in call.args.experts
  classify(call.problem);
}

Call<MoeGemm> MoeGemm::validate(const TensorView& x_sorted, const TensorView& block_expert,
                                int block, const Weights& w, const TensorView& y,
                                const moe::GemmEpilogue& epilogue) {
  check_operand(x_sorted, "x_sorted", 2, "[rows, K]", x_sorted.dtype);
  Call<MoeGemm> call{};
  Problem& p = call.problem;
  p.dtype = x_sorted.dtype;
  p.rows = x_sorted.size(0);
  p.k = x_sorted.size(1);
  p.block_m = block;
  p.epilogue = static_cast<std::int64_t>(epilogue.kind);
  check_weights(p, w, 0);
  classify(p);
  const std::int64_t y_cols = y_columns(p);
  check_operand(y, "y", 2, "[rows, N]", p.dtype);
  if (y.size(0) != p.rows || y.size(1) != y_cols) {
    kGemmCheck.fail(fmt::format("y must be [{}, {}] (rows, N{}), got {}", p.rows, y_cols,
                                y_cols != p.n ? " / 2 after SwiGLU" : "", y.describe()));
  }
  kGemmCheck.vector(block_expert, "block_expert", DType::Int32, p.rows / p.block_m);
  std::int64_t pairs = 0;
  // The routing weights' operands, also taken with the other epilogues (the FP4 and decode
  // kernels then compute a block's pairs only).
  if (epilogue.kind == moe::GemmEpilogue::Kind::kRoutingWeights || epilogue.sorted.data) {
    const TensorView &sorted = epilogue.sorted, &weights = epilogue.weights;
    kGemmCheck.vector(sorted, "the epilogue's sorted", DType::Int32, p.rows);
    if (weights.ndim == 0) {
      kGemmCheck.fail(
          "the epilogue's sorted given without weights (their element count, T k, tells align's "
          "padding rows apart)");
    }
    kGemmCheck.ndim(weights, "weights", 2, "[T, k]");
    kGemmCheck.data(weights, "weights");
    pairs = weights.numel();
    if (weights.dtype != DType::Float32 || pairs > (1ll << 31) - 1 ||
        (pairs > 1 && (weights.stride(1) != 1 || weights.stride(0) != weights.size(1)))) {
      kGemmCheck.fail(fmt::format("the epilogue's weights must be contiguous fp32 [T, k], got {}",
                                  weights.describe()));
    }
  }
  // x's and y's "expert" stride: one dim of size 1 in the contiguous layout.
  Args& a = call.args;
  set_operands(a, p, x_sorted, x_sorted.stride(0), x_sorted.stride(0), w, y, y.stride(0), 0);
  a.block_expert = static_cast<const int*>(block_expert.data);
  a.sorted = static_cast<const int*>(epilogue.sorted.data);
  a.pair_weights = static_cast<const float*>(epilogue.weights.data);
  a.pairs = static_cast<int>(pairs);
  a.zero_padding = epilogue.zero_padding ? 1 : 0;
  return call;
}

Call<MoeGemm> MoeGemm::validate_masked(const TensorView& x, const TensorView& masked_m,
                                       int expected_m, const Weights& w, const TensorView& y,
                                       moe::GemmEpilogue::Kind epilogue) {
  check_operand(x, "x", 3, "[E, M, K]", x.dtype);
  Call<MoeGemm> call{};
  Problem& p = call.problem;
  p.dtype = x.dtype;
  p.experts = x.size(0);
  p.rows = x.size(1);
  p.k = x.size(2);
  p.masked = 1;
  p.epilogue = static_cast<std::int64_t>(epilogue);
  // The block of rows from the rows an expert typically holds (decode: a few).
  p.block_m = expected_m > 0 && expected_m <= 64 ? 64 : 128;
  check_weights(p, w, p.experts);
  classify(p);
  const std::int64_t y_cols = y_columns(p);
  check_operand(y, "y", 3, "[E, M, N]", p.dtype);
  if (y.size(0) != p.experts || y.size(1) != p.rows || y.size(2) != y_cols) {
    kGemmCheck.fail(fmt::format("y must be [{}, {}, {}] (E, M, N{}), got {}", p.experts, p.rows,
                                y_cols, y_cols != p.n ? " / 2 after SwiGLU" : "", y.describe()));
  }
  kGemmCheck.vector(masked_m, "masked_m", DType::Int32, p.experts);
  Args& a = call.args;
  set_operands(a, p, x, x.stride(1), x.stride(0), w, y, y.stride(1), y.stride(0));
  a.masked_m = static_cast<const int*>(masked_m.data);
  return call;
}

void run_unless_empty(const Call<MoeGemm>& call, StreamHandle stream) {
  if (call.problem.rows > 0) run(call, stream);
}

}  // namespace kjit::ops

namespace kjit::moe {

using ops::run_unless_empty;

void grouped_gemm(const TensorView& x_sorted, const TensorView& block_expert, int block,
                  const TensorView& w, const TensorView& y, const GemmEpilogue& epilogue,
                  StreamHandle stream) {
  run_unless_empty(ops::MoeGemm::validate(x_sorted, block_expert, block, w, y, epilogue), stream);
}

void grouped_gemm(const TensorView& x_sorted, const TensorView& block_expert, int block,
                  const Fp4Weights& w, const TensorView& y, const GemmEpilogue& epilogue,
                  StreamHandle stream) {
  run_unless_empty(ops::MoeGemm::validate(x_sorted, block_expert, block, w, y, epilogue), stream);
}

void grouped_gemm_masked(const TensorView& x, const TensorView& masked_m, int expected_m,
                         const TensorView& w, const TensorView& y, GemmEpilogue::Kind epilogue,
                         StreamHandle stream) {
  run_unless_empty(ops::MoeGemm::validate_masked(x, masked_m, expected_m, w, y, epilogue), stream);
}

void grouped_gemm_masked(const TensorView& x, const TensorView& masked_m, int expected_m,
                         const Fp4Weights& w, const TensorView& y, GemmEpilogue::Kind epilogue,
                         StreamHandle stream) {
  run_unless_empty(ops::MoeGemm::validate_masked(x, masked_m, expected_m, w, y, epilogue), stream);
}

}  // namespace kjit::moe
