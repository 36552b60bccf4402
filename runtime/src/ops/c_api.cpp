// The C ABI (kjit/c_api.h): exceptions become status codes and a per-thread message.
#include "kjit/c_api.h"

#include <array>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kjit/attention.hpp"
#include "kjit/comm.hpp"
#include "kjit/device.hpp"
#include "kjit/error.hpp"
#include "kjit/expert_offload.hpp"
#include "kjit/merge_states.hpp"
#include "kjit/mla.hpp"
#include "kjit/moe.hpp"
#include "kjit/tensor.hpp"
#include "kjit/zigzag.hpp"

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

// The ops' tensors are converted in sequenced statements (one declaration, or a braced list),
// not as a call's arguments, whose order is unspecified (GCC's is right to left): the first bad
// tensor named is then the first in the prototype, not an output a binding allocated like it.
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
    const kjit::TensorView tparts = view(parts, "parts"), tparts_lse = view(parts_lse, "parts_lse"),
                           tout = view(out, "out"), tout_lse = optional_view(out_lse, "out_lse");
    kjit::attention::merge_states(tparts, tparts_lse, tout, tout_lse,
                                  static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_attention_forward(const DLTensor* q, const DLTensor* k,
                                              const DLTensor* v, const DLTensor* out,
                                              const DLTensor* lse, float softmax_scale, int causal,
                                              void* stream) {
  return guarded([&] {
    const kjit::TensorView tq = view(q, "q"), tk = view(k, "k"), tv = view(v, "v"),
                           tout = view(out, "out"), tlse = optional_view(lse, "lse");
    kjit::attention::forward(tq, tk, tv, tout, tlse, options(softmax_scale, causal),
                             static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_attention_forward_varlen(
    const DLTensor* q, const DLTensor* k, const DLTensor* v, const DLTensor* out,
    const DLTensor* lse, const DLTensor* cu_seqlens_q, const DLTensor* cu_seqlens_k,
    const int32_t* host_cu_seqlens_q, const int32_t* host_cu_seqlens_k, float softmax_scale,
    int causal, void* stream) {
  return guarded([&] {
    const kjit::TensorView tq = view(q, "q"), tk = view(k, "k"), tv = view(v, "v"),
                           tout = view(out, "out"), tlse = optional_view(lse, "lse");
    const kjit::attention::Varlen seqlens{view(cu_seqlens_q, "cu_seqlens_q"),
                                          view(cu_seqlens_k, "cu_seqlens_k"), host_cu_seqlens_q,
                                          host_cu_seqlens_k};
    kjit::attention::forward_varlen(tq, tk, tv, tout, tlse, seqlens, options(softmax_scale, causal),
                                    static_cast<kjit::StreamHandle>(stream));
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
    const kjit::TensorView tq = view(q, "q"), tk = view(k, "k"), tv = view(v, "v"),
                           tout = view(out, "out"), tdout = view(dout, "dout"),
                           tlse = view(lse, "lse"), tdq = view(dq, "dq"), tdk = view(dk, "dk"),
                           tdv = view(dv, "dv");
    kjit::attention::backward(
        tq, tk, tv, tout, tdout, tlse, tdq, tdk, tdv,
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
    const kjit::TensorView tq = view(q, "q"), tk = view(k, "k"), tv = view(v, "v"),
                           tout = view(out, "out"), tdout = view(dout, "dout"),
                           tlse = view(lse, "lse"), tdq = view(dq, "dq"), tdk = view(dk, "dk"),
                           tdv = view(dv, "dv");
    const kjit::attention::Varlen seqlens{view(cu_seqlens_q, "cu_seqlens_q"),
                                          view(cu_seqlens_k, "cu_seqlens_k"), host_cu_seqlens_q,
                                          host_cu_seqlens_k};
    kjit::attention::backward_varlen(
        tq, tk, tv, tout, tdout, tlse, tdq, tdk, tdv, seqlens,
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
    const kjit::attention::SharedKeys keys = keys_of(k, v, cu_seqlens_k, host_cu_seqlens_k);
    const kjit::TensorView tdk = view(dk, "dk"), tdv = view(dv, "dv");
    kjit::attention::backward_grouped(
        g.data(), group_count, keys, tdk, tdv,
        backward_options(softmax_scale, causal, 0, workspace, workspace_bytes),
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
    const kjit::TensorView tq = view(q, "q");
    const kjit::mla::PagedCache paged =
        paged_cache(cache, block_table, host_block_table, lengths, host_lengths);
    const kjit::TensorView tout = view(out, "out"), tlse = optional_view(lse, "lse");
    kjit::mla::decode(tq, paged, tout, tlse, decode_options(softmax_scale),
                      static_cast<kjit::StreamHandle>(stream));
  });
}

struct kjit_comm {
  std::unique_ptr<kjit::comm::Communicator> comm;
};

namespace {

kjit::comm::Communicator& communicator(kjit_comm* comm) {
  if (!comm || !comm->comm) throw kjit::InvalidArgument("comm is NULL");
  return *comm->comm;
}

}  // namespace

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
    kjit::comm::Communicator& c = communicator(comm);
    const kjit::TensorView tq = view(q, "q");
    const kjit::mla::PagedCache local =
        paged_cache(cache, block_table, host_block_table, lengths, host_lengths);
    const kjit::TensorView tout = view(out, "out"), tlse = optional_view(lse, "lse");
    kjit::mla::helix_decode(c, tq, local, tout, tlse, decode_options(softmax_scale),
                            static_cast<kjit::StreamHandle>(stream));
  });
}

namespace {

kjit::cp::ZigzagSequences zigzag_sequences(const DLTensor* cu_seqlens,
                                           const int32_t* host_cu_seqlens) {
  return {view(cu_seqlens, "cu_seqlens"), host_cu_seqlens};
}

kjit::cp::ZigzagOptions zigzag_options(float softmax_scale, int causal, int heads_k_stride) {
  kjit::cp::ZigzagOptions o;
  o.softmax_scale = softmax_scale;
  o.causal = causal != 0;
  o.heads_k_stride = heads_k_stride;
  return o;
}

}  // namespace

extern "C" kjit_status kjit_zigzag_extract_kv_slice(const DLTensor* gathered,
                                                    const DLTensor* cu_seqlens,
                                                    const int32_t* host_cu_seqlens, int world,
                                                    int chunk_begin, int chunk_end,
                                                    const DLTensor* out, void* stream) {
  return guarded([&] {
    const kjit::TensorView tgathered = view(gathered, "gathered");
    const kjit::cp::ZigzagSequences seqs = zigzag_sequences(cu_seqlens, host_cu_seqlens);
    const kjit::TensorView tout = view(out, "out");
    kjit::cp::extract_zigzag_kv_slice(tgathered, seqs, world, {chunk_begin, chunk_end}, tout,
                                      static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_zigzag_scatter_grad(const DLTensor* grad, const DLTensor* cu_seqlens,
                                                const int32_t* host_cu_seqlens, int world,
                                                int chunk_begin, int chunk_end, int rank,
                                                const DLTensor* out, void* stream) {
  return guarded([&] {
    const kjit::TensorView tgrad = view(grad, "grad");
    const kjit::cp::ZigzagSequences seqs = zigzag_sequences(cu_seqlens, host_cu_seqlens);
    const kjit::TensorView tout = view(out, "out");
    kjit::cp::scatter_grad_to_zigzag(tgrad, seqs, world, {chunk_begin, chunk_end}, rank, tout,
                                     static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_zigzag_forward(kjit_comm* comm, const DLTensor* q, const DLTensor* k,
                                           const DLTensor* v, const DLTensor* out,
                                           const DLTensor* lse, const DLTensor* cu_seqlens,
                                           const int32_t* host_cu_seqlens, float softmax_scale,
                                           int causal, int heads_k_stride, void* stream) {
  return guarded([&] {
    kjit::comm::Communicator& c = communicator(comm);
    const kjit::TensorView tq = view(q, "q"), tk = view(k, "k"), tv = view(v, "v"),
                           tout = view(out, "out"), tlse = optional_view(lse, "lse");
    const kjit::cp::ZigzagSequences seqs = zigzag_sequences(cu_seqlens, host_cu_seqlens);
    kjit::cp::zigzag_forward(c, tq, tk, tv, tout, tlse, seqs,
                             zigzag_options(softmax_scale, causal, heads_k_stride),
                             static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_zigzag_backward(kjit_comm* comm, const DLTensor* q, const DLTensor* k,
                                            const DLTensor* v, const DLTensor* out,
                                            const DLTensor* dout, const DLTensor* lse,
                                            const DLTensor* dq, const DLTensor* dk,
                                            const DLTensor* dv, const DLTensor* cu_seqlens,
                                            const int32_t* host_cu_seqlens, float softmax_scale,
                                            int causal, int heads_k_stride, void* stream) {
  return guarded([&] {
    kjit::comm::Communicator& c = communicator(comm);
    const kjit::TensorView tq = view(q, "q"), tk = view(k, "k"), tv = view(v, "v"),
                           tout = view(out, "out"), tdout = view(dout, "dout"),
                           tlse = view(lse, "lse"), tdq = view(dq, "dq"), tdk = view(dk, "dk"),
                           tdv = view(dv, "dv");
    const kjit::cp::ZigzagSequences seqs = zigzag_sequences(cu_seqlens, host_cu_seqlens);
    kjit::cp::zigzag_backward(c, tq, tk, tv, tout, tdout, tlse, tdq, tdk, tdv, seqs,
                              zigzag_options(softmax_scale, causal, heads_k_stride),
                              static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_router_topk(const DLTensor* logits, const DLTensor* bias,
                                            const DLTensor* ids, const DLTensor* weights,
                                            const kjit_moe_router_options* options, void* stream) {
  return guarded([&] {
    const kjit::TensorView tlogits = view(logits, "logits"), tbias = optional_view(bias, "bias"),
                           tids = view(ids, "ids"), tweights = view(weights, "weights");
    kjit::moe::router_topk(tlogits, tbias, tids, tweights, router_options(options),
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
    const kjit::TensorView tids = view(ids, "ids");
    const kjit::moe::Alignment layout{view(sorted, "sorted"), view(block_expert, "block_expert"),
                                      view(counts, "counts"), view(offsets, "offsets"),
                                      view(invalid, "invalid")};
    kjit::moe::align(tids, experts, block, layout, static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_permute(const DLTensor* x, const DLTensor* sorted, int top_k,
                                        const DLTensor* x_sorted, const DLTensor* positions,
                                        void* stream) {
  return guarded([&] {
    const kjit::TensorView tx = view(x, "x"), tsorted = view(sorted, "sorted"),
                           tx_sorted = view(x_sorted, "x_sorted"),
                           tpositions = view(positions, "positions");
    kjit::moe::permute(tx, tsorted, top_k, tx_sorted, tpositions,
                       static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_unpermute(const DLTensor* y_sorted, const DLTensor* positions,
                                          int top_k, const DLTensor* weights,
                                          const DLTensor* shared, const DLTensor* out,
                                          void* stream) {
  return guarded([&] {
    const kjit::TensorView ty_sorted = view(y_sorted, "y_sorted"),
                           tpositions = view(positions, "positions"),
                           tweights = optional_view(weights, "weights"),
                           tshared = optional_view(shared, "shared"), tout = view(out, "out");
    kjit::moe::unpermute(ty_sorted, tpositions, top_k, tweights, tshared, tout,
                         static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_grouped_gemm(const DLTensor* x_sorted, const DLTensor* block_expert,
                                             int block, const DLTensor* w, const DLTensor* y,
                                             kjit_moe_gemm_epilogue epilogue,
                                             const DLTensor* sorted, const DLTensor* weights,
                                             void* stream) {
  return guarded([&] {
    const kjit::TensorView tx_sorted = view(x_sorted, "x_sorted"),
                           tblock_expert = view(block_expert, "block_expert"), tw = view(w, "w"),
                           ty = view(y, "y");
    kjit::moe::grouped_gemm(tx_sorted, tblock_expert, block, tw, ty,
                            epilogue_of(epilogue, sorted, weights),
                            static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_grouped_gemm_masked(const DLTensor* x, const DLTensor* masked_m,
                                                    int expected_m, const DLTensor* w,
                                                    const DLTensor* y,
                                                    kjit_moe_gemm_epilogue epilogue, void* stream) {
  return guarded([&] {
    const kjit::TensorView tx = view(x, "x"), tmasked_m = view(masked_m, "masked_m"),
                           tw = view(w, "w"), ty = view(y, "y");
    kjit::moe::grouped_gemm_masked(tx, tmasked_m, expected_m, tw, ty,
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
    const kjit::TensorView tids = view(ids, "ids"), tprobs = view(probs, "probs"),
                           tlogits = optional_view(logits, "logits"),
                           tcu_seqlens = optional_view(cu_seqlens, "cu_seqlens"),
                           tbias = optional_view(bias, "bias");
    const kjit::moe::BalanceStats stats{view(counts, "counts"), view(f, "f"), view(p, "p"),
                                        view(losses, "losses")};
    kjit::moe::BalanceOptions o;
    o.aux_coeff = aux_coeff;
    o.z_coeff = z_coeff;
    o.bias_rate = bias_rate;
    kjit::moe::balance(tids, tprobs, tlogits, tcu_seqlens, max_seqlen, tbias, o, stats,
                       static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_quantize_fp4(const DLTensor* w, int format, const DLTensor* codes,
                                             const DLTensor* scales, const DLTensor* tensor_scale,
                                             void* stream) {
  return guarded([&] {
    const kjit::TensorView tw = view(w, "w"), tcodes = view(codes, "codes"),
                           tscales = view(scales, "scales"),
                           ttensor_scale = view(tensor_scale, "tensor_scale");
    kjit::moe::quantize_fp4(tw, fp4_format(format, "moe quantize fp4"), tcodes, tscales,
                            ttensor_scale, static_cast<kjit::StreamHandle>(stream));
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
    const kjit::TensorView tx_sorted = view(x_sorted, "x_sorted"),
                           tblock_expert = view(block_expert, "block_expert");
    const kjit::moe::Fp4Weights fp4 = fp4_weights(format, codes, scales, tensor_scale);
    const kjit::TensorView ty = view(y, "y");
    kjit::moe::grouped_gemm(tx_sorted, tblock_expert, block, fp4, ty,
                            epilogue_of(epilogue, sorted, weights),
                            static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_expert_gemm_fp4_masked(
    const DLTensor* x, const DLTensor* masked_m, int expected_m, int format, const DLTensor* codes,
    const DLTensor* scales, const DLTensor* tensor_scale, const DLTensor* y,
    kjit_moe_gemm_epilogue epilogue, void* stream) {
  return guarded([&] {
    const kjit::TensorView tx = view(x, "x"), tmasked_m = view(masked_m, "masked_m");
    const kjit::moe::Fp4Weights fp4 = fp4_weights(format, codes, scales, tensor_scale);
    const kjit::TensorView ty = view(y, "y");
    kjit::moe::grouped_gemm_masked(tx, tmasked_m, expected_m, fp4, ty,
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
    const kjit::TensorView tx = view(x, "x"), trouter_logits = view(router_logits, "router_logits");
    const kjit::moe::LayerWeights weights{view(gate_up, "gate_up"), view(down, "down"),
                                          optional_view(router_bias, "router_bias")};
    const kjit::TensorView tshared = optional_view(shared, "shared"), tout = view(out, "out");
    const kjit::moe::LayerOptions o{router_options(options), block};
    kjit::moe::layer(tx, trouter_logits, weights, tshared, o, tout,
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
    const kjit::TensorView tx = view(x, "x"), trouter_logits = view(router_logits, "router_logits");
    const kjit::moe::Fp4LayerWeights w{
        fp4_weights(format, gate_up_codes, gate_up_scales, gate_up_tensor_scale,
                    {"gate_up_codes", "gate_up_scales", "gate_up_tensor_scale"}),
        fp4_weights(format, down_codes, down_scales, down_tensor_scale,
                    {"down_codes", "down_scales", "down_tensor_scale"}),
        optional_view(router_bias, "router_bias")};
    const kjit::TensorView tshared = optional_view(shared, "shared"), tout = view(out, "out");
    const kjit::moe::LayerOptions o{router_options(options), block};
    kjit::moe::layer(tx, trouter_logits, w, tshared, o, tout,
                     static_cast<kjit::StreamHandle>(stream));
  });
}

// --- MoE expert offloading ---

struct kjit_moe_offload {
  std::unique_ptr<kjit::moe::OffloadedMoe> stack;
};

namespace {

kjit::TensorView host_view(const DLTensor* t, const char* name) {
  return kjit::TensorView::from_dlpack_host(required(t, name), name);
}

// A per-layer array's entry, naming it in errors ("gate_up[2]").
const DLTensor* entry(const DLTensor* const* array, int layer, const char* name, bool optional) {
  if (!array) {
    if (optional) return nullptr;
    throw kjit::InvalidArgument(std::string(name) + " is NULL");
  }
  return array[layer];
}

std::string indexed(const char* name, int layer) {
  return fmt::format("{}[{}]", name, layer);
}

kjit::moe::OffloadOptions offload_options(const kjit_moe_offload_options* o, int layers) {
  if (!o) throw kjit::InvalidArgument("options is NULL");
  if (o->policy != 0 && o->policy != 1)
    throw kjit::InvalidArgument(
        fmt::format("policy must be 0 (LRU) or 1 (LFU), got {}", o->policy));
  if (o->predictor < 0 || o->predictor > 2) {
    throw kjit::InvalidArgument(fmt::format(
        "predictor must be 0 (frequency), 1 (previous token) or 2 (cross-layer), got {}",
        o->predictor));
  }
  kjit::moe::OffloadOptions out;
  out.policy = o->policy == 0 ? kjit::moe::CachePolicy::Lru : kjit::moe::CachePolicy::Lfu;
  out.slots = o->slots;
  out.prefetch = o->prefetch;
  out.predictor = static_cast<kjit::moe::PredictorKind>(o->predictor);
  out.history = o->history;
  if ((o->pinned != nullptr) != (o->pinned_count > 0)) {
    throw kjit::InvalidArgument(fmt::format(
        "pinned and pinned_count go together (an array of layers x pinned_count ids, or NULL and "
        "0), got {} and {}",
        o->pinned ? "an array" : "NULL", o->pinned_count));
  }
  if (o->pinned) {
    for (int l = 0; l < layers; ++l)
      out.pinned.emplace_back(o->pinned + l * o->pinned_count,
                              o->pinned + (l + 1) * o->pinned_count);
  }
  return out;
}

kjit::TensorView bias_entry(const DLTensor* const* router_bias, int layer) {
  const std::string name = indexed("router_bias", layer);
  return optional_view(entry(router_bias, layer, "router_bias", true), name.c_str());
}

void check_layers(int layers, kjit_moe_offload** stack) {
  if (!stack) throw kjit::InvalidArgument("stack is NULL");
  *stack = nullptr;
  if (layers < 1) throw kjit::InvalidArgument(fmt::format("layers must be >= 1, got {}", layers));
}

// The stack over the layers' weights (16-bit or FP4), handed to the caller.
template <class LayerList>
kjit_moe_offload* new_offload(const LayerList& weights, const kjit_moe_router_options* router,
                              int block, const kjit_moe_offload_options* options, int layers) {
  const kjit::moe::LayerOptions o{router_options(router), block};
  auto made = std::make_unique<kjit_moe_offload>();
  made->stack =
      std::make_unique<kjit::moe::OffloadedMoe>(weights, o, offload_options(options, layers));
  return made.release();
}

kjit_moe_offload& stack_of(kjit_moe_offload* stack) {
  if (!stack || !stack->stack) throw kjit::InvalidArgument("stack is NULL");
  return *stack;
}

}  // namespace

extern "C" kjit_status kjit_moe_offload_create(int layers, const DLTensor* const* gate_up,
                                               const DLTensor* const* down,
                                               const DLTensor* const* router_bias,
                                               const kjit_moe_router_options* router, int block,
                                               const kjit_moe_offload_options* options,
                                               kjit_moe_offload** stack) {
  return guarded([&] {
    check_layers(layers, stack);
    std::vector<kjit::moe::LayerWeights> weights;
    for (int l = 0; l < layers; ++l) {
      const std::string up = indexed("gate_up", l), dn = indexed("down", l);
      weights.push_back({host_view(entry(gate_up, l, "gate_up", false), up.c_str()),
                         host_view(entry(down, l, "down", false), dn.c_str()),
                         bias_entry(router_bias, l)});
    }
    *stack = new_offload(weights, router, block, options, layers);
  });
}

extern "C" kjit_status kjit_moe_offload_create_fp4(
    int layers, int format, const DLTensor* const* gate_up_codes,
    const DLTensor* const* gate_up_scales, const DLTensor* const* gate_up_tensor_scale,
    const DLTensor* const* down_codes, const DLTensor* const* down_scales,
    const DLTensor* const* down_tensor_scale, const DLTensor* const* router_bias,
    const kjit_moe_router_options* router, int block, const kjit_moe_offload_options* options,
    kjit_moe_offload** stack) {
  return guarded([&] {
    check_layers(layers, stack);
    // A tensor scale [E] is on the host, [1] (one for all) on the device.
    const auto tensor_scale = [](const DLTensor* t, const std::string& name) {
      if (!t) return kjit::TensorView();
      return t->device.device_type == kDLCUDAHost || t->device.device_type == kDLCPU
                 ? host_view(t, name.c_str())
                 : kjit::TensorView::from_dlpack(*t, name.c_str());
    };
    const auto projection = [&](const DLTensor* const* codes, const DLTensor* const* scales,
                                const DLTensor* const* tensor_scales, const char* name, int l) {
      kjit::moe::Fp4Weights w;
      w.format = fp4_format(format, "moe offload");
      const std::string c = indexed(name, l) + " codes", s = indexed(name, l) + " scales",
                        t = indexed(name, l) + " tensor_scale";
      w.codes = host_view(entry(codes, l, "codes", false), c.c_str());
      w.scales = host_view(entry(scales, l, "scales", false), s.c_str());
      w.tensor_scale = tensor_scale(entry(tensor_scales, l, "tensor_scale", true), t);
      return w;
    };
    std::vector<kjit::moe::Fp4LayerWeights> weights;
    for (int l = 0; l < layers; ++l) {
      weights.push_back(
          {projection(gate_up_codes, gate_up_scales, gate_up_tensor_scale, "gate_up", l),
           projection(down_codes, down_scales, down_tensor_scale, "down", l),
           bias_entry(router_bias, l)});
    }
    *stack = new_offload(weights, router, block, options, layers);
  });
}

extern "C" void kjit_moe_offload_destroy(kjit_moe_offload* stack) {
  delete stack;
}

extern "C" kjit_status kjit_moe_offload_layer(kjit_moe_offload* stack, int layer, const DLTensor* x,
                                              const DLTensor* router_logits, const DLTensor* shared,
                                              const DLTensor* out, const uint32_t* sequences,
                                              void* stream) {
  return guarded([&] {
    kjit_moe_offload& s = stack_of(stack);
    const kjit::TensorView tx = view(x, "x"), trouter_logits = view(router_logits, "router_logits"),
                           tshared = optional_view(shared, "shared"), tout = view(out, "out");
    std::vector<std::uint32_t> ids;
    if (sequences && tx.ndim == 2) ids.assign(sequences, sequences + tx.size(0));
    s.stack->layer(layer, tx, trouter_logits, tshared, tout,
                   static_cast<kjit::StreamHandle>(stream), ids);
  });
}

extern "C" kjit_status kjit_moe_offload_prefetch_from_logits(kjit_moe_offload* stack, int layer,
                                                             const DLTensor* guess_logits,
                                                             void* stream) {
  return guarded([&] {
    kjit_moe_offload& s = stack_of(stack);
    s.stack->prefetch_from_logits(layer, view(guess_logits, "guess_logits"),
                                  static_cast<kjit::StreamHandle>(stream));
  });
}

extern "C" kjit_status kjit_moe_offload_stats_get(kjit_moe_offload* stack,
                                                  kjit_moe_offload_stats* stats) {
  return guarded([&] {
    kjit_moe_offload& s = stack_of(stack);
    if (!stats) throw kjit::InvalidArgument("stats is NULL");
    const kjit::moe::OffloadStats st = s.stack->stats();
    *stats = {st.tokens,          st.hits,
              st.misses,          st.prefetches,
              st.prefetch_hits,   st.prefetches_wasted,
              st.bytes_on_demand, st.bytes_prefetched,
              st.stall_ms,        st.copy_ms};
  });
}

extern "C" kjit_status kjit_moe_offload_write_history(kjit_moe_offload* stack, const char* path) {
  return guarded([&] {
    kjit_moe_offload& s = stack_of(stack);
    if (!path) throw kjit::InvalidArgument("path is NULL");
    const std::string p = path;
    const kjit::moe::RoutingTrace trace = s.stack->history();
    if (p.size() >= 6 && p.compare(p.size() - 6, 6, ".jsonl") == 0) {
      trace.write_json_lines(p);
    } else {
      trace.write_binary(p);
    }
  });
}
