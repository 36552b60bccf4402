// The C ABI (kjit/c_api.h): exceptions become status codes and a per-thread message.
#include "kjit/c_api.h"

#include <array>
#include <chrono>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "kjit/attention.hpp"
#include "kjit/comm.hpp"
#include "kjit/device.hpp"
#include "kjit/error.hpp"
#include "kjit/merge_states.hpp"
#include "kjit/mla.hpp"
#include "kjit/moe.hpp"
#include "kjit/tensor.hpp"

namespace {

thread_local std::string g_last_error;

template <class F>
kjit_status guarded(F&& body) {
  try {
    body();
    g_last_error.clear();
    return KJIT_SUCCESS;
  } catch (const kjit::InvalidArgument& e) {
    g_last_error = e.what();
    return KJIT_ERROR_INVALID_ARGUMENT;
  } catch (const kjit::NoDriverError& e) {
    g_last_error = e.what();
    return KJIT_ERROR_NO_DRIVER;
  } catch (const kjit::DriverError& e) {
    g_last_error = e.what();
    return KJIT_ERROR_DRIVER;
  } catch (const kjit::CompileError& e) {
    g_last_error = e.what();
    return KJIT_ERROR_COMPILE;
  } catch (const kjit::MissingKernelError& e) {
    g_last_error = e.what();
    return KJIT_ERROR_MISSING_KERNEL;
  } catch (const kjit::comm::CommError& e) {
    g_last_error = e.what();
    return KJIT_ERROR_COMM;
  } catch (const std::exception& e) {
    g_last_error = e.what();
    return KJIT_ERROR_INTERNAL;
  } catch (...) {
    g_last_error = "unknown error";
    return KJIT_ERROR_INTERNAL;
  }
}

const DLTensor& required(const DLTensor* t, const char* name) {
  if (!t) throw kjit::InvalidArgument(std::string(name) + " is NULL");
  return *t;
}

kjit::TensorView view(const DLTensor* t, const char* name) {
  return kjit::TensorView::from_dlpack(required(t, name), name);
}

// An optional output: NULL becomes an empty view (the op then skips it).
kjit::TensorView optional_view(const DLTensor* t, const char* name) {
  return t ? kjit::TensorView::from_dlpack(*t, name) : kjit::TensorView();
}

// Converts the tensor arguments in the prototype's order before the op runs, so that the first
// bad one (device, dtype) is the one named: a call's own arguments are converted in an
// unspecified order (GCC's is right to left), which named an output that a binding allocated
// like the caller's bad input before the input itself. `names`: one word a tensor. NULL is left
// to view() and the op.
void convert_in_order(std::string_view names, std::initializer_list<const DLTensor*> tensors) {
  for (const DLTensor* t : tensors) {
    const std::size_t end = names.find(' ');
    const std::string name(names.substr(0, end));
    names.remove_prefix(end == std::string_view::npos ? names.size() : end + 1);
    if (t) kjit::TensorView::from_dlpack(*t, name.c_str());
  }
}

kjit::attention::ForwardOptions options(float softmax_scale, int causal) {
  kjit::attention::ForwardOptions o;
  o.softmax_scale = softmax_scale;
  o.causal = causal != 0;
  return o;
}

kjit::moe::GemmEpilogue epilogue_of(kjit_moe_gemm_epilogue kind, const DLTensor* sorted,
                                    const DLTensor* weights) {
  using Kind = kjit::moe::GemmEpilogue::Kind;
  kjit::moe::GemmEpilogue e;
  e.kind = static_cast<Kind>(kind);  // an unknown one: refused by the op's checks
  if (e.kind == Kind::kRoutingWeights || sorted) {
    e.sorted = view(sorted, "sorted");
    e.weights = optional_view(weights, "weights");  // missing: refused by the op's checks
  }
  return e;
}

kjit::moe::Fp4Format fp4_format(int format, const char* op) {
  if (format != 0 && format != 1) {
    throw kjit::InvalidArgument(
        fmt::format("{}: format must be 0 (NVFP4) or 1 (MXFP4), got {}", op, format));
  }
  return format == 0 ? kjit::moe::Fp4Format::kNvFp4 : kjit::moe::Fp4Format::kMxFp4;
}

kjit::moe::RouterOptions router_options(const kjit_moe_router_options* options) {
  if (!options) throw kjit::InvalidArgument("options is NULL");
  return {options->sigmoid != 0,     options->top_k,  options->groups, options->topk_groups,
          options->renormalize != 0, options->scaling};
}

// names: the arguments' names in errors (the layer's name each projection's).
kjit::moe::Fp4Weights fp4_weights(int format, const DLTensor* codes, const DLTensor* scales,
                                  const DLTensor* tensor_scale,
                                  const std::array<const char*, 3>& names = {"codes", "scales",
                                                                             "tensor_scale"}) {
  kjit::moe::Fp4Weights w;
  w.format = fp4_format(format, "moe expert gemm fp4");
  w.codes = view(codes, names[0]);
  w.scales = view(scales, names[1]);
  w.tensor_scale = optional_view(tensor_scale, names[2]);
  return w;
}

}  // namespace

extern "C" const char* kjit_last_error(void) {
  return g_last_error.c_str();
}

struct kjit_buffer {
  kjit::DeviceBuffer memory;
};

extern "C" kjit_status kjit_buffer_create(size_t bytes, kjit_buffer** buffer) {
  return guarded([&] {
    if (!buffer) throw kjit::InvalidArgument("buffer is NULL");
    *buffer = nullptr;
    *buffer = new kjit_buffer{kjit::DeviceBuffer(bytes)};
  });
}

extern "C" void kjit_buffer_destroy(kjit_buffer* buffer) {
  delete buffer;
}

extern "C" void* kjit_buffer_data(const kjit_buffer* buffer) {
  return buffer ? buffer->memory.data() : nullptr;
}

namespace {
template <class Buffer>
Buffer& buffer_of(Buffer* buffer) {
  if (!buffer) throw kjit::InvalidArgument("buffer is NULL");
  return *buffer;
}
}  // namespace

extern "C" kjit_status kjit_buffer_upload(kjit_buffer* buffer, const void* host, size_t bytes) {
  return guarded([&] { buffer_of(buffer).memory.upload(host, bytes); });
}

extern "C" kjit_status kjit_buffer_download(const kjit_buffer* buffer, void* host, size_t bytes) {
  return guarded([&] { buffer_of(buffer).memory.download(host, bytes); });
}

extern "C" kjit_status kjit_stream_synchronize(void* stream) {
  return guarded([&] { kjit::synchronize(static_cast<kjit::StreamHandle>(stream)); });
}

extern "C" kjit_status kjit_merge_states(const DLTensor* parts, const DLTensor* parts_lse,
                                         const DLTensor* out, const DLTensor* out_lse,
                                         void* stream) {
  return guarded([&] {
    convert_in_order("parts parts_lse out out_lse", {parts, parts_lse, out, out_lse});
    kjit::attention::merge_states(view(parts, "parts"), view(parts_lse, "parts_lse"),
                                  view(out, "out"), optional_view(out_lse, "out_lse"),
                                  static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_attention_forward(const DLTensor* q, const DLTensor* k,
                                              const DLTensor* v, const DLTensor* out,
                                              const DLTensor* lse, float softmax_scale, int causal,
                                              void* stream) {
  return guarded([&] {
    convert_in_order("q k v out lse", {q, k, v, out, lse});
    kjit::attention::forward(view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"),
                             optional_view(lse, "lse"), options(softmax_scale, causal),
                             static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_attention_forward_varlen(
    const DLTensor* q, const DLTensor* k, const DLTensor* v, const DLTensor* out,
    const DLTensor* lse, const DLTensor* cu_seqlens_q, const DLTensor* cu_seqlens_k,
    const int32_t* host_cu_seqlens_q, const int32_t* host_cu_seqlens_k, float softmax_scale,
    int causal, void* stream) {
  return guarded([&] {
    convert_in_order("q k v out lse cu_seqlens_q cu_seqlens_k",
                     {q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k});
    const kjit::attention::Varlen seqlens{view(cu_seqlens_q, "cu_seqlens_q"),
                                          view(cu_seqlens_k, "cu_seqlens_k"), host_cu_seqlens_q,
                                          host_cu_seqlens_k};
    kjit::attention::forward_varlen(
        view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), optional_view(lse, "lse"),
        seqlens, options(softmax_scale, causal), static_cast<kjit::StreamHandle>(stream));
  });
}

namespace {

kjit::attention::BackwardOptions backward_options(float softmax_scale, int causal,
                                                  int deterministic, void* workspace,
                                                  size_t workspace_bytes) {
  kjit::attention::BackwardOptions o;
  o.softmax_scale = softmax_scale;
  o.causal = causal != 0;
  o.deterministic = deterministic != 0;
  o.workspace = workspace;
  o.workspace_bytes = workspace_bytes;
  return o;
}

}  // namespace

extern "C" kjit_status kjit_attention_backward(const DLTensor* q, const DLTensor* k,
                                               const DLTensor* v, const DLTensor* out,
                                               const DLTensor* dout, const DLTensor* lse,
                                               const DLTensor* dq, const DLTensor* dk,
                                               const DLTensor* dv, float softmax_scale, int causal,
                                               int deterministic, void* workspace,
                                               size_t workspace_bytes, void* stream) {
  return guarded([&] {
    convert_in_order("q k v out dout lse dq dk dv", {q, k, v, out, dout, lse, dq, dk, dv});
    kjit::attention::backward(
        view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), view(dout, "dout"),
        view(lse, "lse"), view(dq, "dq"), view(dk, "dk"), view(dv, "dv"),
        backward_options(softmax_scale, causal, deterministic, workspace, workspace_bytes),
        static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_attention_backward_varlen(
    const DLTensor* q, const DLTensor* k, const DLTensor* v, const DLTensor* out,
    const DLTensor* dout, const DLTensor* lse, const DLTensor* dq, const DLTensor* dk,
    const DLTensor* dv, const DLTensor* cu_seqlens_q, const DLTensor* cu_seqlens_k,
    const int32_t* host_cu_seqlens_q, const int32_t* host_cu_seqlens_k, float softmax_scale,
    int causal, int deterministic, void* workspace, size_t workspace_bytes, void* stream) {
  return guarded([&] {
    convert_in_order("q k v out dout lse dq dk dv cu_seqlens_q cu_seqlens_k",
                     {q, k, v, out, dout, lse, dq, dk, dv, cu_seqlens_q, cu_seqlens_k});
    const kjit::attention::Varlen seqlens{view(cu_seqlens_q, "cu_seqlens_q"),
                                          view(cu_seqlens_k, "cu_seqlens_k"), host_cu_seqlens_q,
                                          host_cu_seqlens_k};
    kjit::attention::backward_varlen(
        view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), view(dout, "dout"),
        view(lse, "lse"), view(dq, "dq"), view(dk, "dk"), view(dv, "dv"), seqlens,
        backward_options(softmax_scale, causal, deterministic, workspace, workspace_bytes),
        static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_attention_backward_workspace_bytes(const DLTensor* q, int deterministic,
                                                               size_t* bytes) {
  return guarded([&] {
    if (!bytes) throw kjit::InvalidArgument("bytes is a null pointer");
    *bytes = 0;
    kjit::attention::BackwardOptions o;
    o.deterministic = deterministic != 0;
    *bytes = kjit::attention::backward_workspace_bytes(view(q, "q"), o);
  });
}

namespace {

// The C groups as the C++ API's; `backward` also reads dout and dq.
std::vector<kjit::attention::AttentionGroup> groups_of(const kjit_attention_group* groups,
                                                       int group_count, bool backward) {
  if (!groups) throw kjit::InvalidArgument("groups is NULL");
  if (group_count < 1 || group_count > kjit::attention::kMaxGroups) {
    throw kjit::InvalidArgument(fmt::format("group_count must be 1 to {}, got {}",
                                            kjit::attention::kMaxGroups, group_count));
  }
  std::vector<kjit::attention::AttentionGroup> out(static_cast<std::size_t>(group_count));
  for (int g = 0; g < group_count; ++g) {
    const kjit_attention_group& c = groups[g];
    kjit::attention::AttentionGroup& a = out[static_cast<std::size_t>(g)];
    a.q = view(c.q, "q");
    a.out = view(c.out, "out");
    a.lse = backward ? view(c.lse, "lse") : optional_view(c.lse, "lse");
    a.cu_seqlens_q = view(c.cu_seqlens_q, "cu_seqlens_q");
    a.host_cu_seqlens_q = c.host_cu_seqlens_q;
    a.windows = view(c.windows, "windows");
    a.host_windows = c.host_windows;
    if (backward) {
      a.dout = view(c.dout, "dout");
      a.dq = view(c.dq, "dq");
    }
  }
  return out;
}

kjit::attention::SharedKeys keys_of(const DLTensor* k, const DLTensor* v,
                                    const DLTensor* cu_seqlens_k,
                                    const int32_t* host_cu_seqlens_k) {
  return {view(k, "k"), view(v, "v"), view(cu_seqlens_k, "cu_seqlens_k"), host_cu_seqlens_k};
}

}  // namespace

extern "C" kjit_status kjit_attention_forward_grouped(
    const kjit_attention_group* groups, int group_count, const DLTensor* k, const DLTensor* v,
    const DLTensor* cu_seqlens_k, const int32_t* host_cu_seqlens_k, float softmax_scale, int causal,
    void* stream) {
  return guarded([&] {
    const auto g = groups_of(groups, group_count, false);
    kjit::attention::forward_grouped(
        g.data(), group_count, keys_of(k, v, cu_seqlens_k, host_cu_seqlens_k),
        options(softmax_scale, causal), static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_attention_backward_grouped(
    const kjit_attention_group* groups, int group_count, const DLTensor* k, const DLTensor* v,
    const DLTensor* cu_seqlens_k, const int32_t* host_cu_seqlens_k, const DLTensor* dk,
    const DLTensor* dv, float softmax_scale, int causal, void* workspace, size_t workspace_bytes,
    void* stream) {
  return guarded([&] {
    const auto g = groups_of(groups, group_count, true);
    kjit::attention::backward_grouped(
        g.data(), group_count, keys_of(k, v, cu_seqlens_k, host_cu_seqlens_k), view(dk, "dk"),
        view(dv, "dv"), backward_options(softmax_scale, causal, 0, workspace, workspace_bytes),
        static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_attention_backward_grouped_workspace_bytes(
    const kjit_attention_group* groups, int group_count, size_t* bytes) {
  return guarded([&] {
    if (!bytes) throw kjit::InvalidArgument("bytes is a null pointer");
    *bytes = 0;
    const auto g = groups_of(groups, group_count, false);
    *bytes = kjit::attention::backward_grouped_workspace_bytes(g.data(), group_count);
  });
}

namespace {

kjit::mla::PagedCache paged_cache(const DLTensor* cache, const DLTensor* block_table,
                                  const int32_t* host_block_table, const DLTensor* lengths,
                                  const int32_t* host_lengths) {
  return {view(cache, "cache"), view(block_table, "block_table"), host_block_table,
          view(lengths, "lengths"), host_lengths};
}

kjit::mla::DecodeOptions decode_options(float softmax_scale) {
  kjit::mla::DecodeOptions o;
  o.softmax_scale = softmax_scale;
  return o;
}

}  // namespace

extern "C" kjit_status kjit_mla_decode(const DLTensor* q, const DLTensor* cache,
                                       const DLTensor* block_table, const int32_t* host_block_table,
                                       const DLTensor* lengths, const int32_t* host_lengths,
                                       const DLTensor* out, const DLTensor* lse,
                                       float softmax_scale, void* stream) {
  return guarded([&] {
    convert_in_order("q cache block_table lengths out lse",
                     {q, cache, block_table, lengths, out, lse});
    kjit::mla::decode(view(q, "q"),
                      paged_cache(cache, block_table, host_block_table, lengths, host_lengths),
                      view(out, "out"), optional_view(lse, "lse"), decode_options(softmax_scale),
                      static_cast<kjit::StreamHandle>(stream));
  });
}

struct kjit_comm {
  std::unique_ptr<kjit::comm::Communicator> comm;
};

extern "C" kjit_status kjit_comm_unique_id(char id[KJIT_COMM_UNIQUE_ID_BYTES]) {
  return guarded([&] {
    if (!id) throw kjit::InvalidArgument("id is NULL");
    const kjit::comm::UniqueId made = kjit::comm::make_unique_id();
    std::memcpy(id, made.bytes.data(), made.bytes.size());
  });
}

extern "C" kjit_status kjit_comm_create(const char id[KJIT_COMM_UNIQUE_ID_BYTES], int rank,
                                        int size, int device, int64_t timeout_ms,
                                        kjit_comm** comm) {
  return guarded([&] {
    if (!comm) throw kjit::InvalidArgument("comm is NULL");
    *comm = nullptr;
    if (!id) throw kjit::InvalidArgument("id is NULL");
    if (timeout_ms < 0) {
      throw kjit::InvalidArgument(fmt::format("timeout_ms must be 0 or more, got {}", timeout_ms));
    }
    kjit::comm::UniqueId unique;
    std::memcpy(unique.bytes.data(), id, unique.bytes.size());
    kjit::comm::Options options;
    options.timeout = std::chrono::milliseconds(timeout_ms);
    *comm = new kjit_comm{kjit::comm::from_unique_id(unique, rank, size, device, options)};
  });
}

extern "C" void kjit_comm_destroy(kjit_comm* comm) {
  delete comm;
}

extern "C" kjit_status kjit_mla_helix_heads(int heads, int world, int rank, int* begin, int* end) {
  return guarded([&] {
    if (!begin || !end) throw kjit::InvalidArgument("begin or end is NULL");
    const kjit::mla::HeadRange range = kjit::mla::helix_heads(heads, world, rank);
    *begin = range.begin;
    *end = range.end;
  });
}

extern "C" kjit_status kjit_mla_helix_decode(kjit_comm* comm, const DLTensor* q,
                                             const DLTensor* cache, const DLTensor* block_table,
                                             const int32_t* host_block_table,
                                             const DLTensor* lengths, const int32_t* host_lengths,
                                             const DLTensor* out, const DLTensor* lse,
                                             float softmax_scale, void* stream) {
  return guarded([&] {
    if (!comm || !comm->comm) throw kjit::InvalidArgument("comm is NULL");
    convert_in_order("q cache block_table lengths out lse",
                     {q, cache, block_table, lengths, out, lse});
    kjit::mla::helix_decode(
        *comm->comm, view(q, "q"),
        paged_cache(cache, block_table, host_block_table, lengths, host_lengths), view(out, "out"),
        optional_view(lse, "lse"), decode_options(softmax_scale),
        static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_router_topk(const DLTensor* logits, const DLTensor* bias,
                                            const DLTensor* ids, const DLTensor* weights,
                                            const kjit_moe_router_options* options, void* stream) {
  return guarded([&] {
    convert_in_order("logits bias ids weights", {logits, bias, ids, weights});
    kjit::moe::router_topk(view(logits, "logits"), optional_view(bias, "bias"), view(ids, "ids"),
                           view(weights, "weights"), router_options(options),
                           static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" int64_t kjit_moe_align_capacity(int64_t pairs, int experts, int block) {
  return kjit::moe::align_capacity(pairs, experts, block);
}

extern "C" kjit_status kjit_moe_align(const DLTensor* ids, int experts, int block,
                                      const DLTensor* sorted, const DLTensor* block_expert,
                                      const DLTensor* counts, const DLTensor* offsets,
                                      const DLTensor* invalid, void* stream) {
  return guarded([&] {
    convert_in_order("ids sorted block_expert counts offsets invalid",
                     {ids, sorted, block_expert, counts, offsets, invalid});
    kjit::moe::align(view(ids, "ids"), experts, block,
                     {view(sorted, "sorted"), view(block_expert, "block_expert"),
                      view(counts, "counts"), view(offsets, "offsets"), view(invalid, "invalid")},
                     static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_permute(const DLTensor* x, const DLTensor* sorted, int top_k,
                                        const DLTensor* x_sorted, const DLTensor* positions,
                                        void* stream) {
  return guarded([&] {
    convert_in_order("x sorted x_sorted positions", {x, sorted, x_sorted, positions});
    kjit::moe::permute(view(x, "x"), view(sorted, "sorted"), top_k, view(x_sorted, "x_sorted"),
                       view(positions, "positions"), static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_unpermute(const DLTensor* y_sorted, const DLTensor* positions,
                                          int top_k, const DLTensor* weights,
                                          const DLTensor* shared, const DLTensor* out,
                                          void* stream) {
  return guarded([&] {
    convert_in_order("y_sorted positions weights shared out",
                     {y_sorted, positions, weights, shared, out});
    kjit::moe::unpermute(view(y_sorted, "y_sorted"), view(positions, "positions"), top_k,
                         optional_view(weights, "weights"), optional_view(shared, "shared"),
                         view(out, "out"), static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_grouped_gemm(const DLTensor* x_sorted, const DLTensor* block_expert,
                                             int block, const DLTensor* w, const DLTensor* y,
                                             kjit_moe_gemm_epilogue epilogue,
                                             const DLTensor* sorted, const DLTensor* weights,
                                             void* stream) {
  return guarded([&] {
    convert_in_order("x_sorted block_expert w y sorted weights",
                     {x_sorted, block_expert, w, y, sorted, weights});
    kjit::moe::grouped_gemm(view(x_sorted, "x_sorted"), view(block_expert, "block_expert"), block,
                            view(w, "w"), view(y, "y"), epilogue_of(epilogue, sorted, weights),
                            static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_grouped_gemm_masked(const DLTensor* x, const DLTensor* masked_m,
                                                    int expected_m, const DLTensor* w,
                                                    const DLTensor* y,
                                                    kjit_moe_gemm_epilogue epilogue, void* stream) {
  return guarded([&] {
    convert_in_order("x masked_m w y", {x, masked_m, w, y});
    kjit::moe::grouped_gemm_masked(view(x, "x"), view(masked_m, "masked_m"), expected_m,
                                   view(w, "w"), view(y, "y"),
                                   static_cast<kjit::moe::GemmEpilogue::Kind>(epilogue),
                                   static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_balance(const DLTensor* ids, const DLTensor* probs,
                                        const DLTensor* logits, const DLTensor* cu_seqlens,
                                        int max_seqlen, const DLTensor* bias, float aux_coeff,
                                        float z_coeff, float bias_rate, const DLTensor* counts,
                                        const DLTensor* f, const DLTensor* p,
                                        const DLTensor* losses, void* stream) {
  return guarded([&] {
    convert_in_order("ids probs logits cu_seqlens bias counts f p losses",
                     {ids, probs, logits, cu_seqlens, bias, counts, f, p, losses});
    kjit::moe::BalanceOptions o;
    o.aux_coeff = aux_coeff;
    o.z_coeff = z_coeff;
    o.bias_rate = bias_rate;
    kjit::moe::balance(view(ids, "ids"), view(probs, "probs"), optional_view(logits, "logits"),
                       optional_view(cu_seqlens, "cu_seqlens"), max_seqlen,
                       optional_view(bias, "bias"), o,
                       {view(counts, "counts"), view(f, "f"), view(p, "p"), view(losses, "losses")},
                       static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_quantize_fp4(const DLTensor* w, int format, const DLTensor* codes,
                                             const DLTensor* scales, const DLTensor* tensor_scale,
                                             void* stream) {
  return guarded([&] {
    convert_in_order("w codes scales tensor_scale", {w, codes, scales, tensor_scale});
    kjit::moe::quantize_fp4(view(w, "w"), fp4_format(format, "moe quantize fp4"),
                            view(codes, "codes"), view(scales, "scales"),
                            view(tensor_scale, "tensor_scale"),
                            static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_expert_gemm_fp4(const DLTensor* x_sorted,
                                                const DLTensor* block_expert, int block, int format,
                                                const DLTensor* codes, const DLTensor* scales,
                                                const DLTensor* tensor_scale, const DLTensor* y,
                                                kjit_moe_gemm_epilogue epilogue,
                                                const DLTensor* sorted, const DLTensor* weights,
                                                void* stream) {
  return guarded([&] {
    convert_in_order("x_sorted block_expert codes scales tensor_scale y sorted weights",
                     {x_sorted, block_expert, codes, scales, tensor_scale, y, sorted, weights});
    kjit::moe::grouped_gemm(view(x_sorted, "x_sorted"), view(block_expert, "block_expert"), block,
                            fp4_weights(format, codes, scales, tensor_scale), view(y, "y"),
                            epilogue_of(epilogue, sorted, weights),
                            static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_expert_gemm_fp4_masked(
    const DLTensor* x, const DLTensor* masked_m, int expected_m, int format, const DLTensor* codes,
    const DLTensor* scales, const DLTensor* tensor_scale, const DLTensor* y,
    kjit_moe_gemm_epilogue epilogue, void* stream) {
  return guarded([&] {
    convert_in_order("x masked_m codes scales tensor_scale y",
                     {x, masked_m, codes, scales, tensor_scale, y});
    kjit::moe::grouped_gemm_masked(view(x, "x"), view(masked_m, "masked_m"), expected_m,
                                   fp4_weights(format, codes, scales, tensor_scale), view(y, "y"),
                                   static_cast<kjit::moe::GemmEpilogue::Kind>(epilogue),
                                   static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_layer(const DLTensor* x, const DLTensor* router_logits,
                                      const DLTensor* gate_up, const DLTensor* down,
                                      const DLTensor* router_bias, const DLTensor* shared,
                                      const kjit_moe_router_options* options, int block,
                                      const DLTensor* out, void* stream) {
  return guarded([&] {
    convert_in_order("x router_logits gate_up down router_bias shared out",
                     {x, router_logits, gate_up, down, router_bias, shared, out});
    const kjit::moe::LayerOptions o{router_options(options), block};
    kjit::moe::layer(
        view(x, "x"), view(router_logits, "router_logits"),
        {view(gate_up, "gate_up"), view(down, "down"), optional_view(router_bias, "router_bias")},
        optional_view(shared, "shared"), o, view(out, "out"),
        static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_layer_fp4(
    const DLTensor* x, const DLTensor* router_logits, int format, const DLTensor* gate_up_codes,
    const DLTensor* gate_up_scales, const DLTensor* gate_up_tensor_scale,
    const DLTensor* down_codes, const DLTensor* down_scales, const DLTensor* down_tensor_scale,
    const DLTensor* router_bias, const DLTensor* shared, const kjit_moe_router_options* options,
    int block, const DLTensor* out, void* stream) {
  return guarded([&] {
    convert_in_order(
        "x router_logits gate_up_codes gate_up_scales gate_up_tensor_scale down_codes down_scales "
        "down_tensor_scale router_bias shared out",
        {x, router_logits, gate_up_codes, gate_up_scales, gate_up_tensor_scale, down_codes,
         down_scales, down_tensor_scale, router_bias, shared, out});
    const kjit::moe::LayerOptions o{router_options(options), block};
    const kjit::moe::Fp4LayerWeights w{
        fp4_weights(format, gate_up_codes, gate_up_scales, gate_up_tensor_scale,
                    {"gate_up_codes", "gate_up_scales", "gate_up_tensor_scale"}),
        fp4_weights(format, down_codes, down_scales, down_tensor_scale,
                    {"down_codes", "down_scales", "down_tensor_scale"}),
        optional_view(router_bias, "router_bias")};
    kjit::moe::layer(view(x, "x"), view(router_logits, "router_logits"), w,
                     optional_view(shared, "shared"), o, view(out, "out"),
                     static_cast<kjit::StreamHandle>(stream));
  });
}
