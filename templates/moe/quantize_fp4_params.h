/* Parameters of templates/moe/quantize_fp4.cuh (plain C layout, passed by value). */
#pragma once

struct KjitFp4QuantizeParams {
  const void* w;         /* [rows, cols], rows w_stride elements apart */
  unsigned char* codes;  /* [rows, cols / 2]: element 2i in the low nibble, 2i + 1 the high */
  unsigned char* scales; /* [rows, cols / block]: E4M3 (NVFP4) or E8M0 (MXFP4) */
  float* tensor_scale;   /* [1]: NVFP4's dequantisation scale amax / (448 x 6); MXFP4: 1 */
  float* amax;           /* [1] scratch: the tensor's largest magnitude (NVFP4) */
  long long w_stride, codes_stride, scales_stride;
  int rows, cols;
};
