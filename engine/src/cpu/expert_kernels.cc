#include "expert_kernels.h"

// GCC 12 reports -Wmaybe-uninitialized inside avx512fintrin.h when
// _mm512_max_ps and friends are inlined (their pass-through operand is
// _mm512_undefined_ps(), on purpose): a false positive of the header, not of
// this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace moe::engine::cpu {
namespace {

constexpr int kMr = 6;          // rows per micro-tile
constexpr int kPanel = 64;      // packed columns per panel (4 zmm)
constexpr int kHalfPanel = 32;  // gate (or up) columns per gate/up panel

#define MOE_AVX512 __attribute__((target("avx512f")))

// exp(x) for |x| <= 87 (clamped), Cephes' reduction and polynomial as in the
// scalar SwiGLU of cpu_backend.cc.
MOE_AVX512 inline __m512 Exp(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

MOE_AVX512 inline __m512 SwiGlu(__m512 gate, __m512 up) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 sig =
      _mm512_div_ps(one, _mm512_add_ps(one, Exp(_mm512_sub_ps(_mm512_setzero_ps(), gate))));
  return _mm512_mul_ps(_mm512_mul_ps(gate, sig), up);
}

inline __mmask16 Mask(int valid) {
  return valid >= 16 ? static_cast<__mmask16>(0xffff)
                     : static_cast<__mmask16>((1u << std::max(0, valid)) - 1);
}

// Rows [r0, r0 + mr) of `a` (leading dimension lda, k columns) into
// pa[p * mr + i]: one sequential stream for the micro-kernel's broadcasts.
void PackRows(const float* a, int lda, int mr, int k, float* pa) {
  for (int i = 0; i < mr; ++i) {
    const float* row = a + static_cast<size_t>(i) * lda;
    for (int p = 0; p < k; ++p)
      pa[static_cast<size_t>(p) * mr + i] = row[p];
  }
}

enum class Epilogue { kStore, kSwiGlu };

// acc[MR x 64] = pa[k x MR]^T pb[k x 64]; then either stores the tile
// (`valid` columns of out, leading dimension ldo) or writes the SwiGLU of its
// gate half and up half (`valid` of its 32 columns).
// While it runs, it prefetches `pf_lines` cache lines from `pf` into L2, one
// per k step: the next panel, so that its first tile does not wait on memory.
template <int MR>
MOE_AVX512 void MicroKernel(int k, const float* __restrict pa, const float* __restrict pb,
                            const float* pf, int pf_lines, Epilogue epilogue, int valid,
                            float* __restrict out, int ldo) {
  __m512 c[MR][4];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q)
      c[i][q] = _mm512_setzero_ps();
  for (int p = 0; p < k; ++p) {
    const __m512 b0 = _mm512_loadu_ps(pb);
    const __m512 b1 = _mm512_loadu_ps(pb + 16);
    const __m512 b2 = _mm512_loadu_ps(pb + 32);
    const __m512 b3 = _mm512_loadu_ps(pb + 48);
    if (p < pf_lines) _mm_prefetch(reinterpret_cast<const char*>(pf + 16 * p), _MM_HINT_T1);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(pa[i]);
      c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
      c[i][2] = _mm512_fmadd_ps(a, b2, c[i][2]);
      c[i][3] = _mm512_fmadd_ps(a, b3, c[i][3]);
    }
    pa += MR;
    pb += kPanel;
  }
  if (epilogue == Epilogue::kStore) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      float* row = out + static_cast<size_t>(i) * ldo;
      if (valid >= kPanel) {
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q)
          _mm512_storeu_ps(row + 16 * q, c[i][q]);
      } else {
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q)
          _mm512_mask_storeu_ps(row + 16 * q, Mask(valid - 16 * q), c[i][q]);
      }
    }
    return;
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float* row = out + static_cast<size_t>(i) * ldo;
    const __m512 y0 = SwiGlu(c[i][0], c[i][2]);
    const __m512 y1 = SwiGlu(c[i][1], c[i][3]);
    if (valid >= kHalfPanel) {
      _mm512_storeu_ps(row, y0);
      _mm512_storeu_ps(row + 16, y1);
    } else {
      _mm512_mask_storeu_ps(row, Mask(valid), y0);
      _mm512_mask_storeu_ps(row + 16, Mask(valid - 16), y1);
    }
  }
}

void RunTile(int mr, int k, const float* pa, const float* pb, const float* pf, int pf_lines,
             Epilogue epilogue, int valid, float* out, int ldo) {
  switch (mr) {
    case 6:
      return MicroKernel<6>(k, pa, pb, pf, pf_lines, epilogue, valid, out, ldo);
    case 5:
      return MicroKernel<5>(k, pa, pb, pf, pf_lines, epilogue, valid, out, ldo);
    case 4:
      return MicroKernel<4>(k, pa, pb, pf, pf_lines, epilogue, valid, out, ldo);
    case 3:
      return MicroKernel<3>(k, pa, pb, pf, pf_lines, epilogue, valid, out, ldo);
    case 2:
      return MicroKernel<2>(k, pa, pb, pf, pf_lines, epilogue, valid, out, ldo);
    default:
      return MicroKernel<1>(k, pa, pb, pf, pf_lines, epilogue, valid, out, ldo);
  }
}

// out = a[rows, k] B for packed B of `num_panels` panels; every panel's
// tiles over all row blocks run before the next panel, so a panel (k * 64
// floats) is read from memory once and from cache for the other row blocks.
// The tiles of a panel prefetch the next panel, and those of the last panel
// `next_floats` floats from `next` (what the caller runs next).
void PanelGemm(const float* a, int rows, int k, const float* packed, int num_panels,
               Epilogue epilogue, int out_cols, int panel_out_cols, const float* next,
               size_t next_floats, float* rows_ws, float* out, int ldo) {
  const int num_blocks = (rows + kMr - 1) / kMr;
  for (int b = 0; b < num_blocks; ++b) {
    const int mr = std::min(kMr, rows - b * kMr);
    PackRows(a + static_cast<size_t>(b) * kMr * k, k, mr, k,
             rows_ws + static_cast<size_t>(b) * kMr * k);
  }
  for (int j = 0; j < num_panels; ++j) {
    const float* pb = packed + static_cast<size_t>(j) * k * kPanel;
    const int col0 = j * panel_out_cols;
    const int valid = std::min(panel_out_cols, out_cols - col0);
    const float* pf = j + 1 < num_panels ? pb + static_cast<size_t>(k) * kPanel : next;
    const size_t pf_total =
        j + 1 < num_panels ? static_cast<size_t>(k) * kPanel : (next ? next_floats : 0);
    const int lines = static_cast<int>((pf_total + 15) / 16);
    const int per_block = (lines + num_blocks - 1) / num_blocks;
    for (int b = 0; b < num_blocks; ++b) {
      const int mr = std::min(kMr, rows - b * kMr);
      const int first = b * per_block;
      const int count = std::max(0, std::min(per_block, lines - first));
      RunTile(mr, k, rows_ws + static_cast<size_t>(b) * kMr * k, pb, pf + 16 * first, count,
              epilogue, valid, out + static_cast<size_t>(b) * kMr * ldo + col0, ldo);
    }
  }
}

}  // namespace

bool PackedKernelsAvailable() {
  static const bool available = __builtin_cpu_supports("avx512f");
  return available;
}

size_t PackedGateUpFloats(int hidden, int ffn) {
  return static_cast<size_t>((ffn + kHalfPanel - 1) / kHalfPanel) * hidden * kPanel;
}

size_t PackedDownFloats(int ffn, int hidden) {
  return static_cast<size_t>((hidden + kPanel - 1) / kPanel) * ffn * kPanel;
}

size_t FirstPanelFloats(int k) {
  return static_cast<size_t>(k) * kPanel;
}

size_t PackedRowsFloats(int rows, int k) {
  return static_cast<size_t>((rows + kMr - 1) / kMr) * kMr * k;
}

void PackGateUp(const float* gate_up, int hidden, int ffn, float* packed) {
  const int num_panels = (ffn + kHalfPanel - 1) / kHalfPanel;
  for (int j = 0; j < num_panels; ++j) {
    const int col0 = j * kHalfPanel;
    const int n = std::min(kHalfPanel, ffn - col0);
    for (int p = 0; p < hidden; ++p) {
      const float* src = gate_up + static_cast<size_t>(p) * 2 * ffn;
      float* dst = packed + (static_cast<size_t>(j) * hidden + p) * kPanel;
      std::fill(dst, dst + kPanel, 0.0f);
      std::memcpy(dst, src + col0, n * sizeof(float));
      std::memcpy(dst + kHalfPanel, src + ffn + col0, n * sizeof(float));
    }
  }
}

void PackDown(const float* down, int ffn, int hidden, float* packed) {
  const int num_panels = (hidden + kPanel - 1) / kPanel;
  for (int j = 0; j < num_panels; ++j) {
    const int col0 = j * kPanel;
    const int n = std::min(kPanel, hidden - col0);
    for (int p = 0; p < ffn; ++p) {
      float* dst = packed + (static_cast<size_t>(j) * ffn + p) * kPanel;
      std::fill(dst, dst + kPanel, 0.0f);
      std::memcpy(dst, down + static_cast<size_t>(p) * hidden + col0, n * sizeof(float));
    }
  }
}

void GateUpSwiGlu(const float* x, int rows, int hidden, int ffn, const float* packed_gate_up,
                  const float* next, size_t next_floats, float* rows_ws, float* act) {
  PanelGemm(x, rows, hidden, packed_gate_up, (ffn + kHalfPanel - 1) / kHalfPanel, Epilogue::kSwiGlu,
            ffn, kHalfPanel, next, next_floats, rows_ws, act, ffn);
}

void Down(const float* act, int rows, int ffn, int hidden, const float* packed_down,
          const float* next, size_t next_floats, float* rows_ws, float* y) {
  PanelGemm(act, rows, ffn, packed_down, (hidden + kPanel - 1) / kPanel, Epilogue::kStore, hidden,
            kPanel, next, next_floats, rows_ws, y, hidden);
}

}  // namespace moe::engine::cpu

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
