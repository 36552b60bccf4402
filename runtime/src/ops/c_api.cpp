// The C ABI (kjit/c_api.h): exceptions become status codes and a per-thread message.
#include "kjit/c_api.h"

#include <string>

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

}  // namespace

extern "C" const char* kjit_last_error(void) {
  return g_last_error.c_str();
}

extern "C" kjit_status kjit_merge_states(const DLTensor* parts, const DLTensor* parts_lse,
                                         const DLTensor* out, const DLTensor* out_lse,
                                         void* stream) {
  return guarded([&] {
    kjit::attention::merge_states(
        kjit::TensorView::from_dlpack(required(parts, "parts"), "parts"),
        kjit::TensorView::from_dlpack(required(parts_lse, "parts_lse"), "parts_lse"),
        kjit::TensorView::from_dlpack(required(out, "out"), "out"),
        out_lse ? kjit::TensorView::from_dlpack(*out_lse, "out_lse") : kjit::TensorView(),
        static_cast<kjit::StreamHandle>(stream));
  });
}
