/* Attention forward from plain C through kjit's C ABI (kjit/c_api.h) and libkjit.so only:
   device buffers, DLPack views, the op, and a check against a double-precision reference on the
   host. Without a GPU it says why and exits 0.
     cc c_api.c $(pkg-config --cflags --libs kjit) -o c_api && ./c_api */
#include <kjit/c_api.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 2, S = 100, H = 4, D = 64 }; /* q, k, v, out: [B, S, H, D] bf16; lse: [B, H, S] */

static uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static float from_bf16(uint16_t h) {
  const uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static int fail(const char* what) {
  fprintf(stderr, "c_api: %s: %s\n", what, kjit_last_error());
  return 1;
}

int main(void) {
  const size_t n = (size_t)B * S * H * D;
  uint16_t* host[4];                                    /* q, k, v, out */
  kjit_buffer* dev[5] = {NULL, NULL, NULL, NULL, NULL}; /* q, k, v, out, lse */
  for (int i = 0; i < 4; ++i)
    host[i] = malloc(n * 2);
  srand(7);
  for (int i = 0; i < 3; ++i) {
    for (size_t e = 0; e < n; ++e)
      host[i][e] = to_bf16((float)rand() / RAND_MAX * 2.f - 1.f);
  }
  for (int i = 0; i < 5; ++i) {
    if (kjit_buffer_create(i < 4 ? n * 2 : (size_t)B * H * S * 4, &dev[i]) != KJIT_SUCCESS) {
      if (i == 0) {
        printf("c_api: attention needs a CUDA GPU: %s\n", kjit_last_error());
        return 0;
      }
      return fail("kjit_buffer_create");
    }
  }
  for (int i = 0; i < 3; ++i) {
    if (kjit_buffer_upload(dev[i], host[i], n * 2) != KJIT_SUCCESS) return fail("upload");
  }

  int64_t shape[4] = {B, S, H, D}, lse_shape[3] = {B, H, S};
  DLTensor t[5];
  for (int i = 0; i < 5; ++i) {
    const DLTensor view = {kjit_buffer_data(dev[i]),
                           {kDLCUDA, 0},
                           i < 4 ? 4 : 3,
                           i < 4 ? (DLDataType){kDLBfloat, 16, 1} : (DLDataType){kDLFloat, 32, 1},
                           i < 4 ? shape : lse_shape,
                           NULL,
                           0};
    t[i] = view;
  }
  /* causal = 1, softmax_scale = 0 (1/sqrt(D)), the default stream */
  if (kjit_attention_forward(&t[0], &t[1], &t[2], &t[3], &t[4], 0.f, 1, NULL) != KJIT_SUCCESS)
    return fail("kjit_attention_forward");
  if (kjit_stream_synchronize(NULL) != KJIT_SUCCESS) return fail("kjit_stream_synchronize");
  if (kjit_buffer_download(dev[3], host[3], n * 2) != KJIT_SUCCESS) return fail("download");

  /* Reference: causal softmax(Q K^T / sqrt(D)) V in double, per (batch, head, query row). */
  double max_err = 0;
  double* p = malloc(S * sizeof(double));
#define AT(x, b, s, h, d) from_bf16(host[x][(((size_t)(b)*S + (s)) * H + (h)) * D + (d)])
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      for (int i = 0; i < S; ++i) {
        double m = -INFINITY, sum = 0;
        for (int j = 0; j <= i; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d)
            dot += (double)AT(0, b, i, h, d) * AT(1, b, j, h, d);
          p[j] = dot / sqrt((double)D);
          if (p[j] > m) m = p[j];
        }
        for (int j = 0; j <= i; ++j)
          sum += (p[j] = exp(p[j] - m));
        for (int d = 0; d < D; ++d) {
          double o = 0;
          for (int j = 0; j <= i; ++j)
            o += p[j] / sum * AT(2, b, j, h, d);
          const double err = fabs(o - AT(3, b, i, h, d));
          if (!(err <= max_err)) max_err = err; /* NaN counts as an error */
        }
      }
    }
  }
  free(p);
  const int ok = max_err < 2e-2;
  printf(
      "c_api: attention forward [%d, %d, %d, %d] bf16 causal through libkjit: max |out - ref| = "
      "%.2e (%s)\n",
      B, S, H, D, max_err, ok ? "ok" : "TOO LARGE");
  for (int i = 0; i < 5; ++i)
    kjit_buffer_destroy(dev[i]);
  for (int i = 0; i < 4; ++i)
    free(host[i]);
  return ok ? 0 : 1;
}
