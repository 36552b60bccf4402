// GPU tests skip, with the reason printed, where no CUDA driver or device is available.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "kjit/device.hpp"

#define KJIT_REQUIRE_GPU()                                        \
  do {                                                            \
    std::string kjit_no_gpu_reason;                               \
    if (!kjit::driver_available(&kjit_no_gpu_reason)) {           \
      GTEST_SKIP() << "needs a CUDA GPU: " << kjit_no_gpu_reason; \
    }                                                             \
  } while (0)
