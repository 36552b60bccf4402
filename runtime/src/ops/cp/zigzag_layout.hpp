// The zigzag layouts' index math of templates/cp/zigzag_layout.cuh, compiled for the host: the
// zigzag attention's plan is the one the kernel writes, and the unit tests check the math against
// a plain reference.
#pragma once

#define KJIT_HOST_DEVICE inline
#include "cp/zigzag_layout.cuh"
#undef KJIT_HOST_DEVICE
