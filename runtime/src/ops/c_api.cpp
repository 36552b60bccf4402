// The C ABI (kjit/c_api.h): exceptions become status codes and a per-thread message.
#include "kjit/c_api.h"

#include <string>

#include "kjit/attention.hpp"
#include "kjit/error.hpp"
#include "kjit/merge_states.hpp"
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

kjit::attention::ForwardOptions options(float softmax_scale, int causal) {
  kjit::attention::ForwardOptions o;
  o.softmax_scale = softmax_scale;
  o.causal = causal != 0;
  return o;
}

}  // namespace

extern "C" const char* kjit_last_error(void) {
  return g_last_error.c_str();
}

extern "C" kjit_status kjit_merge_states(const DLTensor* parts, const DLTensor* parts_lse,
                                         const DLTensor* out, const DLTensor* out_lse,
                                         void* stream) {
  return guarded([&] {
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
    const kjit::attention::Varlen seqlens{view(cu_seqlens_q, "cu_seqlens_q"),
                                          view(cu_seqlens_k, "cu_seqlens_k"), host_cu_seqlens_q,
                                          host_cu_seqlens_k};
    kjit::attention::forward_varlen(
        view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), optional_view(lse, "lse"),
        seqlens, options(softmax_scale, causal), static_cast<kjit::StreamHandle>(stream));
  });
}
